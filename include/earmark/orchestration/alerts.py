"""Earmark's mails on Airflow: the callbacks that send them, and what they read from Airflow.

The mails themselves (a failed run, nothing delivered by the deadline, a missed deadline, "done
late") are composed in :mod:`earmark.day.mail` from the day's status and the run's progress;
this module gathers those from the callback's context, Airflow's task states and the results DB,
and sends them through the Airflow SMTP connection. Counts, ids, task names and reason lines
only: never transcript text.

Why a task failed is written by the failing task itself (:func:`record_task_failure`, every
task's ``on_failure_callback``) into ``task_failures``, before Airflow marks it failed, so the
run's failure mail (:func:`run_failed`, run by the dag-processor) can name it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from earmark.config import Settings
from earmark.day.mail import (
    DAG_ID,
    NO_REASON,
    FailedTask,
    Mail,
    RunProgress,
    bare_mail,
    compose_deadline_mail,
    compose_failure_mail,
    compose_late_mail,
    count_task_states,
    run_progress,
)
from earmark.day.schedule import deadline_interval, deadline_reference, resolve_run_date
from earmark.day.status import day_status
from earmark.names import printable
from earmark.store.db import Store
from earmark.store.sql import named_queries

log = logging.getLogger(__name__)

REASON_MAX = 300


def reason_line(error: BaseException | str | None) -> str:
    """An exception as one short line: its type and the first line of its message.

    Only the first line: a database error's later lines carry the statement and its parameters.
    """
    if error is None:
        return NO_REASON
    if isinstance(error, BaseException):
        first = next(iter(str(error).strip().splitlines()), "")
        text = f"{type(error).__name__}: {first}" if first else type(error).__name__
    else:
        text = next(iter(str(error).strip().splitlines()), "") or NO_REASON
    text = printable(text)
    return text if len(text) <= REASON_MAX else text[: REASON_MAX - 1] + "…"


# ---- recording a task's failure (runs in the failing task's process) --------------------------
def record_task_failure(context: Mapping[str, Any]) -> None:
    """A task's ``on_failure_callback``: why it failed, into ``task_failures``. Never raises."""
    try:
        ti = context.get("ti") or context.get("task_instance")
        if ti is None:  # not a task's callback: nothing to record (logged below)
            raise LookupError("no task instance in the callback's context")
        run_id = str(context.get("run_id") or getattr(ti, "run_id", ""))
        map_name = (
            getattr(ti, "rendered_map_index", None)
            or context.get("unit_label")
            or context.get("archive_label")
        )
        run_date = None
        try:
            run_date = ti.xcom_pull(task_ids="resolve_run_date")
        except Exception:  # the task that failed may be the one that produces it
            run_date = None
        with _results_db(Settings.from_env()) as store:
            save_failure(
                store,
                run_id=run_id,
                run_date=run_date if isinstance(run_date, str) else None,
                failed=FailedTask(
                    task_id=ti.task_id,
                    map_index=int(getattr(ti, "map_index", -1) or -1),
                    map_name=str(map_name) if map_name not in (None, "") else None,
                    reason=reason_line(context.get("exception")),
                ),
                try_number=int(getattr(ti, "try_number", 1) or 1),
            )
    except Exception as error:  # a callback must never hide the task's own failure
        log.warning("could not record the task failure (%s)", type(error).__name__)


def save_failure(
    store: Store, *, run_id: str, run_date: str | None, failed: FailedTask, try_number: int
) -> None:
    """One ``task_failures`` row; a second record of the same try is ignored."""
    with store.begin() as conn:
        conn.execute(
            _sql("save_failure"),
            {
                "run_id": run_id,
                "run_date": run_date,
                "task_id": failed.task_id,
                "map_index": failed.map_index,
                "map_name": failed.map_name,
                "try_number": try_number,
                "reason": failed.reason,
            },
        )


def recorded_failures(store: Store, run_id: str) -> tuple[list[FailedTask], str | None]:
    """The run's recorded failures (last try of each task, oldest first) and its run date."""
    rows = store.rows(named_queries("alerts")["run_failures"], run_id=run_id)
    failures = [FailedTask(r.task_id, int(r.map_index), r.map_name, r.reason) for r in rows]
    dates = [str(r.run_date)[:10] for r in rows if r.run_date is not None]
    return failures, (dates[0] if dates else None)


@contextmanager
def _results_db(settings: Settings) -> Iterator[Store]:
    """The results DB for one callback, its connections closed after (callbacks run in
    long-lived processes: the dag-processor, the triggerer)."""
    from earmark.orchestration.airflow_seam import results_store

    store = results_store(settings)
    try:
        yield store
    finally:
        store.dispose()


