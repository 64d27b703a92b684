"""Mitigation tools: judged and verified curation, cluster-mirrored synthesis, poisoning and its screens."""

from .judges import auc
from .mirror import ClusterMirror
from .pipeline import Pipeline, active, check_pipeline

__all__ = ["ClusterMirror", "Pipeline", "active", "auc", "check_pipeline"]
