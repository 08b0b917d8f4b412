"""``earmark``: operator commands against the results DB.

    earmark migrate                 apply pending schema migrations
    earmark status [--date D]       where a day stands (counts, throughput, deadline)
    earmark quarantine [--date D]   every rejected delivery and archive and quarantined file,
                                    with reasons (names with control or bidi chars escaped)
    earmark review-items [--date D] the day's review queue (ids, names, scores)
    earmark review-stats [--from D] [--to D] [--json]
                                    flag quality per policy and day (precision, agreement of
                                    blind second reviews, estimated misses), a suggested
                                    threshold, and each reviewer's counts and times
    earmark capacity --hours H [--date D]
                                    GPUs needed for H hours of audio a day by the deadline, at
                                    the throughput the GPU work units measured
    earmark report [--date D] [--out F]
                                    write the day's HTML report with plots now (stored with the
                                    day, served at /earmark/report/D; --out also saves a copy)
    earmark health [--json] [--date D] [--at T]
                                    checks for a monitoring system: exit 0 ok, 1 warning,
                                    2 critical, 3 unknown; one summary line (or JSON)
    earmark metrics [--port P] [--bind A]
                                    serve Prometheus metrics (today's day, the backlogs) on
                                    EARMARK_METRICS_BIND:EARMARK_METRICS_PORT until stopped
    earmark render-config --values V --out O
                                    render deploy/airflow.env.template into the EnvironmentFile
                                    every host runs with (no DB needed)
    earmark models prepare [--dtype bfloat16]
                                    merge the CoPE adapter into the base once per GPU host and
                                    save it to EARMARK_PREPARED_MODEL_DIR (no DB needed)
    earmark models check            exit 1, saying why, if GPU tasks could not load it
    earmark erase --file ID | --archive ID | --delivery NAME --reason R [--by WHO] [--yes]
                                    erase recordings on request: audio, transcripts, labels,
                                    review items (and the delivered archive), recorded in
                                    `erasures`; without --yes only says what would go; exit 1
                                    while a GPU work unit holds them
    earmark erase --readmit ARCHIVE --reason R [--by WHO] [--yes]
                                    let the bytes of an archive erased whole be delivered and
                                    screened again (recorded in `readmissions`)
    earmark erase --list [--json]   every erasure: who, when, why, what (the audit)
    earmark retention [--dry-run] [--json] [--date D]
                                    apply the retention of each kind of data (delivered
                                    archives, audio, transcripts, labels, reviews; recorded in
                                    `erasures`); --dry-run only says per kind what would go
    earmark rescreen --from D --to D [--policy P] [--by WHO] [--yes] [--trigger]
                                    send those days' recordings whose labels are not of the
                                    current policy version and model back to the GPU stage
                                    (earlier labels kept, superseded); without --yes only says
                                    what would go; --trigger starts each day's earmark_daily run
    earmark rescreen --list [--json]
                                    every rescreen: who, when, which days and versions
    earmark evaluate (--model DIR | --policy FILE) [--from D] [--to D] [--json]
                                    judge a candidate LoRA adapter or policy version on the RA
                                    decisions, beside the current one (nothing written):
                                    precision, recall, the violations it would miss

The results DB is ``--db-url`` or the Airflow connection ``EARMARK_DB_CONN_ID`` (for example
from ``AIRFLOW_CONN_EARMARK_DB``).

Why one module (over 500 lines): it is the command line's table of contents, each command's
parser beside a handler of a few lines that calls the room doing the work; split, the commands
an operator reads in ``earmark --help`` would no longer be read in one place.
"""

from __future__ import annotations

import argparse
import json
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from earmark.config import Settings
from earmark.names import printable
from earmark.ops.deploy_config import render_config
from earmark.store.db import Store


def _store(args: argparse.Namespace, settings: Settings) -> Store:
    if args.db_url:
        return Store.from_url(args.db_url)
    from earmark.orchestration.airflow_seam import results_store

    return results_store(settings)


