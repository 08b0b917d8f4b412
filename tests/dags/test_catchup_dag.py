"""earmark_catchup hands the day it found to earmark_daily as its first task's output."""

from __future__ import annotations

import jinja2
import pytest


@pytest.fixture
def catchup(dagbag):
    assert dagbag.import_errors == {}
    return dagbag.dags["earmark_catchup"]


def test_catch_up_triggers_the_day_the_first_task_returned(catchup):
    """The day is late_archives_waiting's XCom (a date string), rendered into the trigger's
    conf; taking it also makes catch_up downstream of the short-circuit."""

    class TaskInstance:
        def xcom_pull(self, *, task_ids, key, **_):
            assert (task_ids, key) == ("late_archives_waiting", "return_value")
            return "2026-11-30"

    catch_up = catchup.get_task("catch_up")
    assert catch_up.upstream_task_ids == {"late_archives_waiting"}
    assert catch_up.trigger_dag_id == "earmark_daily"
    assert catch_up.logical_date is None
    context = {"ti": TaskInstance(), "run_id": "scheduled__x"}
    conf = catch_up.render_template(catch_up.conf, context, jinja2.Environment())
    assert conf == {"date": "2026-11-30"}
