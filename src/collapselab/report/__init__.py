"""Self-contained HTML reports: one file, figures inline, no network."""

from .build import write_report

__all__ = ["write_report"]
