"""What Earmark's DAGs share, declared once: how their tasks retry.

Read when a DAG file is parsed (from :class:`~earmark.config.Settings`), so this module imports
nothing heavier than the settings.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from earmark.config import Settings

#: How much longer each retry of a task waits than the one before it.
RETRY_BACKOFF = 2.0


def task_defaults(
    settings: Settings,
    *,
    retries: int = 3,
    max_retry_delay: timedelta | None = None,
    on_failure_callback: Callable[..., Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A DAG's ``default_args``: ``retries`` retries, the first ``EARMARK_RETRY_DELAY_SECONDS``
    after the failure; with ``max_retry_delay`` each later one waits longer
    (:data:`RETRY_BACKOFF` times) up to that; ``extra`` for what only that DAG's tasks share
    (a queue)."""
    args: dict[str, Any] = {
        **extra,
        "retries": retries,
        "retry_delay": timedelta(seconds=settings.retry_delay_seconds),
    }
    if max_retry_delay is not None:
        args["retry_exponential_backoff"] = RETRY_BACKOFF
        args["max_retry_delay"] = max_retry_delay
    if on_failure_callback is not None:
        args["on_failure_callback"] = on_failure_callback
    return args
