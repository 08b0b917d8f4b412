"""Airflow plugin: the Earmark RA review pages at /earmark, and an "RA review" nav entry.

The app lives in ``earmark.web.app`` (every route behind Airflow's auth). Schedulers, DAG
processors and task processes load plugins too; the app is built on its first request, so they
never import FastAPI or the API's security module for it.
"""

from __future__ import annotations

from typing import Any, ClassVar

from airflow.plugins_manager import AirflowPlugin


class LazyReviewApp:
    """An ASGI app that builds ``earmark.web.app.create_app()`` when first called."""

    def __init__(self) -> None:
        self._app: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self._app is None:
            from earmark.web.app import create_app  # noqa: PLC0415 - only in the api-server

            self._app = create_app()
        await self._app(scope, receive, send)


class EarmarkReviewPlugin(AirflowPlugin):
    """Mounts the review app and links it from Airflow's navigation."""

    name = "earmark_review"
    fastapi_apps: ClassVar[list[dict[str, Any]]] = [
        {"app": LazyReviewApp(), "url_prefix": "/earmark", "name": "Earmark RA review"}
    ]
    external_views: ClassVar[list[dict[str, Any]]] = [
        {
            "name": "RA review",
            "href": "/earmark/review",
            "destination": "nav",
            "url_route": "earmark-review",
        }
    ]
