"""The SQL people read, and the values the results DB hands back.

Queries live as package data in ``earmark/store/queries/<name>.sql``, split into ``-- name: X``
sections; both backends return timestamps that :func:`as_utc` makes comparable.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cache
from importlib import resources


@cache
def load_sql(name: str) -> str:
    """The text of ``earmark/store/queries/<name>.sql``."""
    return resources.files("earmark.store").joinpath("queries", f"{name}.sql").read_text("utf-8")


def named_queries(name: str) -> dict[str, str]:
    """Split a .sql file into its ``-- name: X`` sections."""
    queries: dict[str, str] = {}
    current: str | None = None
    for line in load_sql(name).splitlines():
        if line.startswith("-- name:"):
            current = line.removeprefix("-- name:").strip()
            queries[current] = ""
        elif current is not None:
            queries[current] += line + "\n"
    return {k: v.strip().rstrip(";") for k, v in queries.items()}


def as_utc(value: datetime | str) -> datetime:
    """A timestamp from the results DB or an ISO string, timezone-aware (SQLite's
    ``CURRENT_TIMESTAMP`` is UTC without a zone)."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=UTC)
