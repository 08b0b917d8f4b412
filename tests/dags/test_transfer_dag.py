"""earmark_transfer is wired the way the transfer VM relies on, and runs end to end."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import time

import pytest
from earmark.config import Settings


@pytest.fixture
def transfer_dag(dagbag):
    assert dagbag.import_errors == {}
    return dagbag.dags["earmark_transfer"]


def test_schedule_and_runs(transfer_dag):
    assert transfer_dag.max_active_runs == 1
    assert transfer_dag.catchup is False
    assert "expression='*/10 * * * *'" in repr(transfer_dag.timetable)
    assert transfer_dag.doc_md and "incoming/" in transfer_dag.doc_md
    assert "transfer" in transfer_dag.tags


def test_copy_is_mapped_on_transfer_queue(transfer_dag):
    from airflow.sdk.definitions.mappedoperator import MappedOperator

    copy = transfer_dag.get_task("copy")
    assert isinstance(copy, MappedOperator)
    assert copy.queue == "transfer"
    assert copy.partial_kwargs.get("map_index_template") or copy.map_index_template
    assert "discover" in copy.upstream_task_ids
    for task in transfer_dag.tasks:
        assert task.queue == "transfer", task.task_id
        assert task.retries >= 1, task.task_id


def test_end_to_end_two_runs(store, tmp_path):
    """discover → copy for every id, twice: the second run changes nothing."""
    from earmark.ingest import transfer

    source, data = tmp_path / "dropbox", tmp_path / "data"
    source.mkdir()
    for name in ("one.tar", "two.tar.gz"):
        (source / name).write_bytes(name.encode() * 100)
        old = time.time() - 600
        os.utime(source / name, (old, old))
    settings = dataclasses.replace(
        Settings.from_env(),
        data_root=data,
        transfer_source=source.as_uri(),
        transfer_settle_seconds=120,
    )
    for _ in range(2):
        for transfer_id in transfer.discover(settings, store):
            transfer.copy_one(settings, store, transfer_id)
    incoming = sorted(p.name for p in (data / "incoming").iterdir())
    assert incoming == ["one.tar", "one.tar.sha256", "two.tar.gz", "two.tar.gz.sha256"]
    digest = hashlib.sha256(b"one.tar" * 100).hexdigest()
    assert (data / "incoming" / "one.tar.sha256").read_text() == f"{digest}  one.tar\n"
    assert transfer.ledger_counts(store) == {"copied": 2}
