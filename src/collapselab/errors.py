"""Errors a user can cause. The CLI prints them as one line and exits with status 2."""


class CollapselabError(Exception):
    """Base class of every error caused by input (a spec, a file, an option), never by a bug."""


class SpecError(CollapselabError, ValueError):
    """A spec is malformed: the message names the key, the bad value and what is allowed."""


class CollapseWarning(UserWarning):
    """Something a run's user must see: a curation judge measured no better than chance, ..."""
