"""The dashboard: its data (``dashboard_data``) and its page (``static/``, served by api/)."""

from __future__ import annotations

from pathlib import Path

from .data import DashboardSources, bucket_seconds, dashboard_data

__all__ = ["STATIC_DIR", "DashboardSources", "bucket_seconds", "dashboard_data"]

STATIC_DIR = Path(__file__).resolve().parent / "static"
