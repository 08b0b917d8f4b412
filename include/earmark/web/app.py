"""The RA review FastAPI app: day status, claim, listen and read, decide, history, stats.

Airflow mounts it at ``/earmark`` (``plugins/earmark_review.py``). Mounted apps are not
authenticated by Airflow, so every route depends on ``requires_access_view(PLUGINS)``; the
review pages also need the ``Earmark Review`` capability and the stats ``Earmark Stats``
(``earmark.web.roles``). The reviewer is the authenticated Airflow user. Routes stay thin: the
queue is ``earmark.review.queue``, the counts ``earmark.day.status``. Transcript text goes into the
item page only, never into a title, URL or log line.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from airflow.api_fastapi.auth.managers.models.resource_details import AccessView
from airflow.api_fastapi.core_api.security import GetUserDep, requires_access_view
from fastapi import Depends, FastAPI, Form, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
)
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.exceptions import HTTPException as StarletteHTTPException

from earmark.config import Settings
from earmark.day import report as day_report
from earmark.day import status as day_status
from earmark.names import printable, printable_text
from earmark.review import queue as review
from earmark.review import stats as review_stats
from earmark.store.db import Store
from earmark.web import queries, roles

log = logging.getLogger(__name__)

DECISION_LABELS = {"violation": "Violation", "no_violation": "No violation", "unclear": "Unclear"}
NOTE_MAX = 2000
FORM_MAX_BYTES = 64 * 1024
REVIEW_JS = (Path(__file__).parent / "templates" / "review.js").read_text(
    encoding="utf-8"
)  # a decision form is a few KiB at most
AUDIO_TYPES = {
    "WAV": "audio/wav",
    "WAVEX": "audio/wav",
    "FLAC": "audio/flac",
    "OGG": "audio/ogg",
    "MP3": "audio/mpeg",
}
SECURITY_HEADERS = {  # every page and the audio: private, never cached
    "Cache-Control": "private, no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline';"
    " frame-ancestors 'self'; form-action 'self'",
}


def _when(value: str | datetime, fmt: str = "%Y-%m-%d %H:%M %Z") -> str:
    """A timestamp as ``YYYY-MM-DD HH:MM TZ`` (or ``fmt``) in EARMARK_TIMEZONE."""
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    local = moment.astimezone(ZoneInfo(Settings.from_env().timezone))
    return local.strftime(fmt).strip()


def _when_seconds(value: str | datetime) -> str:
    """A moment within the minute, as ``HH:MM:SS`` in EARMARK_TIMEZONE."""
    return _when(value, "%H:%M:%S")


def _templates() -> Jinja2Templates:
    env = Environment(
        loader=PackageLoader("earmark.web", "templates"), autoescape=select_autoescape(["html"])
    )
    env.filters["when"] = _when
    env.filters["when_seconds"] = _when_seconds
    env.filters["printable"] = printable  # names from deliveries: bidi and controls escaped
    env.filters["printable_text"] = printable_text  # transcripts: the same, line breaks kept
    return Jinja2Templates(env=env)


TEMPLATES = _templates()


# ---- dependencies ----------------------------------------------------------------------------
def get_settings() -> Settings:
    """Settings read from the environment at request time."""
    return Settings.from_env()


SettingsDep = Annotated[Settings, Depends(get_settings)]


_STORES: dict[str, Store] = {}
_STORES_LOCK = threading.Lock()
#: Each api-server worker keeps at most this many results-DB connections for the pages (pool
#: plus overflow); a request beyond them waits for one (``POOL_TIMEOUT_S``), never opens more.
POOL_SIZE, POOL_OVERFLOW, POOL_TIMEOUT_S = 4, 4, 30


def get_store(settings: SettingsDep) -> Store:
    """The results DB from the Airflow connection: one pooled engine per process and
    connection id, built on first use (a new engine per request cost a Postgres connection
    and 80-100 ms a page). A changed connection takes effect when the api-server restarts."""
    store = _STORES.get(settings.db_conn_id)
    if store is None:
        from earmark.orchestration.airflow_seam import results_url  # noqa: PLC0415 - Airflow at request time

        with _STORES_LOCK:
            store = _STORES.get(settings.db_conn_id)
            if store is None:
                store = Store.from_url(
                    results_url(settings),
                    pool_size=POOL_SIZE,
                    max_overflow=POOL_OVERFLOW,
                    pool_timeout=POOL_TIMEOUT_S,
                )
                _STORES[settings.db_conn_id] = store
    return store


StoreDep = Annotated[Store, Depends(get_store)]


def get_user_name(user: GetUserDep) -> str:
    """The authenticated Airflow user's name."""
    return user.get_name()


