"""The day pages: where a day stands, its stored report, and the review stats over days.

The day page and the report are open to every signed-in user who may see plugins; the stats
page needs the ``Earmark Stats`` capability (``StatsViewerDep``). The counts are
``earmark.day.status``'s, the verdict and the report ``earmark.day.report``'s, the stats
``earmark.review.stats``'.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Annotated
from zoneinfo import ZoneInfo

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, Response

from earmark.config import Settings
from earmark.day import report as day_report
from earmark.day import status as day_status
from earmark.review import queue as review
from earmark.review import stats as review_stats
from earmark.web.shared import (
    SECURITY_HEADERS,
    SettingsDep,
    StatsViewerDep,
    StoreDep,
    UserNameDep,
    base_path,
    message,
    render,
)


def add_day_routes(app: FastAPI) -> None:
    """The day page (``/``), a day's report and the stats page."""

    @app.get("/", response_class=HTMLResponse, name="status")
    def status_page(
        request: Request,
        settings: SettingsDep,
        store: StoreDep,
        reviewer: UserNameDep,
        day: Annotated[str | None, Query(alias="date")] = None,
    ) -> Response:
        """Where a day stands (default: today in EARMARK_TIMEZONE)."""
        run_date = _run_date(day, settings)
        review.release_expired(store)
        status = day_status.day_status(settings, store, run_date)
        return render(
            request,
            "status.html",
            page="status",
            title=f"Day {run_date}",
            reviewer=reviewer,
            s=status,
            verdict=day_report.day_verdict(status, datetime.now(UTC), settings.timezone),
            summary=day_status.format_summary(status),
            items=day_status.review_item_counts(store, run_date),
            has_report=day_report.stored_report(store, run_date) is not None,
        )

    @app.get("/report/{day}", response_class=HTMLResponse, name="report")
    def report_page(request: Request, settings: SettingsDep, store: StoreDep, day: str) -> Response:
        """The day's HTML report with its plots, as the day's report task stored it."""
        run_date = _run_date(day, settings)
        html = day_report.stored_report(store, run_date)
        if html is None:
            return message(
                request,
                404,
                f"No report for {run_date} yet",
                "The day's report is written by the report task of its earmark_daily run.",
                link=f"{base_path(request)}/?date={run_date}",
                link_text=f"Day {run_date}",
            )
        return HTMLResponse(html, headers=SECURITY_HEADERS)

    @app.get("/stats", response_class=HTMLResponse, name="stats")
    def stats_page(
        request: Request,
        settings: SettingsDep,
        store: StoreDep,
        viewer: StatsViewerDep,
        first: Annotated[str | None, Query(alias="from")] = None,
        last: Annotated[str | None, Query(alias="to")] = None,
    ) -> Response:
        """Flag quality per policy and day, suggested thresholds, reviewers' counts and times
        (default: the last 7 days)."""
        last = _run_date(last, settings)
        first = _run_date(first, settings) if first else _days_before(last, 6)
        if first > last:
            raise HTTPException(400, f"the first day {first} is after the last {last}")
        stats = review_stats.review_stats(
            store, first, last, settings.flag_threshold, settings.timezone
        )
        return render(
            request,
            "stats.html",
            page="stats",
            title=f"Review stats {first} to {last}",
            reviewer=viewer,
            stats=stats,
            qa_share=settings.review_qa_share,
            sample_share=settings.review_sample_share,
        )


def _days_before(day: str, days: int) -> str:
    return (date.fromisoformat(day) - timedelta(days=days)).isoformat()


def _run_date(value: str | None, settings: Settings) -> str:
    """``value`` checked as YYYY-MM-DD, or today in the configured timezone."""
    if not value:
        return datetime.now(ZoneInfo(settings.timezone)).date().isoformat()
    try:
        return date.fromisoformat(value).isoformat()
    except ValueError as error:
        raise HTTPException(400, "date must be YYYY-MM-DD") from error
