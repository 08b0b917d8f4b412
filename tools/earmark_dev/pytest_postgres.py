"""A pytest plugin: the test run's Postgres, chosen once, and a throwaway cluster stopped at the
end (also after a failure or Ctrl-C).

``EARMARK_TEST_PG`` chooses: ``auto`` (the default: ``EARMARK_TEST_PG_URL`` when set, else the
local server on 5432 when it answers, else a throwaway cluster), ``throwaway`` (always a cluster
of the run's own) or ``off`` (none: the tests marked ``postgres`` are left out). The controlling
process chooses; test workers inherit ``EARMARK_TEST_PG_URL`` from it. Loaded by
``tests/conftest.py``.
"""

from __future__ import annotations

import atexit
import os

import pytest
from earmark_dev.postgres import DEFAULT_URL, MODE_VARIABLE, ThrowawayPostgres, admin_url, answers

MODES = ("auto", "throwaway", "off")
_OWN: list[ThrowawayPostgres] = []  # the run's own cluster, when it has one
_WHERE = pytest.StashKey[str]()


def _and(expression: str, term: str) -> str:
    return f"({expression}) and {term}" if expression else term


def pytest_configure(config: pytest.Config) -> None:
    mode = os.environ.get(MODE_VARIABLE, "auto")
    if mode not in MODES:
        raise pytest.UsageError(f"{MODE_VARIABLE} must be one of {', '.join(MODES)}, not {mode!r}")
    if mode == "off":  # in every process, test workers too
        config.option.markexpr = _and(config.option.markexpr, "not postgres")
        return
    if hasattr(config, "workerinput"):
        return
    if mode == "auto" and ("EARMARK_TEST_PG_URL" in os.environ or answers(DEFAULT_URL)):
        return
    try:
        cluster = ThrowawayPostgres().start()
    except (RuntimeError, KeyError) as error:
        raise pytest.UsageError(
            f"No Postgres for the tests: nothing answers at {DEFAULT_URL} and no throwaway"
            f" cluster could start ({error}). Run `make system`, or set EARMARK_TEST_PG_URL."
        ) from None
    _OWN.append(cluster)
    atexit.register(cluster.stop)  # a second line of defence if unconfigure never runs
    os.environ["EARMARK_TEST_PG_URL"] = cluster.url
    config.stash[_WHERE] = cluster.url


def pytest_unconfigure(config: pytest.Config) -> None:
    while _OWN:  # pytest unconfigures after a failure or a Ctrl-C too
        _OWN.pop().stop()


def pytest_report_header(config: pytest.Config) -> str:
    if os.environ.get(MODE_VARIABLE) == "off":
        return "postgres: none (EARMARK_TEST_PG=off: the tests that need it are left out)"
    where = config.stash.get(_WHERE, None)
    if where is not None:
        return f"postgres: a throwaway cluster of this run at {where}"
    return f"postgres: {admin_url()}"