UserNameDep = Annotated[str, Depends(get_user_name)]


def _requires(capability: str) -> Any:
    def check(user: GetUserDep) -> str:
        if not roles.allowed(user, capability):
            raise HTTPException(
                403,
                f"Your Airflow role does not include {capability}. An Airflow admin can grant it"
                " (see the README, Roles).",
            )
        return user.get_name()

    check.__doc__ = f"The signed-in user's name, when they hold {capability}; 403 otherwise."
    return check


#: The reviewer: a signed-in user who may review (claims and decides under this name).
ReviewerDep = Annotated[str, Depends(_requires(roles.REVIEW))]
StatsViewerDep = Annotated[str, Depends(_requires(roles.STATS))]


def _own_hosts(request: Request) -> set[str]:
    """Where the pages are served from: the request's Host, and the host of Airflow's
    ``[api] base_url`` when one is set (behind a proxy). ``X-Forwarded-Host`` is not trusted:
    any client can send it."""
    from airflow.configuration import conf  # noqa: PLC0415 - in the api-server

    hosts = {request.headers.get("host", "")}
    base = conf.get("api", "base_url", fallback=None) or ""
    if urlsplit(base).netloc:
        hosts.add(urlsplit(base).netloc)
    return hosts - {""}


def same_origin(request: Request) -> None:
    """Refuse a cookie-authenticated POST whose Origin (or Referer) is another site (CSRF)."""
    if request.headers.get("authorization", "").lower().startswith("bearer "):
        return  # an explicit token is not sent by a browser on its own
    source = request.headers.get("origin") or request.headers.get("referer") or ""
    if not source or urlsplit(source).netloc not in _own_hosts(request):
        raise HTTPException(403, "This form must be sent from the Earmark pages themselves.")


