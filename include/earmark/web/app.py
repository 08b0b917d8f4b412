"""The RA review FastAPI app: day status, claim, listen and read, decide, history, stats.

Airflow mounts it at ``/earmark`` (``plugins/earmark_review.py``). Mounted apps are not
authenticated by Airflow, so every route depends on ``requires_access_view(PLUGINS)``; the
review pages also need the ``Earmark Review`` capability and the stats ``Earmark Stats``
(``earmark.web.roles``). This module builds the app: the form size limit, the error pages, and
the routes of ``day_pages`` and ``review_pages``, which share ``shared``'s dependencies
(settings, results DB, user) and templates.
"""

from __future__ import annotations

from typing import Any

from airflow.api_fastapi.auth.managers.models.resource_details import AccessView
from airflow.api_fastapi.core_api.security import requires_access_view
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from earmark.review import queue as review
from earmark.web.day_pages import add_day_routes
from earmark.web.review_pages import NOTE_MAX, add_review_routes
from earmark.web.shared import SECURITY_HEADERS, message

FORM_MAX_BYTES = 64 * 1024  # a decision form is a few KiB at most


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
    add_day_routes(app)  # "/", the reports and the stats, as before the review pages
    add_review_routes(app)
    return app
