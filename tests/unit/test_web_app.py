"""The RA review pages in-process: ``create_app()`` under Starlette's TestClient, in seconds.

No api-server, no Postgres, no browser (``tests/integration/test_review_ui.py`` is the slow real
thing). The app is mounted at ``/earmark`` under a bare FastAPI app, as Airflow mounts it, so
links and redirects carry the prefix. Only authentication is replaced: Airflow's ``get_user``
(who sent the request) is overridden to return a ``SimpleAuthManagerUser`` named by a test
header; the router-level ``requires_access_view(PLUGINS)`` and the ``Earmark Review`` /
``Earmark Stats`` checks (``earmark.web.roles.allowed``) run for real against Airflow's simple
auth manager, created in-process (``create_auth_manager()``; its ``init()``, which writes a
password file, is not needed for authorisation). ``get_store`` returns a migrated SQLite store
seeded by ``earmark_dev.review_server.seed_items``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from earmark.store.db import Store
from earmark_dev.review_server import seed_items
from earmark_dev.tiny_models import TINY_POLICIES
from fastapi import FastAPI, HTTPException, Request
from fastapi.testclient import TestClient

TIMEZONE = "Europe/London"
USER_HEADER = "X-Earmark-Test-User"
#: Simple auth manager roles: "user" reviews, "op" also sees the stats, "viewer" neither;
#: "norole" has no role at all (not even the day page).
USERS: dict[str, str | None] = {
    "ana": "user",
    "ben": "user",
    "cleo": "op",
    "dave": "viewer",
    "norole": None,
}
# (member, policy, score, transcript): the transcripts are secrets no log may show.
SEED = [
    ("a/one.wav", "harassment", 0.91, "SECRET-TRANSCRIPT-ONE you will regret this"),
    ("a/two.wav", "self_harm", 0.83, "SECRET-TRANSCRIPT-TWO nobody would notice"),
    ("b/three.wav", "harassment", 0.72, "SECRET-TRANSCRIPT-THREE I know where you live"),
    ("b/four.wav", "harassment", 0.64, "SECRET-TRANSCRIPT-FOUR just a friendly chat"),
]


@pytest.fixture(scope="session")
def airflow_home(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A throwaway AIRFLOW_HOME before Airflow is first imported (as tests/conftest's dagbag
    does), so importing the app never writes into ~/airflow."""
    os.environ.setdefault("AIRFLOW_HOME", str(tmp_path_factory.mktemp("airflow-home")))
    return os.environ["AIRFLOW_HOME"]


@dataclass
class Web:
    """The review app in-process, its results store and the seeded items."""

    app: FastAPI  # the review app itself (its dependency_overrides)
    root: FastAPI  # the app it is mounted in at /earmark
    store: Store
    run_date: str
    items: dict[str, int]

    def client(
        self, user: str | None = None, origin: str | None = "http://testserver"
    ) -> TestClient:
        """A client acting as ``user`` (anonymous: None), sending the pages' own Origin (as a
        browser posting a form does) unless told otherwise; redirects are not followed."""
        headers = {USER_HEADER: user} if user else {}
        if origin:
            headers["Origin"] = origin
        return TestClient(self.root, headers=headers, follow_redirects=False)

    def row(self, item_id: int) -> sa.Row:
        return self.store.rows("SELECT * FROM review_queue WHERE id = :i", i=item_id)[0]

    def events(self, item_id: int) -> list[tuple[str, str]]:
        from earmark.review.queue import history

        return [(e.action, e.reviewer) for e in history(self.store, item_id=item_id)]


def _test_user(request: Request) -> Any:
    """Stands in for Airflow's ``get_user``: the user the test header names, with their role;
    401 without one, as Airflow answers a request without a token."""
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    name = request.headers.get(USER_HEADER)
    if name is None:
        raise HTTPException(401, "Not authenticated")
    return SimpleAuthManagerUser(username=name, role=USERS[name])


def _make_web(store: Store, run_date: str, items: dict[str, int], authenticate: bool) -> Web:
    from airflow.api_fastapi.core_api.security import get_user
    from earmark.web.app import create_app
    from earmark.web.shared import get_store

    app = create_app()
    app.dependency_overrides[get_store] = lambda: store
    if authenticate:  # who the user is; what they may do stays Airflow's and roles.allowed's
        app.dependency_overrides[get_user] = _test_user
    root = FastAPI()
    root.mount("/earmark", app)
    return Web(app, root, store, run_date, items)


