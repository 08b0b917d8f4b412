"""# earmark_transfer

Copies new archives from the transfer source (`EARMARK_TRANSFER_SOURCE`, an ObjectStoragePath URL:
`file:///srv/dropbox`, or `sftp://conn_id@host/path` where configured) into `incoming/`, keeping
the `incoming/` contract of `earmark_daily`. Runs every 10 minutes, one run at a time, on the
`transfer` queue. With the source unset it does nothing and says so in the `discover` log.

0. **migrate_results_db** applies pending results-DB migrations (the ledger lives there).
1. **discover** lists the source. An archive is complete when a companion `NAME.sha256` sits
   beside it, else once its size and mtime have not changed for
   `EARMARK_TRANSFER_SETTLE_SECONDS` (a file still uploading is never copied). Each complete
   archive gets one row in the `transfers` ledger; the task returns the ids of `pending` rows.
2. **copy** (mapped per ledger row, labelled with the archive name): streams the source to
   `incoming/.NAME.partial` hashing on the fly, checks the companion digest, fsyncs, renames to
   `incoming/NAME`, then writes `incoming/NAME.sha256` **last** (write-then-rename) and marks the
   row `copied`.

Every source archive ends `copied` or `failed` (reason in `error`, e.g. `checksum_mismatch`; the
partial file removed, nothing in `incoming/`). Reruns and redelivered tasks copy nothing twice,
even after `earmark_daily` has moved an archive on to `processed/`. Infrastructure errors (source
unreachable, disk full) fail the task so Airflow retries. A `failed` row is retried when the
source file changes; see the ledger with `SELECT status, count(*) FROM transfers GROUP BY status`.

This file is wiring and docs only; the logic lives in `include/earmark/ingest/transfer.py`.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import CronTriggerTimetable, dag, task
from earmark.config import Settings
from earmark.orchestration.dag_defaults import task_defaults

settings = Settings.from_env()


@dag(
    dag_id="earmark_transfer",
    schedule=CronTriggerTimetable("*/10 * * * *", timezone=settings.timezone),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["earmark", "transfer"],
    default_args=task_defaults(settings, max_retry_delay=timedelta(minutes=10), queue="transfer"),
)
def earmark_transfer() -> None:
    @task(queue="transfer")
    def discover() -> list[int]:
        """Record complete source archives in the ledger; ids of those still to copy."""
        from earmark.ingest.transfer import discover as discover_source
        from earmark.orchestration.airflow_seam import task_env

        env = task_env()
        return discover_source(env.settings, env.store)

    @task(
        queue="transfer",
        map_index_template="{{ transfer_label }}",
        execution_timeout=timedelta(hours=2),
    )
    def copy(transfer_id: int) -> dict[str, Any]:
        """Copy one archive into incoming/, its ready marker last."""
        from dataclasses import asdict

        from earmark.ingest.transfer import copy_one, transfer_name
        from earmark.orchestration.airflow_seam import task_env

        env = task_env()
        env.set_template_var("transfer_label", transfer_name(env.store, transfer_id))
        return asdict(copy_one(env.settings, env.store, transfer_id))

    @task(queue="transfer")
    def migrate_results_db() -> list[str]:
        """Apply pending results-DB migrations (the transfers ledger lives there too)."""
        from earmark.orchestration.airflow_seam import migrate_results_db as migrate

        return migrate()

    discovered = discover()
    migrate_results_db() >> discovered
    copy.expand(transfer_id=discovered)


earmark_transfer()
