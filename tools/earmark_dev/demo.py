"""The demo on the embedded default: a sample day through ``earmark_daily``, then a summary.

SQLite metadata, LocalExecutor, SQLite results DB and tiny random-weight models, all under
``.demo/``. Running it again processes nothing twice: the regenerated archives have the same
bytes, so registration recognises them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path

from earmark.config import PROJECT_ROOT, Settings
from earmark_dev.localenv import LocalEnv


def run_day(
    env: LocalEnv, day: str, *, reprocess: bool = False, log_file: Path | None = None
) -> None:
    """``airflow dags test`` for ``day`` (the Deadline Alert off: see the README).

    Raises ``CalledProcessError`` when the run fails. With ``log_file``, Airflow's output goes
    there instead of the terminal.
    """
    conf = json.dumps({"date": day, "reprocess": reprocess})
    environ = env.environ(EARMARK_DEADLINE_ALERTS="false")
    args = ("dags", "test", "earmark_daily", day, "--conf", conf)
    if log_file is None:
        env.airflow(*args, env=environ)
        return
    with log_file.open("w", encoding="utf-8") as log:
        subprocess.run(
            [str(Path(sys.executable).parent / "airflow"), *args],
            env=environ,
            stdout=log,
            stderr=subprocess.STDOUT,
            check=True,
        )


def main(argv: list[str] | None = None) -> int:
    from earmark.day.report import stored_report
    from earmark.day.status import (
        day_status,
        format_items,
        format_summary,
        quarantine_report,
        review_items,
    )
    from earmark.store.db import Store
    from earmark_dev.sampledata import generate_day

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--home", type=Path, default=PROJECT_ROOT / ".demo")
    parser.add_argument("--date", default=(date.today() - timedelta(days=1)).isoformat())
    parser.add_argument("--archives", type=int, default=3)
    parser.add_argument("--files", type=int, default=4, help="files per archive")
    parser.add_argument("--minutes", type=float, default=3.0, help="minutes of audio in all")
    args = parser.parse_args(argv)

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    env = LocalEnv(args.home.resolve())
    print(f"Preparing {env.home} (Airflow metadata, gpu pool, tiny models)…", flush=True)
    env.prepare()
    written = generate_day(
        env.data_root / "incoming",
        date.fromisoformat(args.date),
        archives=args.archives,
        files_per_archive=args.files,
        minutes=args.minutes,
        seed=0,
    )
    print(f"Sample day {args.date}: {len(written)} archives in {env.data_root / 'incoming'}")
    log_file = env.home / f"dags-test-{args.date}.log"
    print(
        f"Running earmark_daily for {args.date} with `airflow dags test` (log: {log_file})…",
        flush=True,
    )
    try:
        run_day(env, args.date, log_file=log_file)
    except subprocess.CalledProcessError:
        print("The run FAILED. Last lines of the log:", file=sys.stderr)
        print("\n".join(log_file.read_text().splitlines()[-40:]), file=sys.stderr)
        return 1

    os.environ.update(env.variables())
    store = Store.from_url(env.store_url())
    print()
    print(format_summary(day_status(Settings.from_env(), store, args.date)))
    print(format_items(review_items(store, args.date), quarantine_report(store, args.date)))
    report = stored_report(store, args.date)
    store.dispose()
    if report is not None:
        page = env.home / f"report-{args.date}.html"
        page.write_text(report, encoding="utf-8")
        print(f"The day's report with plots (open it in a browser): {page}")
    print()
    print("Open the same run in the Airflow UI:  make ui   (then http://localhost:8080;")
    print(
        f"  the admin password is in {env.airflow_home}/simple_auth_manager_passwords.json"
        ".generated)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
