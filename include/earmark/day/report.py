"""The day's HTML report: where the day stands, with plots, stored with the day.

Written by the ``report`` task (and ``earmark report``) into ``day_reports``; the day page
(``/earmark/report/<date>``) serves it and the mails link to it. One self-contained page: the
plots are inline SVG drawn with matplotlib, so it needs nothing else to show (and the pages'
Content-Security-Policy allows nothing else). Counts, times, ids and names only: never
transcript text.
"""

from __future__ import annotations

import io
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from jinja2 import Environment, PackageLoader, select_autoescape

from earmark.config import Settings
from earmark.day.schedule import deadline_for
from earmark.day.status import DayStatus, day_status, format_summary, quarantine_report
from earmark.lifecycle.retention import Held, held_per_kind
from earmark.names import printable
from earmark.reasons import code_of
from earmark.review.stats import FlagQuality, flag_quality, version_label
from earmark.store.db import Store
from earmark.store.sql import as_utc, named_queries

ARCHIVE_ROWS = 200  # the report lists this many archives, incomplete ones first
REVIEW_STATUSES = ("pending", "claimed", "resolved", "withdrawn")
COLOURS = {
    "pending": "#d08c1a",
    "claimed": "#3b6fb6",
    "resolved": "#2f8f5b",
    "withdrawn": "#9aa0a6",
}


@dataclass
class DayFigures:
    """Everything the report shows, read in one go."""

    status: DayStatus
    progress: list[tuple[datetime, float]] = field(default_factory=list)  # (done at, audio s)
    batches: list[dict[str, Any]] = field(default_factory=list)
    quarantine: list[dict[str, Any]] = field(default_factory=list)
    flags: list[dict[str, Any]] = field(default_factory=list)
    review: dict[str, dict[str, int]] = field(default_factory=dict)  # version -> status -> n
    archives: list[dict[str, Any]] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)
    quality: list[FlagQuality] = field(default_factory=list)  # per policy, from the reviews
    no_speech: int = 0  # files decoded in which VAD found no speech
    silent: int = 0  # files intake found silent (never decoded)
    retention: list[Held] = field(default_factory=list)  # per kind of data: kept, next run takes

    @property
    def quarantine_by_reason(self) -> Counter[str]:
        return Counter(f"{q['kind']}: {code_of(q['reason'] or 'unknown')}" for q in self.quarantine)


def read_figures(
    settings: Settings,
    store: Store,
    run_date: str,
    now: datetime | None = None,
    status: DayStatus | None = None,
) -> DayFigures:
    """The day's status (read here unless given) and every series the report plots."""
    queries = named_queries("day_report")
    figures = DayFigures(status=status or day_status(settings, store, run_date, now=now))
    utc_now = (now or datetime.now(UTC)).astimezone(UTC)
    with store.engine.connect() as conn:

        def run(name: str, sql: str | None = None) -> list[dict[str, Any]]:
            result = conn.execute(sa.text(sql or queries[name]), {"d": run_date, "now": utc_now})
            return [dict(r._mapping) for r in result]

        figures.progress = [(as_utc(r["done_at"]), float(r["audio_s"])) for r in run("progress")]
        figures.batches = run("batches")
        [nothing] = run("no_speech")
        figures.no_speech, figures.silent = int(nothing["no_speech"]), int(nothing["silent"])
        figures.flags = [{**row, "version": _policy_version(row)} for row in run("flags_by_policy")]
        for row in run("review_item_counts", named_queries("day_status")["review_item_counts"]):
            by_status = figures.review.setdefault(_policy_version(row), {})
            by_status[row["status"]] = by_status.get(row["status"], 0) + int(row["n"])
        figures.archives = run("archive_completeness")
        figures.failures = run("day_failures", named_queries("alerts")["day_failures"])
    figures.quarantine = quarantine_report(store, run_date)
    figures.quality = flag_quality(store, run_date, run_date)
    today = utc_now.astimezone(ZoneInfo(settings.timezone)).date()
    figures.retention = held_per_kind(settings, store, today)
    return figures


# ---- plots -------------------------------------------------------------------------------------
def _svg(fig: Any) -> str:
    import matplotlib.pyplot as plt  # noqa: PLC0415

    out = io.StringIO()
    fig.savefig(out, format="svg")
    plt.close(fig)
    text = out.getvalue()
    return text[text.index("<svg") :]  # inline: no XML declaration or doctype


def _figure() -> tuple[Any, Any]:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    plt.rcParams.update({"svg.fonttype": "none", "font.size": 9, "axes.spines.top": False})
    plt.rcParams["axes.spines.right"] = False
    return plt.subplots(figsize=(6.2, 2.8), layout="constrained")


