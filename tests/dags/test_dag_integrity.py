"""The DAG files parse, and earmark_daily is wired the way operators rely on."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path

import pytest

DAGS_DIR = Path(__file__).resolve().parents[2] / "dags"
HEAVY_MODULES = {"torch", "transformers", "peft", "soundfile", "soxr", "numpy"}


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}
    assert "earmark_daily" in dagbag.dags


@pytest.fixture
def daily(dagbag):
    return dagbag.dags["earmark_daily"]


def test_every_dag_documented_and_tagged(dagbag):
    for dag in dagbag.dags.values():
        assert dag.doc_md and len(dag.doc_md) > 100, dag.dag_id
        assert dag.tags, dag.dag_id


def test_every_task_retries(daily):
    for task in daily.tasks:
        assert task.retries >= 1, task.task_id


def test_every_dag_retries_as_the_shared_defaults_say(dagbag):
    """Every task retries, the first retry after EARMARK_RETRY_DELAY_SECONDS; earmark_daily and
    earmark_transfer back off up to their cap; earmark_daily's tasks record why they failed."""
    from earmark.config import Settings
    from earmark.orchestration.alerts import record_task_failure

    delay = Settings.from_env().retry_delay_seconds
    caps = {"earmark_daily": 15 * 60, "earmark_transfer": 10 * 60, "earmark_catchup": None}
    for dag_id, cap in caps.items():
        for task in dagbag.dags[dag_id].tasks:
            assert task.retries >= 2, task.task_id
            assert task.retry_delay.total_seconds() == delay, task.task_id
            if cap is None:
                assert not task.retry_exponential_backoff, task.task_id
            else:
                assert task.retry_exponential_backoff == 2.0, task.task_id
                assert task.max_retry_delay.total_seconds() == cap, task.task_id
            callbacks = task.on_failure_callback
            callbacks = callbacks if isinstance(callbacks, list) else [callbacks]
            recorded = record_task_failure in callbacks
            assert recorded == (dag_id == "earmark_daily"), task.task_id


def test_gpu_tasks_on_gpu_queue_and_pool(daily):
    """The static execution_timeout is the backstop above a target-sized unit's own budget
    (each task enforces its unit's budget inside, naming the unit), derived from the target."""
    from earmark.config import Settings
    from earmark.gpu.work_units import gpu_task_timeout, unit_budget_s

    target_s = Settings.from_env().unit_target_minutes * 60
    for task_id in ("gpu_unit.transcribe", "gpu_unit.classify"):
        task = daily.get_task(task_id)
        assert task.queue == "gpu"
        assert task.pool == "gpu"
        assert task.execution_timeout == gpu_task_timeout(target_s)
        assert task.execution_timeout.total_seconds() > unit_budget_s(target_s)
        assert task.execution_timeout.total_seconds() <= 6 * 3600


def test_other_tasks_off_the_gpu(daily):
    for task in daily.tasks:
        if not task.task_id.startswith("gpu_unit."):
            assert task.queue != "gpu" and task.pool != "gpu", task.task_id


def test_unpack_is_mapped_on_unpack_queue(daily):
    from airflow.sdk.definitions.mappedoperator import MappedOperator

    unpack = daily.get_task("unpack")
    assert isinstance(unpack, MappedOperator)
    assert unpack.queue == "unpack"
    assert unpack.partial_kwargs.get("map_index_template") or unpack.map_index_template


def test_gpu_unit_is_a_mapped_group(daily):
    from airflow.sdk.definitions.taskgroup import MappedTaskGroup

    assert isinstance(daily.task_group_dict["gpu_unit"], MappedTaskGroup)
    assert (
        daily.get_task("gpu_unit.transcribe").task_id
        in daily.get_task("gpu_unit.classify").upstream_task_ids
    )


def test_deadline_configured(daily):
    assert daily.deadline, "earmark_daily must carry a Deadline Alert"
    alert = daily.deadline[0]
    assert alert.interval.total_seconds() == 6 * 3600  # 06:00 start to 12:00 deadline
    assert daily.on_failure_callback, "a failed run must notify too"
    assert daily.on_success_callback, "a run that ends after its deadline says it is done"


def test_pipeline_order(daily):
    order = [
        "check_for_work",
        "register_archives",
        "unpack",
        "plan_work_units",
        "gpu_unit.transcribe",
        "gpu_unit.classify",
        "noon_check",
        "report",
    ]
    for upstream, downstream in itertools.pairwise(order):
        assert upstream in daily.get_task(downstream).upstream_task_ids, (upstream, downstream)
    assert "wait_for_archives" in daily.get_task("register_archives").upstream_task_ids
    sensor = daily.get_task("wait_for_archives")
    assert sensor.filepath == "incoming/*.sha256"


def test_data_quality_uses_common_sql_checks(daily):
    from airflow.providers.common.sql.operators.sql import (
        SQLCheckOperator,
        SQLColumnCheckOperator,
    )

    checks = [t for t in daily.tasks if t.task_id.startswith("data_quality.")]
    assert any(isinstance(t, SQLColumnCheckOperator) for t in checks)
    assert sum(isinstance(t, SQLCheckOperator) for t in checks) >= 3
    for check in checks:
        assert check.conn_id == "earmark_db"


def test_params_typed_and_described(daily):
    for name in ("date", "reprocess"):
        param = daily.params.get_param(name)
        assert param.schema.get("type"), name
        assert param.description, name


@pytest.mark.parametrize("path", sorted(DAGS_DIR.glob("*.py")), ids=lambda p: p.name)
def test_dag_files_import_nothing_heavy(path, tmp_path):
    """Parsing a DAG file, imports included, loads none of the inference stack."""
    probe = (
        "import runpy, sys\n"
        f"runpy.run_path({str(path)!r})\n"
        f"print(sorted(m for m in {sorted(HEAVY_MODULES)!r} if m in sys.modules))\n"
    )
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path), "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    result = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=120,
    )
    assert result.stdout.strip().splitlines()[-1] == "[]"