def _sql(name: str) -> Any:
    import sqlalchemy as sa

    return sa.text(named_queries("alerts")[name])


# ---- what Airflow says of a run ----------------------------------------------------------------
def run_task_states(run_id: str, dag_id: str = DAG_ID) -> dict[str, str | None] | None:
    """The states of every task instance of the run, asked of Airflow through the Task SDK
    (the triggerer and the dag-processor relay it); None where there is no one to ask."""
    try:
        from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

        states = RuntimeTaskInstance.get_task_states(dag_id=dag_id, run_ids=[run_id])
    except Exception:  # an in-process test run, or a process without a supervisor
        return None
    return dict((states or {}).get(run_id) or {})


def airflow_base_url() -> str:
    """Where people open Airflow: ``[api] base_url``; else the api-server address the hosts
    use (``[core] execution_api_server_url``); else this host's api-server port."""
    from urllib.parse import urlsplit

    from airflow.configuration import conf

    base = conf.get("api", "base_url", fallback=None)
    if base and base.startswith("http"):
        return base
    execution = urlsplit(conf.get("core", "execution_api_server_url", fallback=None) or "")
    if execution.scheme and execution.netloc:
        return f"{execution.scheme}://{execution.netloc}"
    return f"http://localhost:{conf.get('api', 'port', fallback='8080')}"


# ---- gathering and sending ---------------------------------------------------------------------
def _run_date_of(dag_run: Any, settings: Settings) -> str | None:
    if dag_run is None:
        return None
    conf = getattr(dag_run, "conf", None) or {}
    requested = conf.get("date") if isinstance(conf, Mapping) else None
    try:
        return resolve_run_date(
            requested if isinstance(requested, str) else None,
            getattr(dag_run, "logical_date", None),
            getattr(dag_run, "run_after", None),
            settings.timezone,
        )
    except (TypeError, ValueError):
        return None


def _failed_without_record(dag: Any, run_id: str, known: list[FailedTask]) -> list[FailedTask]:
    """Failed task instances the run has no recorded reason for (Airflow's task states)."""
    states = run_task_states(run_id, dag.dag_id) or {}  # {}: an in-process test run
    seen = {(f.task_id, f.map_index) for f in known}
    task_ids = set(dag.task_ids)
    found = []
    for key, state in sorted(states.items()):
        if state != "failed":
            continue
        task_id, map_index = key, -1
        if key not in task_ids and "_" in key:
            head, _, tail = key.rpartition("_")
            if head in task_ids and tail.isdigit():
                task_id, map_index = head, int(tail)
        if (task_id, map_index) not in seen:
            found.append(FailedTask(task_id, map_index))
    return found


def failure_mail(context: Mapping[str, Any], settings: Settings, base_url: str) -> Mail:
    """Everything the failure mail says, gathered from the run's context and the results DB."""
    run_id = str(context.get("run_id") or getattr(context.get("dag_run"), "run_id", ""))
    run_date = _run_date_of(context.get("dag_run"), settings)
    failures: list[FailedTask] = []
    status = None
    with _results_db(settings) as store:
        failures, recorded_date = recorded_failures(store, run_id)
        run_date = run_date or recorded_date
        if run_date:
            status = day_status(settings, store, run_date)
    if context.get("dag") is not None:
        failures += _failed_without_record(context["dag"], run_id, failures)
    return compose_failure_mail(
        run_date=run_date or "unknown day",
        run_id=run_id,
        status=status,
        failures=failures,
        settings=settings,
        base_url=base_url,
    )


def _hook(settings: Settings) -> Any:
    from airflow.providers.smtp.hooks.smtp import SmtpHook

    return SmtpHook(smtp_conn_id=settings.smtp_conn_id)


def send(settings: Settings, mail: Mail) -> None:
    """Send ``mail`` to ``EARMARK_ALERT_EMAIL`` through the Airflow SMTP connection."""
    with _hook(settings) as hook:
        hook.send_email_smtp(to=settings.alert_email, subject=mail.subject, html_content=mail.html)


async def asend(settings: Settings, mail: Mail) -> None:
    """:func:`send` for the triggerer's event loop."""
    async with _hook(settings) as hook:
        await hook.asend_email_smtp(
            to=settings.alert_email, subject=mail.subject, html_content=mail.html
        )