@pytest.fixture
def web(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    airflow_home: str,
) -> Iterator[Web]:
    """The app on a seeded SQLite results DB (``SEED``, or the rows an indirect
    parametrization gives); ``EARMARK_REVIEW_QA_SHARE`` 0 unless the test sets it."""
    seed = getattr(request, "param", SEED)
    for name, value in {
        "EARMARK_POLICIES_DIR": str(TINY_POLICIES),
        "EARMARK_TIMEZONE": TIMEZONE,
        "EARMARK_FLAG_THRESHOLD": "0.42",
        "EARMARK_REVIEW_QA_SHARE": "0",
        "EARMARK_REVIEW_SAMPLE_SHARE": "0",
        "EARMARK_DATA_ROOT": str(tmp_path / "data"),
        "AIRFLOW__CORE__AUTH_MANAGER": (
            "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
        ),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
        "AIRFLOW__API__BASE_URL": "",
    }.items():
        monkeypatch.setenv(name, value)
    from airflow.api_fastapi import app as airflow_app

    # The simple auth manager, created (not init()-ed: that writes its password file) and
    # put back as it was afterwards.
    monkeypatch.setattr(airflow_app._AuthManagerState, "instance", None)
    airflow_app.create_auth_manager()

    store = Store.from_url(f"sqlite:///{tmp_path / 'results.db'}")
    store.migrate()
    run_date = datetime.now(ZoneInfo(TIMEZONE)).date().isoformat()
    items = seed_items(store, tmp_path / "data" / "audio" / run_date, run_date, seed)
    try:
        yield _make_web(store, run_date, items, authenticate=True)
    finally:
        store.dispose()


def _claim(client: TestClient) -> int:
    response = client.post("/earmark/review/claim")
    assert response.status_code == 303, response.text
    return int(response.headers["location"].rsplit("/", 1)[1])


