"""Generative model families, registered by name. Register your own with :func:`register_family`."""

from . import categorical, counts, gaussian, glm, gmm, kde, linear, lm, ngram, symmetric, vae  # noqa: F401  (register the built-ins)
from .base import FAMILIES, Family, FamilyTags, Metrics, Params, Reference, register_family, resolve_family

__all__ = ["FAMILIES", "Family", "FamilyTags", "Metrics", "Params", "Reference", "register_family", "resolve_family"]