class FormSizeLimit:
    """Refuse a request body over ``limit`` bytes with 413 before anything parses it (FastAPI
    reads a form before the route's dependencies, the login check among them)."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await self._too_large(scope, receive, send)
            return
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > self.limit:
                await self._too_large(scope, receive, send)
                return
        body = b"".join(chunks)

        async def replay() -> dict[str, Any]:
            nonlocal body
            sent, body = body, b""
            return {"type": "http.request", "body": sent, "more_body": False}

        await self.app(scope, replay, send)

    async def _too_large(self, scope: Any, receive: Any, send: Any) -> None:
        response = Response(
            f"A form sent to the Earmark pages is at most {self.limit // 1024} KiB.",
            status_code=413,
            media_type="text/plain",
            headers=SECURITY_HEADERS,
        )
        await response(scope, receive, send)


# ---- rendering -------------------------------------------------------------------------------
def _base(request: Request) -> str:
    return request.scope.get("root_path", "").rstrip("/")


def render(request: Request, template: str, status_code: int = 200, **context: Any) -> Response:
    """A page from ``templates/``; ``base`` is the mount prefix for links."""
    context.setdefault("reviewer", None)
    return TEMPLATES.TemplateResponse(
        request,
        template,
        {"base": _base(request), **context},
        status_code=status_code,
        headers=SECURITY_HEADERS,
    )


def message(
    request: Request,
    status_code: int,
    title: str,
    text: str,
    *,
    link: str | None = None,
    link_text: str = "Back to RA review",
) -> Response:
    """A friendly message page (errors included)."""
    return render(
        request,
        "message.html",
        status_code,
        title=title,
        message=text,
        kind="error" if status_code >= 400 else "",
        page="",
        link=link if link is not None else f"{_base(request)}/review",
        link_text=link_text,
    )


def _verdict(status: day_status.DayStatus) -> tuple[str, str]:
    """(badge class, words) for where the day stands against its deadline."""
    if status.nothing_delivered:
        if datetime.now(UTC) > datetime.fromisoformat(status.deadline):
            return "bad", "Nothing delivered by the deadline"
        return "warn", "Nothing delivered for this day yet"
    if status.complete:
        return (
            ("ok", "Complete, on time")
            if status.on_time
            else ("bad", "Complete, AFTER the deadline")
        )
    if status.on_time is None:
        return "warn", "In progress, ETA unknown"
    eta = _when(status.eta or "")
    return (
        ("ok", f"In progress, ETA {eta}: on time")
        if status.on_time
        else ("bad", f"INCOMPLETE, ETA {eta}: after the deadline")
    )


# ---- the app ---------------------------------------------------------------------------------
def _policy_html(settings: Settings, policy: str) -> str | None:
    text = queries.policy_text(settings.policies_dir, policy)
    return None if text is None else queries.policy_html(text)


def _last_action(store: Store, reviewer: str) -> queries.LastAction | None:
    return queries.last_action(store, reviewer, review.DEFAULT_UNDO_WINDOW)


def _next_or_back(request: Request, store: Store, reviewer: str, claim: bool) -> Response:
    """The next item, claimed, when asked for and one is left; else the review page."""
    item = review.claim_next(store, reviewer) if claim else None
    if item is not None:
        log.info("review item %s claimed by %s", item.id, reviewer)
        return RedirectResponse(f"{_base(request)}/review/{item.id}", status_code=303)
    empty = "?empty=1" if claim else ""
    return RedirectResponse(f"{_base(request)}/review{empty}", status_code=303)


def _error_pages(app: FastAPI) -> None:
    """Errors as the pages' own message page, never raw JSON."""

    @app.exception_handler(review.ReviewError)
    async def review_error(request: Request, error: review.ReviewError) -> Response:
        return message(request, 409, "That didn't work", str(error))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> Response:
        """A page that says what was wrong, never echoing what was sent (a note may quote a
        recording)."""
        problems = error.errors()
        if any(p.get("loc", ("",))[0] == "path" for p in problems):
            return message(request, 404, "Not found", "There is no such page or item.")
        fields = sorted({str(p.get("loc", ("", "form"))[-1]) for p in problems})
        if "note" in fields:
            text = f"The note is longer than {NOTE_MAX} characters. Nothing was saved."
        else:
            text = f"The form was incomplete or invalid ({', '.join(fields)}). Nothing was saved."
        return message(request, 422, "That didn't work", text)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> Response:
        if error.status_code == 401:
            from airflow.api_fastapi.app import get_auth_manager  # noqa: PLC0415

            login = get_auth_manager().get_url_login(next_url=str(request.url.path))
            return message(
                request,
                401,
                "Please sign in",
                "The Earmark pages need your Airflow login.",
                link=login,
                link_text="Sign in",
            )
        return message(request, error.status_code, "That didn't work", str(error.detail))


def _history_routes(app: FastAPI) -> None:
    """A reviewer's own decisions and their corrections (before ``/review/{item_id}``)."""

    @app.get("/review/history", response_class=HTMLResponse, name="history")
    def history_page(
        request: Request, settings: SettingsDep, store: StoreDep, reviewer: ReviewerDep
    ) -> Response:
        """The reviewer's own decisions, newest first; recent ones can still be corrected."""
        window = timedelta(minutes=settings.review_correct_minutes)
        return render(
            request,
            "history.html",
            page="history",
            title="Your decisions",
            reviewer=reviewer,
            past=queries.reviewer_history(store, reviewer, window),
            window_minutes=int(settings.review_correct_minutes),
            decisions=list(DECISION_LABELS.items()),
            labels=DECISION_LABELS,
            note_max=NOTE_MAX,
        )

    @app.post("/review/{item_id}/correct", dependencies=[Depends(same_origin)])
    def correct(
        request: Request,
        item_id: int,
        settings: SettingsDep,
        store: StoreDep,
        reviewer: ReviewerDep,
        decision: Annotated[str, Form()],
        note: Annotated[str, Form(max_length=NOTE_MAX)] = "",
    ) -> Response:
        """Change the reviewer's own recent decision (a new event; the first one stays)."""
        window = timedelta(minutes=settings.review_correct_minutes)
        review.correct(store, item_id, reviewer, decision, note.strip(), window=window)
        log.info("review item %s corrected by %s: %s", item_id, reviewer, decision)
        return RedirectResponse(f"{_base(request)}/review/history", status_code=303)


