"""Looking at results: optuna-dashboard for a poolnas storage."""

from __future__ import annotations

from poolnas.dashboards._server import serve

__all__ = ["serve"]
