"""The distributed topology on one machine: real Airflow components, Celery workers, Redis, SMTP.

``python -m earmark_dev.harness up [--sample-day]`` starts, under one folder (default
``.harness/``), what follows; ``deliver`` drops today's sample day into its ``incoming/``:

- two fresh Postgres databases, ``earmark_h_<id>_meta`` (Airflow metadata) and
  ``earmark_h_<id>_results`` (the results DB);
- a private ``redis-server`` (its own port, AOF with ``appendfsync everysec``) as Celery broker;
- a local SMTP sink (aiosmtpd) writing every message to ``mail/NNNN.eml``;
- ``airflow api-server``, ``scheduler``, ``dag-processor``, ``triggerer``;
- Celery workers: one for ``default,unpack,transfer`` and one per GPU of a pretend two-GPU
  host for ``gpu`` (concurrency 1, ``CUDA_VISIBLE_DEVICES`` and ``EARMARK_HOSTNAME`` per GPU,
  as ``deploy/systemd/earmark-worker-gpu@.service`` runs them), so ``task_instance.hostname``
  tells them apart;

all configured from ``deploy/airflow.env.template``, the file production renders too. The ``gpu``
pool is sized to the GPU workers' slots. Users: Airflow's simple auth manager with ``admin``, or
the caller's ``AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS`` (``ana:user,lee:op,vi:viewer``) with
``admin`` added; their passwords are generated into the file ``up`` prints. ``down`` (or the
end of the Python process that called ``up``) stops every process it started by process group,
and drops the databases.

Tests use :class:`Harness` directly (``tests/integration/test_distributed.py``).
"""

from __future__ import annotations

import argparse
import os
import signal
import time
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from earmark.config import PROJECT_ROOT
from earmark.ops.deploy_config import parse_env
from earmark_dev.localenv import AUTH_USERS
from earmark_dev.postgres import admin_engine
from earmark_dev.runs import DAG_ID
from earmark_dev.topology import DEFAULT_HOSTNAME, GPU_HOSTNAMES, GPU_ROLES, Harness

__all__ = ["DEFAULT_HOSTNAME", "GPU_HOSTNAMES", "GPU_ROLES", "Harness", "admin_engine", "main"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start everything; Ctrl-C (or SIGTERM) stops it all")
    up.add_argument("--home", type=Path, default=PROJECT_ROOT / ".harness")
    up.add_argument(
        "--sample-day",
        action="store_true",
        help="drop a generated day into incoming/ before unpausing: the scheduler's own run for"
        " today screens it",
    )
    deliver = sub.add_parser(
        "deliver", help="drop today's sample day into the running harness's incoming/"
    )
    deliver.add_argument("--home", type=Path, default=PROJECT_ROOT / ".harness")
    down = sub.add_parser("down", help="stop a harness started with `up` in another shell")
    down.add_argument("--home", type=Path, default=PROJECT_ROOT / ".harness")
    args = parser.parse_args(argv)

    home = args.home.resolve()
    pidfile = home / "harness.pid"
    if args.command == "deliver":
        env = parse_env((home / "airflow.env").read_text(encoding="utf-8"))
        today = datetime.now(ZoneInfo(env["EARMARK_TIMEZONE"])).date()
        for archive in _deliver_sample_day(Path(env["EARMARK_DATA_ROOT"]) / "incoming", today):
            print(f"delivered {archive.name} and its marker")
        return 0
    if args.command == "down":
        if not pidfile.exists():
            print(f"no harness running under {home}")
            return 1
        os.kill(int(pidfile.read_text()), signal.SIGTERM)
        print("stopping…")
        return 0
    return _serve(home, pidfile, args.sample_day)


def _deliver_sample_day(incoming: Path, day: date) -> list[Path]:
    """Two archives of three recordings each, and their markers, written last."""
    from earmark_dev.sampledata import generate_day

    return generate_day(incoming, day, archives=2, files_per_archive=3, minutes=1.0, seed=0)


def _serve(home: Path, pidfile: Path, sample_day: bool) -> int:
    """``up``: start everything, print where things are, stop it all on Ctrl-C or SIGTERM."""
    home.mkdir(parents=True, exist_ok=True)
    harness = Harness(home)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    try:
        started = time.monotonic()
        harness.up(unpause=False)
        pidfile.write_text(str(os.getpid()))
        today = datetime.now(ZoneInfo(harness.env["EARMARK_TIMEZONE"])).date()
        if sample_day:
            _deliver_sample_day(harness.data_root / "incoming", today)
        harness.unpause()  # after the sample day is in place: the scheduled run starts now
        print(
            f"up in {time.monotonic() - started:.0f}s\n"
            f"  UI:        http://127.0.0.1:{harness.ports['api']}\n"
            f"  users:     {harness.env.get(AUTH_USERS, 'admin:admin')}\n"
            f"  passwords: {harness.airflow_home}/simple_auth_manager_passwords.json.generated\n"
            f"  shell:     set -a; . {home}/airflow.env; set +a\n"
            f"  mail:      {harness.maildir}\n  logs:      {harness.logs}\n"
            + (
                f"  sample:    {today}, screened by the scheduled run for today\n"
                if sample_day
                else ""
            )
            + f"  rerun:     airflow dags trigger {DAG_ID} --conf '{{\"reprocess\": true}}'\n"
            "Ctrl-C or `python -m earmark_dev.harness down` stops everything.",
            flush=True,
        )
        while not stop:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        harness.down()
        pidfile.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