def _hand_back_routes(app: FastAPI) -> None:
    """Giving an item back: release it, skip it, take a skip back."""

    @app.post("/review/{item_id}/release", dependencies=[Depends(same_origin)])
    def release(request: Request, item_id: int, store: StoreDep, reviewer: ReviewerDep) -> Response:
        """Give the item back to the queue undecided, and stop."""
        review.release(store, item_id, reviewer)
        log.info("review item %s released by %s", item_id, reviewer)
        return RedirectResponse(f"{_base(request)}/review", status_code=303)

    @app.post("/review/{item_id}/skip", dependencies=[Depends(same_origin)])
    def skip(request: Request, item_id: int, store: StoreDep, reviewer: ReviewerDep) -> Response:
        """Leave the item to someone else (recorded) and open the next one."""
        review.skip(store, item_id, reviewer)
        log.info("review item %s skipped by %s", item_id, reviewer)
        return _next_or_back(request, store, reviewer, True)

    @app.post("/review/{item_id}/unskip", dependencies=[Depends(same_origin)])
    def unskip(request: Request, item_id: int, store: StoreDep, reviewer: ReviewerDep) -> Response:
        """Take back a skip made a moment ago (a stray key): the item opens again, and the
        item the skip opened goes back to the queue."""
        review.unskip(store, item_id, reviewer)
        log.info("review item %s: skip undone by %s", item_id, reviewer)
        return RedirectResponse(f"{_base(request)}/review/{item_id}", status_code=303)


