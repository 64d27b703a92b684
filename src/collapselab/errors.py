"""Errors and warnings collapselab raises on purpose.

Exit codes of the CLI: 2 for bad input (:class:`InputError`, :class:`SpecError`: one line naming the key, the
file or the option, and what is allowed), 1 for a run that failed (:class:`RunFailed`, or any other
:class:`CollapselabError`), 130 when interrupted.
"""


class CollapselabError(Exception):
    """Base class of every error collapselab raises on purpose (input it refuses, a run that failed)."""


class InputError(CollapselabError, ValueError):
    """A file, an option or an argument is unusable: the message names it and says what is allowed."""


class SpecError(InputError):
    """A spec is malformed: the message names the key, the bad value and what is allowed."""


class RunFailed(CollapselabError):
    """A run that passed validation failed while it ran (a model that diverged, a judge endpoint that is down)."""


class RunInterrupted(RunFailed):
    """A run stopped by something outside it (its Dask cluster went away): its checkpoints are kept for resume."""


class CollapseWarning(UserWarning):
    """Something a run's user must see: a curation judge measured no better than chance, ..."""


class CheckpointWarning(UserWarning):
    """A checkpoint was unusable (corrupt, truncated, from another spec) and was skipped."""