def _day(value: str) -> str:
    """A ``--date`` value: a real day as YYYY-MM-DD."""
    try:
        return date.fromisoformat(value).isoformat()
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a day as YYYY-MM-DD") from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="earmark", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--db-url", help="SQLAlchemy URL of the results DB")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("migrate", help="apply pending migrations")
    for name in ("status", "quarantine", "review-items"):
        sub = commands.add_parser(name)
        sub.add_argument("--date", type=_day, help="YYYY-MM-DD (default: today, local)")
        sub.add_argument("--json", action="store_true", help="machine-readable output")
    stats = commands.add_parser("review-stats", help="flag quality and reviewers' figures")
    stats.add_argument("--from", dest="first", type=_day, help="first day (default: --to - 6)")
    stats.add_argument("--to", dest="last", type=_day, help="last day (default: today, local)")
    stats.add_argument("--json", action="store_true", help="machine-readable output")
    listens = commands.add_parser("listens", help="who fetched a recording's audio, and when")
    listens.add_argument("--file", type=int, required=True, help="the audio file's id")
    listens.add_argument("--json", action="store_true", help="machine-readable output")
    _erase_parser(commands)
    retention = commands.add_parser("retention", help="apply the retention of each kind of data")
    retention.add_argument("--dry-run", action="store_true", help="only say what would go")
    retention.add_argument("--json", action="store_true", help="machine-readable output")
    retention.add_argument("--date", type=_day, help="as of this day (default: today, local)")
    _rescreen_parser(commands)
    _evaluate_parser(commands)
    sizing = commands.add_parser("capacity", help="GPUs needed for H hours of audio a day")
    sizing.add_argument("--hours", type=float, required=True, help="hours of audio a day")
    sizing.add_argument("--date", type=_day, help="measured up to this day (default: today)")
    report = commands.add_parser("report", help="write the day's HTML report now")
    report.add_argument("--date", type=_day, help="YYYY-MM-DD (default: today, local)")
    report.add_argument("--out", type=Path, help="also save the page to this file")
    health = commands.add_parser("health", help="checks with Nagios exit codes")
    health.add_argument("--json", action="store_true", help="every check as JSON")
    health.add_argument("--date", type=_day, help="the day to check (default: today, local)")
    health.add_argument("--at", help="check as of this ISO time (default: now)")
    metrics = commands.add_parser("metrics", help="serve Prometheus metrics")
    metrics.add_argument("--port", type=int, help="default EARMARK_METRICS_PORT")
    metrics.add_argument("--bind", help="default EARMARK_METRICS_BIND")
    render = commands.add_parser("render-config", help="render the hosts' configuration file")
    render.add_argument("--values", type=Path, required=True, help="KEY=VALUE lines")
    render.add_argument("--out", type=Path, required=True, help="the EnvironmentFile to write")
    models = commands.add_parser("models", help="prepare the classifier on a GPU host")
    models.add_argument("action", choices=("prepare", "check"))
    models.add_argument(
        "--dtype",
        default="bfloat16",
        choices=("bfloat16", "float32"),  # never float16: Gemma-2 overflows in it
        help="dtype the merged weights are saved in (default bfloat16)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    from earmark.day import status as day_status

    args = _parser().parse_args(argv)

    if args.command == "models":
        return _models(args.action, args.dtype, Settings.from_env())
    if args.command == "render-config":
        rendered = render_config(args.values, args.out)
        print(f"wrote {args.out} ({len(rendered)} settings)")
        return 0
    settings = Settings.from_env()
    store = _store(args, settings)
    try:
        own_exit_code = {
            "health": _health,
            "review-stats": _review_stats,
            "capacity": _capacity,
            "listens": _listens,
            "erase": _erase,
            "retention": _retention,
            "rescreen": _rescreen,
            "evaluate": _evaluate,
        }
        if args.command in own_exit_code:
            return own_exit_code[args.command](args, settings, store)
        if args.command == "metrics":
            from earmark.ops.metrics import serve

            serve(
                settings,
                store,
                args.port or settings.metrics_port,
                args.bind or settings.metrics_bind,
            )
            return 0
        if args.command == "migrate":
            applied = store.migrate()
            print(f"applied {', '.join(applied)}" if applied else "schema up to date")
            return 0
        day = args.date or datetime.now(ZoneInfo(settings.timezone)).date().isoformat()
        if args.command == "report":
            from earmark.day.report import write_day_report

            html = write_day_report(settings, store, day, "earmark report")
            if args.out:
                args.out.write_text(html, encoding="utf-8")
            print(f"report for {day} stored" + (f", copy in {args.out}" if args.out else ""))
        elif args.command == "status":
            status = day_status.day_status(settings, store, day)
            print(json.dumps(status.as_dict()) if args.json else day_status.format_summary(status))
        elif args.command == "quarantine":
            rows = day_status.quarantine_report(store, day)
            print(
                json.dumps(rows)
                if args.json
                else "\n".join(
                    f"{r['kind']:<8} {printable(r['item'])}  ({printable(r['reason'])})"
                    for r in rows
                )
                or "nothing quarantined"
            )
        else:
            items = day_status.review_items(store, day, limit=1000)
            print(
                json.dumps(items, default=str) if args.json else day_status.format_items(items, [])
            )
    finally:
        store.dispose()
    return 0


def _review_stats(args: argparse.Namespace, settings: Settings, store: Store) -> int:
    from earmark.review import stats as review_stats

    last = args.last or datetime.now(ZoneInfo(settings.timezone)).date().isoformat()
    first = args.first or (date.fromisoformat(last) - timedelta(days=6)).isoformat()
    if first > last:
        print(f"--from {first} is after --to {last}")
        return 2
    stats = review_stats.review_stats(
        store, first, last, settings.flag_threshold, settings.timezone
    )
    print(
        json.dumps(review_stats.as_json(stats)) if args.json else review_stats.format_stats(stats)
    )
    return 0


def _listens(args: argparse.Namespace, settings: Settings, store: Store) -> int:
    """Every fetch of a file's audio by a reviewer's browser, newest first (the audit)."""
    from earmark.store.sql import named_queries

    rows = [
        dict(r._mapping) for r in store.rows(named_queries("audit")["listens"], file_id=args.file)
    ]
    if args.json:
        print(json.dumps(rows, default=str))
    else:
        print(
            "\n".join(
                f"{r['at']}  {printable(r['reviewer'])}  item {r['item_id']} ({r['policy']},"
                f" {r['kind']}) claimed {r['claimed_at']}  {r['byte_range'] or 'whole file'}"
                for r in rows
            )
            or f"no reviewer fetched the audio of file {args.file}"
        )
    return 0


def _erase_parser(commands: argparse._SubParsersAction) -> None:
    erase = commands.add_parser("erase", help="erase recordings on request, or list erasures")
    what = erase.add_mutually_exclusive_group(required=True)
    what.add_argument("--file", type=int, help="one recording (audio_files id)")
    what.add_argument("--archive", type=int, help="every recording of an archive, and the archive")
    what.add_argument("--delivery", help="the archive(s) the delivery of this name became")
    what.add_argument(
        "--readmit", type=int, help="an archive erased whole: let its bytes be screened again"
    )
    what.add_argument("--list", action="store_true", help="list every erasure (the audit)")
    erase.add_argument("--reason", help="why (required to erase; recorded)")
    erase.add_argument("--by", help="who asks for it (default: the OS user)")
    erase.add_argument("--yes", action="store_true", help="erase (without: say what would go)")
    erase.add_argument("--json", action="store_true", help="--list as JSON")


def _audit(rows: list[dict[str, Any]], as_json: bool, lines: list[str], empty: str) -> None:
    """An audit table's rows for `--list`: as JSON, or a line each (``empty`` for none)."""
    print(json.dumps(rows, default=str) if as_json else "\n".join(lines) or empty)


def _erase(args: argparse.Namespace, settings: Settings, store: Store) -> int:
    """Erase recordings on request (earmark.lifecycle.erase), say what would go, or list."""
    import getpass

    from earmark.lifecycle import erase

    if args.list:
        rows = erase.erasures(store)
        readmitted = [] if args.json else erase.readmissions(store)
        _audit(
            rows,
            args.json,
            [
                *(
                    f"#{r['id']} {r['at']} {printable(r['actor'])} {r['scope']}"
                    f" {printable(r['target'])} {r['status']}: {printable(r['reason'])}"
                    for r in rows
                ),
                *(
                    f"readmission #{r['id']} {r['at']} {printable(r['actor'])} archive"
                    f" {r['archive_id']}: {printable(r['reason'])}"
                    for r in readmitted
                ),
            ],
            "no erasures",
        )
        return 0
    if not (args.reason or "").strip():
        print("--reason is required: why these recordings are erased (it is recorded)")
        return 2
    if args.readmit is not None:
        return _readmit(args, store)
    scope, target = next(
        (erase.Scope(name), str(value))
        for name, value in (
            ("file", args.file),
            ("archive", args.archive),
            ("delivery", args.delivery),
        )
        if value is not None
    )
    try:
        if not args.yes:
            plan = erase.plan_erasure(settings, store, scope, target)
            print("\n".join(erase.describe(plan)))
            if plan.already is None:
                print("nothing changed: add --yes to erase")
            return 0
        actor = args.by or getpass.getuser()
        outcome = erase.erase(settings, store, scope, target, actor, args.reason)
    except erase.ErasureError as exc:
        print(f"not erased: {exc}")
        return exc.exit_code
    if outcome.finished_earlier:
        print(f"finished {outcome.finished_earlier} interrupted erasures first")
    lines = erase.describe(outcome.plan)
    if outcome.erasure_ids:
        ids = ", ".join(f"#{i}" for i in outcome.erasure_ids)
        lines = [*lines[:-1], f"erased {lines[-1].removeprefix('in all ')} (erasures {ids})"]
    print("\n".join(lines))
    return 0


def _readmit(args: argparse.Namespace, store: Store) -> int:
    """Let the bytes of an archive erased whole be delivered and screened again."""
    import getpass

    from earmark.lifecycle import erase

    try:
        if not args.yes:
            plan = erase.plan_readmission(store, args.readmit)
            print(
                plan.already
                or f"archive {plan.archive_id} (erasure #{plan.erasure_id}): its bytes, delivered"
                " again, would be a new archive and screened; nothing changed: add --yes"
            )
            return 0
        plan, readmission_id = erase.readmit(
            store, args.readmit, args.by or getpass.getuser(), args.reason
        )
    except erase.ErasureError as exc:
        print(f"not readmitted: {exc}")
        return exc.exit_code
    print(
        plan.already
        or f"archive {plan.archive_id} readmitted (readmission #{readmission_id}): its bytes,"
        " delivered again, are a new archive and are screened"
    )
    return 0


def _rescreen_parser(commands: argparse._SubParsersAction) -> None:
    rescreen = commands.add_parser(
        "rescreen", help="screen past days again under the current policies and model"
    )
    rescreen.add_argument("--from", dest="first", type=_day, help="first day (run date)")
    rescreen.add_argument("--to", dest="last", type=_day, help="last day (default: --from)")
    rescreen.add_argument(
        "--policy", help="only recordings whose label under this policy is not current"
    )
    rescreen.add_argument("--by", help="who asks for it (default: the OS user)")
    rescreen.add_argument("--yes", action="store_true", help="send them back (without: a plan)")
    rescreen.add_argument(
        "--trigger", action="store_true", help="with --yes: trigger each day's earmark_daily run"
    )
    rescreen.add_argument("--list", action="store_true", help="list every rescreen (the audit)")
    rescreen.add_argument("--json", action="store_true", help="--list as JSON")


def _rescreen(args: argparse.Namespace, settings: Settings, store: Store) -> int:
    """Screen past days again (earmark.versions.rescreen): a plan, or the files sent back."""
    import getpass
    import shlex
    import subprocess

    from earmark.versions import rescreen

    if args.list:
        rows = rescreen.rescreens(store)
        lines = [
            f"#{r['id']} {r['at']} {printable(r['actor'])} {r['first_day']}..{r['last_day']}"
            f" {printable(r['policy'] or 'every policy')} {r['files']} recordings"
            for r in rows
        ]
        _audit(rows, args.json, lines, "no rescreens")
        return 0
    if args.first is None:
        print("--from is required: the first day to screen again (YYYY-MM-DD)")
        return 2
    try:
        plan = rescreen.plan_rescreen(
            settings, store, args.first, args.last or args.first, args.policy
        )
        print("\n".join(rescreen.describe(plan)))
        if not args.yes or not plan.files:
            if plan.files:
                print("nothing changed: add --yes to send them back to the GPU stage")
            return 0
        rescreen_id = rescreen.send_back(store, plan, args.by or getpass.getuser())
    except rescreen.RescreenError as exc:
        print(f"not rescreened: {exc}")
        return 2
    commands = rescreen.trigger_commands(plan)
    print(f"sent back to the GPU stage (rescreen #{rescreen_id}); each day's next run screens them")
    if not args.trigger:
        print("\n".join(["start them now with:", *(f"  {shlex.join(c)}" for c in commands)]))
        return 0
    failed = [c for c in commands if subprocess.run(c, check=False).returncode != 0]
    for command in failed:
        print(f"could not trigger: {shlex.join(command)}")
    return 1 if failed else 0


def _evaluate_parser(commands: argparse._SubParsersAction) -> None:
    evaluate = commands.add_parser(
        "evaluate", help="judge a candidate model or policy on the RA decisions (shadow)"
    )
    candidate = evaluate.add_mutually_exclusive_group(required=True)
    candidate.add_argument(
        "--model",
        type=Path,
        metavar="DIR",
        help="a candidate LoRA adapter dir (peft) on the current base",
    )
    candidate.add_argument(
        "--policy",
        type=Path,
        metavar="FILE",
        help="a new version of a policy file (named as the policy)",
    )
    evaluate.add_argument("--from", dest="first", type=_day, help="first day (default: --to - 27)")
    evaluate.add_argument("--to", dest="last", type=_day, help="last day (default: today, local)")
    evaluate.add_argument("--json", action="store_true", help="machine-readable output")


def _evaluate(args: argparse.Namespace, settings: Settings, store: Store) -> int:
    """Score the decided review items under the current and the candidate version
    (earmark.versions.evaluate) and print both sides' figures; nothing is written."""
    from earmark.versions import evaluate as evaluation

    last = args.last or datetime.now(ZoneInfo(settings.timezone)).date().isoformat()
    days_back = timedelta(days=evaluation.DEFAULT_DAYS - 1)
    first = args.first or (date.fromisoformat(last) - days_back).isoformat()
    try:
        candidate = evaluation.Candidate(policy_file=args.policy, adapter_dir=args.model)
        result = evaluation.evaluate(settings, store, candidate, first, last)
    except evaluation.EvaluationError as exc:
        print(f"not evaluated: {exc}")
        return exc.exit_code
    print(
        json.dumps(evaluation.as_json(result))
        if args.json
        else evaluation.format_evaluation(result)
    )
    return 0


def _retention(args: argparse.Namespace, settings: Settings, store: Store) -> int:
    """Apply the retention rules, or say what they would take: per kind counts and bytes."""
    from earmark.lifecycle import retention

    today = date.fromisoformat(args.date) if args.date else retention.local_today(settings)
    if args.dry_run:
        plan = retention.plan_retention(settings, store, today)
        kinds, earlier, verb = plan.kinds, plan.unfinished, "due"
    else:
        outcome = retention.apply_retention(settings, store, today)
        kinds, earlier, verb = outcome.kinds, outcome.finished_earlier, "removed"
    if args.json:
        shown = {"today": today.isoformat(), "dry_run": args.dry_run, "unfinished": earlier}
        print(json.dumps(shown | {"kinds": [k.as_json() for k in kinds]}))
        return 0
    head = f"retention on {today}" + (": a dry run, nothing changed" if args.dry_run else "")
    finished = [f"{earlier} interrupted retention intents finished first"] if earlier else []
    print("\n".join([head, *finished, *retention.describe(kinds, verb)]))
    return 0


def _capacity(args: argparse.Namespace, settings: Settings, store: Store) -> int:
    from earmark.ops.capacity import capacity

    if args.hours <= 0:
        print("--hours must be more than 0")
        return 2
    print(capacity(settings, store, args.hours, args.date).describe())
    return 0


def _health(args: argparse.Namespace, settings: Settings, store: Store) -> int:
    from earmark.ops import health
    from earmark.orchestration import airflow_seam as airflow_support

    checks = health.run_checks(
        settings,
        store,
        meta_url=airflow_support.metadata_db_url(),
        broker_url=airflow_support.celery_broker_url(),
        workers=airflow_support.celery_workers,
        now=datetime.fromisoformat(args.at) if args.at else None,
        run_date=args.date,
    )
    state, line = health.verdict(checks)
    print(json.dumps(health.as_json(checks)) if args.json else line)
    return state


def _models(action: str, dtype: str, settings: Settings) -> int:
    from earmark.inference.prepared import (
        PreparedModelError,
        check_prepared,
        prepare_classifier,
    )

    sources = (settings.base_model_dir, settings.adapter_dir)
    if action == "prepare":
        prepared = prepare_classifier(*sources, settings.prepared_model_dir, dtype)
        print(f"prepared {prepared.path} ({dtype}, {len(prepared.manifest['files'])} files)")
        return 0
    try:
        prepared = check_prepared(*sources, settings.prepared_model_dir)
    except PreparedModelError as exc:
        print(f"Not ready. {exc}")
        return 1
    print(f"Ready: {prepared.path} ({prepared.manifest['dtype']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