def run_failed(context: Mapping[str, Any]) -> None:
    """The DAG's ``on_failure_callback``: one mail naming the day, the failed tasks and why."""
    settings = Settings.from_env()
    try:
        mail = failure_mail(context, settings, airflow_base_url())
    except Exception as error:  # the mail goes out with what is known
        log.warning("failure mail without day status (%s)", type(error).__name__)
        mail = bare_mail("run failed", str(context.get("run_id", "")), error)
    send(settings, mail)


def deadline_mail(context: Mapping[str, Any], settings: Settings, base_url: str) -> Mail:
    """The deadline mail from the deadline callback's context (a serialised run)."""
    run = dict(context.get("dag_run") or {})
    run_id = str(run.get("dag_run_id") or run.get("run_id") or "")
    logical = run.get("logical_date")
    run_after = run.get("run_after")
    conf = run.get("conf") or {}
    run_date = resolve_run_date(
        conf.get("date") if isinstance(conf.get("date"), str) else None,
        datetime.fromisoformat(logical) if isinstance(logical, str) else logical,
        datetime.fromisoformat(run_after) if isinstance(run_after, str) else run_after,
        settings.timezone,
    )
    deadline = (context.get("deadline") or {}).get("deadline_time")
    status = progress = None
    states = run_task_states(run_id)
    try:
        with _results_db(settings) as store:
            status = day_status(settings, store, run_date)
            progress = run_progress(store, run_id, run_date, states)
    except Exception as error:  # the mail goes out with what is known
        log.warning("deadline mail without day status (%s)", type(error).__name__)
        progress = RunProgress(count_task_states(states)) if states is not None else None
    return compose_deadline_mail(
        run_date=run_date,
        run_id=run_id,
        deadline=deadline,
        status=status,
        settings=settings,
        base_url=base_url,
        progress=progress,
    )


async def deadline_missed(*, context: dict[str, Any]) -> None:
    """The deadline alert's callback (runs in the triggerer): the deadline mail."""
    settings = Settings.from_env()
    try:
        mail = await asyncio.to_thread(deadline_mail, context, settings, airflow_base_url())
    except Exception as error:  # the mail goes out with what is known
        log.warning("deadline mail without its day (%s)", type(error).__name__)
        run_id = str((context.get("dag_run") or {}).get("dag_run_id", ""))
        mail = bare_mail("deadline missed", run_id, error)
    await asend(settings, mail)


def run_deadline(dag_run: Any, settings: Settings) -> datetime | None:
    """The deadline a run was given (:class:`earmark.orchestration.deadlines.RunDayDeadline`,
    from its conf and dates when it was created); None for a run without one (a rerun of an
    earlier day)."""
    run_after = getattr(dag_run, "run_after", None) or getattr(dag_run, "queued_at", None)
    conf = getattr(dag_run, "conf", None)
    reference = deadline_reference(
        conf if isinstance(conf, Mapping) else None,
        getattr(dag_run, "logical_date", None),
        run_after,
        settings,
        run_after or datetime.now(UTC),
    )
    return None if reference is None else reference + deadline_interval(settings)


def late_mail(context: Mapping[str, Any], settings: Settings, base_url: str) -> Mail | None:
    """The "done late" mail for a run that has just succeeded after its deadline; None for a
    run that finished in time or had no deadline."""
    dag_run = context.get("dag_run")
    deadline = run_deadline(dag_run, settings)
    finished = getattr(dag_run, "end_date", None) or datetime.now(UTC)
    if deadline is None or finished <= deadline:
        return None
    run_id = str(context.get("run_id") or getattr(dag_run, "run_id", ""))
    run_date = _run_date_of(dag_run, settings) or "unknown day"
    status = None
    try:
        with _results_db(settings) as store:
            status = day_status(settings, store, run_date)
    except Exception as error:  # the mail goes out with what is known
        log.warning("done-late mail without day status (%s)", type(error).__name__)
    return compose_late_mail(
        run_date=run_date,
        run_id=run_id,
        deadline=deadline,
        finished=finished,
        status=status,
        settings=settings,
        base_url=base_url,
    )


def run_succeeded(context: Mapping[str, Any]) -> None:
    """The DAG's ``on_success_callback``: a short "done late" mail when the run ended after
    its deadline, so whoever got the deadline mail learns when the day was done. Nothing when
    it was in time, had no deadline, or deadline alerts are off (``airflow dags test``)."""
    settings = Settings.from_env()
    if not settings.deadline_alerts:
        return
    mail = late_mail(context, settings, airflow_base_url())
    if mail is not None:
        send(settings, mail)
