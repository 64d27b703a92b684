"""Metrics computed across families: stage detection."""
