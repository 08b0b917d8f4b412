"""Integration-test markers (pyproject's list is shared; these are registered here)."""

from __future__ import annotations


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "distributed: starts the whole distributed topology (api-server, scheduler, dag-processor,"
        " triggerer, two Celery workers, Redis, SMTP sink) via earmark_dev.harness; minutes",
    )