# ---- 1. the flag's item page -----------------------------------------------------------------
def test_item_page_shows_the_holder_everything_and_others_nothing(
    web: Web, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    ana, ben = web.client("ana"), web.client("ben")
    one = _claim(ana)
    assert one == web.items["a/one.wav"]  # the highest score first

    page = ana.get(f"/earmark/review/{one}")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    text = page.text
    assert "Signed in as <strong>ana</strong>" in text
    assert "<dt>Score</dt><dd>0.910 " in text and "(flagged at 0.42)" in text
    assert "<dt>Recording</dt><dd>day.tar:a/one.wav</dd>" in text
    assert 'id="transcript">SECRET-TRANSCRIPT-ONE you will regret this' in text
    assert 'id="blind"' not in text and "Blind review" not in text
    assert '<div class="policy" id="policy"><h1>' in text  # the tiny policy, as HTML
    assert f'src="/earmark/audio/{one}"' in text
    assert f'action="/earmark/review/{one}/decide"' in text
    assert f'Left for {web.run_date}</dt><dd id="left">4 ' in text
    assert "(harassment 3, self_harm 1)" in text
    assert "no-store" in page.headers["cache-control"]
    assert "frame-ancestors 'self'" in page.headers["content-security-policy"]

    # Another reviewer: refused, and nothing of the item in the answer.
    refused = ben.get(f"/earmark/review/{one}")
    assert refused.status_code == 409 and "text/html" in refused.headers["content-type"]
    assert "not held by ben" in refused.text
    for secret in ("SECRET", "one.wav", "0.910"):
        assert secret not in refused.text

    # The audio streams to the holder only.
    wav = Path(
        web.store.scalar("SELECT path FROM audio_files WHERE id = :f", f=web.row(one).file_id)
    )
    audio = ana.get(f"/earmark/audio/{one}")
    assert audio.status_code == 200 and audio.headers["content-type"] == "audio/wav"
    assert audio.content == wav.read_bytes() and wav.name == "one.wav"
    assert ben.get(f"/earmark/audio/{one}").status_code == 403
    assert ana.get(f"/earmark/audio/{one}", headers={"Range": "bytes=0-99"}).status_code == 206
    fetches = web.store.rows(
        "SELECT reviewer, byte_range, claim_event_id FROM audio_fetches WHERE item_id = :i", i=one
    )
    assert [(f.reviewer, f.byte_range) for f in fetches] == [("ana", None), ("ana", "bytes=0-99")]
    assert all(f.claim_event_id is not None for f in fetches)
    assert "SECRET" not in caplog.text  # transcripts never reach a log line


# ---- 2. blind pages --------------------------------------------------------------------------
BLIND_SEED = [("a/one.wav", "harassment", 0.91, "SECRET-TRANSCRIPT-ONE you will regret this")]
FIRST_NOTE = "FIRST-NOTE the first reviewer heard a threat"


@pytest.mark.parametrize("web", [BLIND_SEED], indirect=True)
def test_second_reviews_and_samples_are_blind(web: Web, monkeypatch: pytest.MonkeyPatch) -> None:
    """A qa second review and a below-threshold sample show the transcript and the policy but
    not the score, the threshold, the recording or the first decision's note."""
    monkeypatch.setenv("EARMARK_REVIEW_QA_SHARE", "1")  # read at request time
    one = web.items["a/one.wav"]
    file_id = web.row(one).file_id
    with web.store.begin() as conn:  # a sample of the same recording under another policy
        sample = conn.execute(
            sa.text(
                "INSERT INTO review_queue (file_id, policy, policy_sha, model, score, kind)"
                " VALUES (:f, 'self_harm', 'sha', 'tiny', 0.123, 'sample') RETURNING id"
            ),
            {"f": file_id},
        ).scalar_one()
    ana, ben = web.client("ana"), web.client("ben")
    assert _claim(ana) == one
    decided = ana.post(
        f"/earmark/review/{one}/decide", data={"decision": "violation", "note": FIRST_NOTE}
    )
    assert decided.status_code == 303
    qa = web.store.scalar("SELECT id FROM review_queue WHERE first_item_id = :i", i=one)
    assert qa is not None and web.row(qa).kind == "qa"
    assert web.row(qa).score == pytest.approx(0.91)  # the score is in the row, not the page

    # The second review goes to another reviewer (flags first, then qa, then samples).
    assert _claim(ben) == qa
    blind = ben.get(f"/earmark/review/{qa}")
    assert blind.status_code == 200
    _assert_blind(blind.text, hidden=("0.910", FIRST_NOTE, "FIRST-NOTE"))
    assert 'id="transcript">SECRET-TRANSCRIPT-ONE' in blind.text  # what is to be judged

    # ben decides it and goes on to the sample, also blind.
    following = ben.post(
        f"/earmark/review/{qa}/decide", data={"decision": "no_violation", "then": "next"}
    )
    assert following.status_code == 303
    assert following.headers["location"] == f"/earmark/review/{sample}"
    page = ben.get(f"/earmark/review/{sample}")
    assert page.status_code == 200
    _assert_blind(page.text, hidden=("0.123", "0.910", FIRST_NOTE, "FIRST-NOTE"))
    assert f"Recorded on item #{qa}: <strong>No violation</strong>" in page.text


def _assert_blind(text: str, hidden: tuple[str, ...]) -> None:
    assert 'id="blind">Blind review' in text
    assert "<dt>Score</dt>" not in text and "flagged at" not in text and "0.42" not in text
    assert "<dt>Recording</dt>" not in text and "one.wav" not in text and "day.tar" not in text
    assert "<dt>Policy</dt>" in text  # the page is otherwise whole
    for secret in hidden:
        assert secret not in text, secret


# ---- 3. redirects ----------------------------------------------------------------------------
@pytest.mark.parametrize("prefix", ["/earmark", ""])
def test_claim_and_decide_redirect_within_the_mount(web: Web, prefix: str) -> None:
    """Locations carry the mount prefix (the request's root_path); at the root, none."""
    headers = {USER_HEADER: "ana", "Origin": "http://testserver"}
    ana = TestClient(web.root if prefix else web.app, headers=headers, follow_redirects=False)
    one, two, three = (web.items[m] for m in ("a/one.wav", "a/two.wav", "b/three.wav"))

    claimed = ana.post(f"{prefix}/review/claim")
    assert (claimed.status_code, claimed.headers["location"]) == (303, f"{prefix}/review/{one}")
    again = ana.post(f"{prefix}/review/claim")  # held already: back to it, nothing new claimed
    assert again.headers["location"] == f"{prefix}/review/{one}"
    assert web.row(two).status == "pending"

    then_next = ana.post(
        f"{prefix}/review/{one}/decide", data={"decision": "violation", "then": "next"}
    )
    assert then_next.status_code == 303
    assert then_next.headers["location"] == f"{prefix}/review/{two}"
    assert (web.row(one).status, web.row(two).claimed_by) == ("resolved", "ana")

    stop = ana.post(f"{prefix}/review/{two}/decide", data={"decision": "unclear", "then": "stop"})
    assert (stop.status_code, stop.headers["location"]) == (303, f"{prefix}/review")
    assert web.row(three).status == "pending"  # stop claims nothing
    page = ana.get(f"{prefix}/review")
    assert f'href="{prefix}/review/history"' in page.text
    assert f"Recorded on item #{two}: <strong>Unclear</strong>" in page.text


# ---- 4. refusals -----------------------------------------------------------------------------
def test_refusals_change_nothing_and_echo_nothing(web: Web) -> None:
    ana, ben = web.client("ana"), web.client("ben")
    one, two, three = (web.items[m] for m in ("a/one.wav", "a/two.wav", "b/three.wav"))
    assert _claim(ana) == one and _claim(ben) == two

    # 409: ben decides an item nobody claimed, and ana's.
    for item in (three, one):
        refused = ben.post(f"/earmark/review/{item}/decide", data={"decision": "violation"})
        assert refused.status_code == 409 and "text/html" in refused.headers["content-type"]
        assert "not held by ben" in refused.text and "ana" not in refused.text
    assert (web.row(three).status, web.row(three).claimed_by, web.row(three).decision) == (
        "pending",
        None,
        None,
    )
    assert (web.row(one).status, web.row(one).claimed_by) == ("claimed", "ana")
    assert web.events(three) == [] and web.events(one) == [("claim", "ana")]

    # 413: a body over 64 KiB, declared or streamed, before anything parses it.
    huge = ana.post(
        f"/earmark/review/{one}/decide",
        content=b"decision=violation&note=" + b"x" * (64 * 1024),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert huge.status_code == 413 and "at most 64 KiB" in huge.text
    streamed = ana.post(
        f"/earmark/review/{one}/decide",
        content=iter([b"decision=violation&note=", b"x" * 40_000, b"x" * 40_000]),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert streamed.status_code == 413
    anonymous = web.client(None).post(f"/earmark/review/{one}/decide", content=b"x" * 70_000)
    assert anonymous.status_code == 413  # before the login check too

    # 422: a note over 2,000 characters, not echoed back.
    quoted = "SECRET-NOTE " * 200
    too_long = ana.post(
        f"/earmark/review/{one}/decide", data={"decision": "violation", "note": quoted}
    )
    assert too_long.status_code == 422 and "text/html" in too_long.headers["content-type"]
    assert "longer than 2000 characters" in too_long.text and "SECRET-NOTE" not in too_long.text
    missing = ana.post(f"/earmark/review/{one}/decide", data={"note": "no decision"})
    assert missing.status_code == 422 and "(decision)" in missing.text
    assert "no decision" not in missing.text

    # 404 page (not JSON) for an id that is not a number.
    not_an_id = ana.get("/earmark/review/abc")
    assert not_an_id.status_code == 404 and "text/html" in not_an_id.headers["content-type"]
    assert "no such page or item" in not_an_id.text

    # 403: a form from another site, or with no Origin or Referer at all (CSRF).
    for origin in ("http://evil.example", None):
        forged = web.client("ana", origin=origin).post(
            f"/earmark/review/{one}/decide", data={"decision": "violation"}
        )
        assert forged.status_code == 403 and "Earmark pages themselves" in forged.text

    # Nothing of the above was recorded.
    assert (web.row(one).status, web.row(one).decision, web.row(one).note) == (
        "claimed",
        None,
        None,
    )
    assert web.events(one) == [("claim", "ana")]


# ---- 5. roles --------------------------------------------------------------------------------
def test_roles_decide_who_reviews_and_who_sees_the_stats(web: Web) -> None:
    dave, ana, cleo = web.client("dave"), web.client("ana"), web.client("cleo")
    assert dave.get("/earmark/", params={"date": web.run_date}).status_code == 200
    for method, path in [
        ("GET", "/earmark/review"),
        ("POST", "/earmark/review/claim"),
        ("GET", f"/earmark/review/{web.items['a/one.wav']}"),
        ("GET", f"/earmark/audio/{web.items['a/one.wav']}"),
        ("GET", "/earmark/review/history"),
    ]:
        refused = dave.request(method, path)
        assert refused.status_code == 403, (method, path)
        assert "does not include Earmark Review" in refused.text, (method, path)
        assert "text/html" in refused.headers["content-type"]
    assert web.row(web.items["a/one.wav"]).status == "pending"  # dave claimed nothing
    for viewer in (dave, ana):
        stats = viewer.get("/earmark/stats")
        assert stats.status_code == 403 and "does not include Earmark Stats" in stats.text

    # The positive side: a reviewer reviews, an op sees the stats.
    assert "Claim next" in ana.get("/earmark/review").text
    stats = cleo.get("/earmark/stats", params={"from": web.run_date, "to": web.run_date})
    assert stats.status_code == 200 and 'id="quality"' in stats.text
    assert cleo.get("/earmark/stats", params={"from": "2026-13-01"}).status_code == 400

    # No role at all: the app-wide PLUGINS check (Airflow's own) refuses even the day page.
    assert web.client("norole").get("/earmark/").status_code == 403


def test_anonymous_requests_are_sent_to_airflows_login(web: Web) -> None:
    """With Airflow's real ``get_user`` (no token, no cookie): 401 with a sign-in link."""
    real = _make_web(web.store, web.run_date, web.items, authenticate=False)
    anon = real.client(None)
    for method, path in [
        ("GET", "/earmark/"),
        ("GET", "/earmark/review"),
        ("POST", "/earmark/review/claim"),
        ("GET", "/earmark/audio/1"),
    ]:
        assert anon.request(method, path).status_code == 401, path
    page = anon.get("/earmark/review")
    assert "Sign in" in page.text and 'href="/auth/login?next=' in page.text
    assert web.row(web.items["a/one.wav"]).status == "pending"


# ---- 6. the day page -------------------------------------------------------------------------
def test_day_page_counts_items_per_policy_and_shows_no_scores_or_recordings(web: Web) -> None:
    ana = web.client("ana")
    one = _claim(ana)
    day = web.client("dave").get("/earmark/", params={"date": web.run_date})
    assert day.status_code == 200
    table = day.text.split('id="review-items"')[1].split("</table>")[0]
    version = '<td><code>sha</code> <span class="muted">cope</span></td>'  # the seed's
    assert f'<td>harassment</td>{version}<td>flag</td><td>claimed</td><td class="n">1</td>' in table
    assert f'<td>harassment</td>{version}<td>flag</td><td>pending</td><td class="n">2</td>' in table
    assert f'<td>self_harm</td>{version}<td>flag</td><td>pending</td><td class="n">1</td>' in table
    for secret in ("0.910", "0.830", "0.91", "one.wav", "day.tar", "SECRET"):
        assert secret not in day.text, secret
    assert web.row(one).claimed_by == "ana"
    assert web.client("dave").get("/earmark/", params={"date": "29/11/2026"}).status_code == 400


def test_the_item_page_shows_the_policy_text_the_item_was_scored_under(web: Web) -> None:
    """A policy edited since the item was flagged: the page shows the kept text of the item's
    version; where that text was not kept (an item from before versions were), the current
    file, saying so."""
    ana = web.client("ana")
    one = _claim(ana)
    assert web.row(one).policy == "harassment"
    before = ana.get(f"/earmark/review/{one}").text
    assert 'id="policy-note"' in before  # the seed's version ("sha") is not today's file
    assert "scored under an earlier text of the policy, which was not kept" in before
    assert 'id="policy-version">version sha</span>' in before
    with web.store.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO policy_versions (sha256, policy, text)"
                " VALUES ('sha', 'harassment', '# Harassment as it read then')"
            )
        )
    page = ana.get(f"/earmark/review/{one}").text
    assert '<div class="policy" id="policy"><h1>Harassment as it read then</h1>' in page
    assert 'id="policy-note"' not in page