def _empty(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="#667")
    ax.set_xticks([])
    ax.set_yticks([])


def plot_progress(figures: DayFigures, settings: Settings) -> str:
    """Audio screened through the day against the deadline (and the ETA while unfinished)."""
    import matplotlib.dates as mdates  # noqa: PLC0415

    zone = ZoneInfo(settings.timezone)
    status = figures.status
    deadline = deadline_for(status.run_date, settings)
    fig, ax = _figure()
    total_h = status.audio_hours
    if figures.progress:
        times = [figures.progress[0][0].astimezone(zone)]
        done, cumulative = 0.0, [0.0]
        for moment, seconds in figures.progress:
            done += seconds / 3600
            times.append(moment.astimezone(zone))
            cumulative.append(done)
        ax.step(times, cumulative, where="post", color="#3b6fb6", label="audio screened (h)")
        ax.axhline(total_h, color="#999", linestyle=":", label=f"day's audio {total_h:.2f} h")
        if status.eta:
            eta = datetime.fromisoformat(status.eta).astimezone(zone)
            ax.plot([times[-1], eta], [cumulative[-1], total_h], "--", color="#3b6fb6", alpha=0.6)
            ax.plot([eta], [total_h], "o", color="#3b6fb6", label=f"ETA {eta:%H:%M}")
        start = min(times[0], deadline - timedelta(hours=1))
        end = max(times[-1], deadline)
        pad = (end - start) * 0.04
        ax.set_xlim(start - pad, end + pad)
        ax.set_ylim(0, max(total_h, cumulative[-1]) * 1.12 or 1)
    else:
        ax.set_xlim(deadline - timedelta(hours=6), deadline + timedelta(minutes=30))
        ax.text(
            0.03, 0.85, "nothing screened yet", transform=ax.transAxes, color="#667", fontsize=9
        )
    ax.axvline(deadline, color="#b3261e", linestyle="--", label=f"deadline {deadline:%H:%M}")
    locator = mdates.AutoDateLocator(tz=zone)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, tz=zone))
    ax.set_ylabel("hours of audio")
    ax.set_title("Progress through the day", loc="left", fontsize=10)
    ax.legend(loc="upper left", fontsize=8, frameon=False)
    return _svg(fig)


def plot_batches(figures: DayFigures) -> str:
    """Speed of each GPU work unit (audio seconds per GPU second), measured and planned."""
    fig, ax = _figure()
    done = [
        b for b in figures.batches if b["transcribe_wall_s"] and b["classify_wall_s"] is not None
    ]
    if not done:
        _empty(ax, "no GPU work unit finished")
    else:
        labels = list(range(1, len(done) + 1))
        speed = [
            float(b["audio_s"]) / (float(b["transcribe_wall_s"]) + float(b["classify_wall_s"]))
            for b in done
        ]
        ax.bar(labels, speed, color="#3b6fb6", label="measured")
        planned = [
            float(b["audio_s"]) / float(b["expected_gpu_s"]) if b["expected_gpu_s"] else None
            for b in done
        ]
        if any(p is not None for p in planned):
            ax.plot(
                labels,
                [p if p is not None else float("nan") for p in planned],
                "_",
                markersize=18,
                color="#b3261e",
                label="planned",
            )
        ax.set_xticks(labels)
        ax.set_xlabel("work unit (in planned order)")
        ax.set_ylabel("× real time")
        ax.legend(loc="upper right", fontsize=8, frameon=False)
    ax.set_title("Throughput per GPU work unit", loc="left", fontsize=10)
    return _svg(fig)


def plot_quarantine(figures: DayFigures) -> str:
    """Deliveries, archives and files refused, by reason."""
    counts = figures.quarantine_by_reason.most_common()
    fig, ax = _figure()
    if not counts:
        _empty(ax, "nothing quarantined")
    else:
        names = [printable(name) for name, _ in reversed(counts)]
        ax.barh(names, [n for _, n in reversed(counts)], color="#d08c1a")
        ax.set_xlabel("items")
        ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_title("Quarantined, by reason", loc="left", fontsize=10)
    return _svg(fig)


def _policy_version(row: dict[str, Any]) -> str:
    """A policy and its version, for the plots: a rescreened day shows each version apart."""
    return f"{row['policy']} {version_label(row['policy_sha'], row['model'])}"