def _review_routes(app: FastAPI) -> None:
    """The review pages: queue, claim, item, decide, extend, audio, script."""

    @app.get("/review", response_class=HTMLResponse, name="review")
    def review_page(
        request: Request, store: StoreDep, reviewer: ReviewerDep, empty: bool = False
    ) -> Response:
        """The reviewer's held item, or a button to claim the next; the queue's counts after
        lapsed claims went back to it."""
        review.release_expired(store)
        return render(
            request,
            "review.html",
            page="review",
            title="RA review",
            reviewer=reviewer,
            held=queries.held_item(store, reviewer),
            last=_last_action(store, reviewer),
            labels=DECISION_LABELS,
            queue=queries.queue_counts(store),
            recent=queries.reviewer_history(store, reviewer, timedelta(0), limit=5),
            empty=empty,
            lease_minutes=int(review.DEFAULT_LEASE.total_seconds() // 60),
        )

    @app.post("/review/claim", dependencies=[Depends(same_origin)])
    def claim(request: Request, store: StoreDep, reviewer: ReviewerDep) -> Response:
        """Claim the next item (or go back to the one already held)."""
        held = queries.held_item(store, reviewer)
        item = held.item if held else review.claim_next(store, reviewer)
        if item is None:
            return RedirectResponse(f"{_base(request)}/review?empty=1", status_code=303)
        log.info("review item %s claimed by %s", item.id, reviewer)
        return RedirectResponse(f"{_base(request)}/review/{item.id}", status_code=303)

    @app.get("/review/{item_id}", response_class=HTMLResponse, name="item")
    def item_page(
        request: Request,
        item_id: int,
        settings: SettingsDep,
        store: StoreDep,
        reviewer: ReviewerDep,
    ) -> Response:
        """The held item: audio, transcript, policy and the decision form."""
        held = queries.item_detail(store, item_id, reviewer)
        return render(
            request,
            "item.html",
            page="review",
            title=f"Item #{item_id}",
            reviewer=reviewer,
            held=held,
            note_max=NOTE_MAX,
            decisions=list(DECISION_LABELS.items()),
            policy=_policy_html(settings, held.item.policy),
            threshold=settings.flag_threshold,
            left=queries.left_for_day(store, held.run_date),
            last=_last_action(store, reviewer),
            labels=DECISION_LABELS,
            lease_minutes=int(review.DEFAULT_LEASE.total_seconds() // 60),
        )

    @app.post("/review/{item_id}/decide", dependencies=[Depends(same_origin)])
    def decide(
        request: Request,
        item_id: int,
        store: StoreDep,
        reviewer: ReviewerDep,
        settings: SettingsDep,
        decision: Annotated[str, Form()],
        note: Annotated[str, Form(max_length=NOTE_MAX)] = "",
        then: Annotated[str, Form()] = "stop",
    ) -> Response:
        """Record the decision on a held item; then the next item at once (``then=next``, the
        page's main button) or back to the review page. After a lapsed lease the item is
        claimed again first when the caller's was its latest claim and it is still free, so
        nothing typed is lost; when another reviewer took it, the page says so (naming no one)
        and gives the note back to its writer. Nobody decides an item they never claimed."""
        qa = settings.review_qa_share
        note = note.strip()
        try:
            review.resolve(store, item_id, reviewer, decision, note, qa_share=qa)
        except review.ReviewError:
            if decision not in review.DECISIONS:
                raise
            outcome = review.reclaim(store, item_id, reviewer)
            if outcome is review.Reclaim.TAKEN:
                return message(
                    request,
                    409,
                    "Your claim lapsed",
                    f"Item {item_id} was taken by another reviewer after your claim lapsed; your"
                    " decision was not recorded."
                    + (f" Your note, to copy: {note}" if note else ""),
                )
            if outcome is not review.Reclaim.CLAIMED:
                raise
            review.resolve(store, item_id, reviewer, decision, note, qa_share=qa)
        log.info("review item %s resolved by %s: %s", item_id, reviewer, decision)
        return _next_or_back(request, store, reviewer, then == "next")

    @app.post("/review/{item_id}/extend", dependencies=[Depends(same_origin)])
    def extend(item_id: int, store: StoreDep, reviewer: ReviewerDep) -> Response:
        """Renew the claim while the page is in use; the new end of the lease."""
        until = review.extend(store, item_id, reviewer)
        return JSONResponse({"until": until.isoformat()}, headers=SECURITY_HEADERS)

    @app.get("/static/review.js", name="review_js")
    def review_js() -> Response:
        """The item page's script (keyboard, speed, countdown, draft), from this origin."""
        return Response(REVIEW_JS, media_type="text/javascript", headers=SECURITY_HEADERS)

    @app.get("/audio/{item_id}", name="audio")
    def audio(item_id: int, store: StoreDep, reviewer: ReviewerDep) -> Response:
        """The recording, streamed (Range requests too) to the claim holder only."""
        try:
            held = queries.held_by(store, item_id, reviewer)
        except review.ReviewError as error:
            raise HTTPException(403, str(error)) from error
        path = Path(held.item.audio_path)
        if not path.is_file():
            raise HTTPException(404, f"the recording of item {item_id} is missing")
        media = AUDIO_TYPES.get((held.audio_format or "").upper(), "application/octet-stream")
        return FileResponse(
            path, media_type=media, content_disposition_type="inline", headers=SECURITY_HEADERS
        )


def create_app() -> FastAPI:
    """The Earmark pages; every route requires an authenticated Airflow user."""
    app = FastAPI(
        title="Earmark RA review",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        dependencies=[Depends(requires_access_view(AccessView.PLUGINS))],
    )

    app.add_middleware(FormSizeLimit, limit=FORM_MAX_BYTES)

    _error_pages(app)

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
            verdict=_verdict(status),
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
                link=f"{_base(request)}/?date={run_date}",
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

    _history_routes(app)
    _hand_back_routes(app)
    _review_routes(app)
    return app


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
