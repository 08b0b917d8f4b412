"""Airflow plugin: the Earmark RA review pages at /earmark, and an "RA review" nav entry.

The app lives in ``earmark.web.app`` (every route behind Airflow's auth). Schedulers, DAG
processors and task processes load plugins too; the app is built on its first request, so they
never import FastAPI or the API's security module for it.
"""

from __future__ import annotations

from typing import Any

from airflow.plugins_manager import AirflowPlugin


class LazyReviewApp:
    """An ASGI app that builds ``earmark.web.app.create_app()`` when first called."""

    def __init__(self) -> None:
        self._app: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self._app is None:
            from earmark.web.app import create_app

            self._app = create_app()
        await self._app(scope, receive, send)


class SlashRedirect:
    """``/earmark`` (no slash) answered with a redirect to ``/earmark/``: Airflow's own routes
    would otherwise answer it with the UI's "page not found"."""

    def __init__(self, app: Any, prefix: str = "/earmark") -> None:
        self.app = app
        self.prefix = prefix

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        root = scope.get("root_path", "")
        if scope["type"] == "http" and path in (self.prefix, root + self.prefix):
            from starlette.responses import RedirectResponse

            query = scope.get("query_string", b"").decode("latin-1")
            target = root + self.prefix + "/" + (f"?{query}" if query else "")
            await RedirectResponse(target, status_code=308)(scope, receive, send)
            return
        await self.app(scope, receive, send)


class EarmarkReviewPlugin(AirflowPlugin):
    """Mounts the review app and links it from Airflow's navigation."""

    name = "earmark_review"
    # Airflow declares these as instance attributes (list[Any]) and reads them off the class.
    fastapi_apps = [  # noqa: RUF012
        {"app": LazyReviewApp(), "url_prefix": "/earmark", "name": "Earmark RA review"}
    ]
    fastapi_root_middlewares = [  # noqa: RUF012
        {"middleware": SlashRedirect, "args": [], "kwargs": {}, "name": "earmark_slash_redirect"}
    ]
    external_views = [  # noqa: RUF012
        {
            "name": "RA review",
            "href": "/earmark/review",
            "destination": "nav",
            "url_route": "earmark-review",
        }
    ]
