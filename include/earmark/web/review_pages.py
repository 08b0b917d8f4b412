"""The review pages: the queue, claim, the held item (audio, transcript, policy), decide, give
back, extend, and the reviewer's own history with its corrections.

Every route needs the ``Earmark Review`` capability (``ReviewerDep``); the reviewer is the
authenticated Airflow user. Routes stay thin: every change to the queue is
``earmark.review.queue``'s, the reads only the pages need are ``earmark.web.queries``'.
Transcript text goes into the item page only, never into a title, URL or log line.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Form, HTTPException, Request
from fastapi.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
)

from earmark.config import Settings
from earmark.review import listens
from earmark.review import queue as review
from earmark.store.db import Store
from earmark.web import queries
from earmark.web.shared import (
    SECURITY_HEADERS,
    ReviewerDep,
    SettingsDep,
    StoreDep,
    base_path,
    message,
    render,
    same_origin,
)

log = logging.getLogger(__name__)

DECISION_LABELS = {"violation": "Violation", "no_violation": "No violation", "unclear": "Unclear"}
NOTE_MAX = 2000
REVIEW_JS = (Path(__file__).parent / "templates" / "review.js").read_text(encoding="utf-8")
AUDIO_TYPES = {
    "WAV": "audio/wav",
    "WAVEX": "audio/wav",
    "FLAC": "audio/flac",
    "OGG": "audio/ogg",
    "MP3": "audio/mpeg",
}


def _policy_html(settings: Settings, store: Store, held: queries.HeldItem) -> dict[str, Any]:
    """The policy the item was scored under, as HTML, with a note when it could not be kept."""
    shown = queries.item_policy(store, settings.policies_dir, held)
    html = None if shown.text is None else queries.policy_html(shown.text)
    return {"policy": html, "policy_note": shown.note}


def _last_action(store: Store, reviewer: str) -> queries.LastAction | None:
    return queries.last_action(store, reviewer, review.DEFAULT_UNDO_WINDOW)


def _next_or_back(request: Request, store: Store, reviewer: str, claim: bool) -> Response:
    """The next item, claimed, when asked for and one is left; else the review page."""
    item = review.claim_next(store, reviewer) if claim else None
    if item is not None:
        log.info("review item %s claimed by %s", item.id, reviewer)
        return RedirectResponse(f"{base_path(request)}/review/{item.id}", status_code=303)
    empty = "?empty=1" if claim else ""
    return RedirectResponse(f"{base_path(request)}/review{empty}", status_code=303)


def add_review_routes(app: FastAPI) -> None:
    """The review pages, in the order their paths must be matched (``/review/history``
    before ``/review/{item_id}``)."""
    _history_routes(app)
    _hand_back_routes(app)
    _review_routes(app)


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
        return RedirectResponse(f"{base_path(request)}/review/history", status_code=303)


def _hand_back_routes(app: FastAPI) -> None:
    """Giving an item back: release it, skip it, take a skip back."""

    @app.post("/review/{item_id}/release", dependencies=[Depends(same_origin)])
    def release(request: Request, item_id: int, store: StoreDep, reviewer: ReviewerDep) -> Response:
        """Give the item back to the queue undecided, and stop."""
        review.release(store, item_id, reviewer)
        log.info("review item %s released by %s", item_id, reviewer)
        return RedirectResponse(f"{base_path(request)}/review", status_code=303)

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
        return RedirectResponse(f"{base_path(request)}/review/{item_id}", status_code=303)


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
            return RedirectResponse(f"{base_path(request)}/review?empty=1", status_code=303)
        log.info("review item %s claimed by %s", item.id, reviewer)
        return RedirectResponse(f"{base_path(request)}/review/{item.id}", status_code=303)

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
            **_policy_html(settings, store, held),
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
    def audio(item_id: int, request: Request, store: StoreDep, reviewer: ReviewerDep) -> Response:
        """The recording, streamed (Range requests too) to the claim holder only; every fetch
        is recorded with the claim (who listened, when)."""
        try:
            held = queries.held_by(store, item_id, reviewer)
            listens.record_listen(store, item_id, reviewer, request.headers.get("range"))
        except review.ReviewError as error:
            raise HTTPException(403, str(error)) from error
        path = Path(held.item.audio_path)
        if not path.is_file():
            raise HTTPException(404, f"the recording of item {item_id} is missing")
        media = AUDIO_TYPES.get((held.audio_format or "").upper(), "application/octet-stream")
        return FileResponse(
            path, media_type=media, content_disposition_type="inline", headers=SECURITY_HEADERS
        )
