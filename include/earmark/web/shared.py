"""What every Earmark page shares: settings, the results DB, who the user is and what they may
do, the CSRF check, and the templates with their headers.

The route modules (``day_pages``, ``review_pages``) depend on these; ``app`` puts them
together. Mounted apps are not authenticated by Airflow, so the capability dependencies here
(``ReviewerDep``, ``StatsViewerDep``) sit on top of the app-wide ``requires_access_view``.
"""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from airflow.api_fastapi.core_api.security import GetUserDep
from fastapi import Depends, HTTPException, Request
from fastapi.responses import Response
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, PackageLoader, select_autoescape

from earmark.config import Settings
from earmark.names import printable, printable_text
from earmark.store.db import Store
from earmark.web import roles

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


# ---- rendering -------------------------------------------------------------------------------
def base_path(request: Request) -> str:
    """The mount prefix (``/earmark``) the pages' links start with."""
    return request.scope.get("root_path", "").rstrip("/")


def render(request: Request, template: str, status_code: int = 200, **context: Any) -> Response:
    """A page from ``templates/``; ``base`` is the mount prefix for links."""
    context.setdefault("reviewer", None)
    return TEMPLATES.TemplateResponse(
        request,
        template,
        {"base": base_path(request), **context},
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
        link=link if link is not None else f"{base_path(request)}/review",
        link_text=link_text,
    )