def plot_flags(figures: DayFigures) -> str:
    """Files scored and flagged, per policy version (a superseded one marked so)."""
    fig, ax = _figure()
    if not figures.flags:
        _empty(ax, "nothing scored")
    else:
        policies = [
            f["version"] + ("" if int(f["current"]) else " (superseded)") for f in figures.flags
        ]
        positions = range(len(policies))
        ax.bar(
            [p - 0.2 for p in positions],
            [int(f["scored"]) for f in figures.flags],
            width=0.4,
            color="#c9d3e3",
            label="scored",
        )
        ax.bar(
            [p + 0.2 for p in positions],
            [int(f["flagged"]) for f in figures.flags],
            width=0.4,
            color="#b3261e",
            label="flagged",
        )
        ax.set_xticks(list(positions), policies)
        ax.set_ylabel("files")
        ax.yaxis.get_major_locator().set_params(integer=True)
        ax.legend(loc="upper right", fontsize=8, frameon=False)
    ax.set_title("Flags per policy", loc="left", fontsize=10)
    return _svg(fig)


def plot_review(figures: DayFigures) -> str:
    """The day's review items per policy version: pending, claimed, resolved, withdrawn."""
    policies = sorted(figures.review)
    fig, ax = _figure()
    if not policies:
        _empty(ax, "no review items")
    else:
        left = [0] * len(policies)
        for status in REVIEW_STATUSES:
            values = [figures.review[p].get(status, 0) for p in policies]
            ax.barh(policies, values, left=left, color=COLOURS[status], label=status)
            left = [a + b for a, b in zip(left, values, strict=True)]
        ax.set_xlabel("review items")
        ax.xaxis.get_major_locator().set_params(integer=True)
        fig.legend(loc="outside upper right", ncols=3, frameon=False, fontsize=8)
    ax.set_title("Review progress", loc="left", fontsize=10)
    return _svg(fig)


# ---- the page ----------------------------------------------------------------------------------
def day_verdict(status: DayStatus, now: datetime, timezone: str) -> tuple[str, str]:
    """(badge class ``ok``/``warn``/``bad``, words) for where the day stands against its
    deadline at ``now``, the ETA in ``timezone``: the one wording of the report and the day
    page."""
    if status.nothing_delivered:
        if now > datetime.fromisoformat(status.deadline):
            return "bad", "Nothing delivered by the deadline"
        return "warn", "Nothing delivered for this day yet"
    if status.complete:
        return (
            ("ok", "Complete, on time")
            if status.on_time
            else ("bad", "Complete, AFTER the deadline")
        )
    if status.on_time is None or not status.eta:
        return "warn", "In progress, ETA unknown"
    eta = datetime.fromisoformat(status.eta).astimezone(ZoneInfo(timezone))
    eta_words = eta.strftime("%Y-%m-%d %H:%M %Z").strip()
    if status.on_time:
        return "ok", f"In progress, on time (ETA {eta_words})"
    return "bad", f"INCOMPLETE, after the deadline (ETA {eta_words})"


def render_report(
    figures: DayFigures, settings: Settings, run_id: str | None, now: datetime | None = None
) -> str:
    """The report page as one HTML document."""
    now = now or datetime.now(UTC)
    zone = ZoneInfo(settings.timezone)
    env = Environment(
        loader=PackageLoader("earmark.day", "templates"), autoescape=select_autoescape(["html"])
    )
    env.filters["printable"] = printable
    env.filters["local"] = lambda v: (
        as_utc(v).astimezone(zone).strftime("%Y-%m-%d %H:%M %Z") if v else ""
    )
    archives = figures.archives[:ARCHIVE_ROWS]
    return env.get_template("day_report.html").render(
        f=figures,
        s=figures.status,
        verdict=day_verdict(figures.status, now, settings.timezone),
        run_id=run_id,
        generated=now.astimezone(zone).strftime("%Y-%m-%d %H:%M %Z"),
        deadline=deadline_for(figures.status.run_date, settings).strftime("%Y-%m-%d %H:%M %Z"),
        summary=format_summary(figures.status),
        plots={
            "progress": plot_progress(figures, settings),
            "batches": plot_batches(figures),
            "quarantine": plot_quarantine(figures),
            "flags": plot_flags(figures),
            "review": plot_review(figures),
        },
        archives=archives,
        more_archives=len(figures.archives) - len(archives),
    )


def write_day_report(
    settings: Settings,
    store: Store,
    run_date: str,
    run_id: str,
    now: datetime | None = None,
    status: DayStatus | None = None,
) -> str:
    """Render the day's report and store it with the day (replacing an earlier one); a
    ``status`` already read is used as is."""
    figures = read_figures(settings, store, run_date, now, status)
    html = render_report(figures, settings, run_id, now)
    with store.begin() as conn:
        conn.execute(
            sa.text(named_queries("day_report")["save_report"]),
            {"d": run_date, "run_id": run_id, "html": html},
        )
    return html


def stored_report(store: Store, run_date: str) -> str | None:
    """The day's stored report page, or None when none was written yet."""
    rows = store.rows(named_queries("day_report")["load_report"], d=run_date)
    return rows[0].html if rows else None
