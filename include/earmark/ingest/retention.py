"""Retention: ``processed/`` keeps delivered archives for ``EARMARK_PROCESSED_RETENTION_DAYS``.

The daily retention (`earmark.lifecycle.retention`, the ``delivered_archives`` rule) removes each
archive's homes there with an audit row first; `prune_processed` then takes the day folders past
their time whole, with whatever no archive accounts for."""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from earmark.config import Settings


def prune_processed(settings: Settings, today: date | None = None) -> list[Path]:
    """Delete dated folders in ``processed/`` older than the retention; returns what went."""
    today = today or datetime.now(UTC).date()
    cutoff = today - timedelta(days=settings.processed_retention_days)
    removed = []
    for folder in _dated_folders(
        settings.processed.iterdir() if settings.processed.is_dir() else []
    ):
        if date.fromisoformat(folder.name) < cutoff:
            shutil.rmtree(folder)
            removed.append(folder)
    return removed


def _dated_folders(entries: Iterable[Path]) -> list[Path]:
    dated = []
    for entry in entries:
        try:
            date.fromisoformat(entry.name)
        except ValueError:
            continue
        if entry.is_dir():
            dated.append(entry)
    return dated
