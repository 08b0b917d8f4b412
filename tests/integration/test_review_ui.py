"""The RA review UI plugin in a real ``airflow api-server``: auth, claims, audio, decisions.

Each test starts the api-server (SimpleAuthManager: ana and ben may review, cleo reviews and sees
the stats, dave only views) on a LocalEnv home with the results DB in a throwaway Postgres
database, seeded with flagged items and tiny WAVs.
The browser test drives Debian's headless Chromium (``.ci/install-system-packages.sh``) with
Playwright.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
import sqlalchemy as sa
from earmark.store.db import Store
from earmark_dev.localenv import LocalEnv
from earmark_dev.review_server import ReviewServer, seed_items, start_review_server

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

# Simple auth manager roles: "user" may review, "op" also sees the stats, "viewer" neither.
USERS = {"ana": "user", "ben": "user", "cleo": "op", "dave": "viewer"}
CHROMIUM = Path("/usr/bin/chromium")
# (member, policy, score, transcript): the transcripts are secrets the logs must never show.
SEED = [
    ("a/one.wav", "harassment", 0.91, "SECRET-TRANSCRIPT-ONE you will regret this"),
    ("a/two.wav", "self_harm", 0.83, "SECRET-TRANSCRIPT-TWO nobody would notice"),
    ("b/three.wav", "harassment", 0.72, "SECRET-TRANSCRIPT-THREE I know where you live"),
    ("b/four.wav", "harassment", 0.64, "SECRET-TRANSCRIPT-FOUR just a friendly chat"),
]


@dataclass
class UI:
    """A running api-server with the plugin, and what the tests need to talk to it."""

    server: ReviewServer
    store: Store
    run_date: str
    items: dict[str, int]

    @property
    def base(self) -> str:
        return self.server.base

    @property
    def env(self) -> LocalEnv:
        return self.server.env

    @property
    def log(self) -> Path:
        return self.server.log

    @property
    def passwords(self) -> dict[str, str]:
        return self.server.passwords

    def token(self, user: str) -> str:
        return self.server.token(user)

    def client(self, user: str | None = None) -> httpx.Client:
        return self.server.client(user)

    def row(self, item_id: int) -> sa.Row:
        return self.store.rows("SELECT * FROM review_queue WHERE id = :i", i=item_id)[0]


@pytest.fixture
def ui(request: pytest.FixtureRequest, tmp_path: Path, pg_url: str) -> Iterator[UI]:
    """The api-server on a fresh LocalEnv home, results DB in Postgres, seeded (``SEED``, or
    the test's ``@pytest.mark.seed(rows)``); no second reviews unless the test's
    ``@pytest.mark.ui_env(...)`` sets the share."""
    marker = request.node.get_closest_marker("seed")
    seed = marker.args[0] if marker else SEED
    extra_env = {"EARMARK_REVIEW_QA_SHARE": "0"}
    if env_marker := request.node.get_closest_marker("ui_env"):
        extra_env.update(env_marker.kwargs)
    env = LocalEnv(home=tmp_path / "home", results_db_url=pg_url)
    store = Store.from_url(pg_url)
    store.migrate()
    run_date = datetime.now(ZoneInfo(env.timezone)).date().isoformat()
    items = seed_items(store, env.data_root / "audio" / run_date, run_date, seed)
    server = start_review_server(env, USERS, tmp_path / "api-server.log", extra_env)
    try:
        yield UI(server, store, run_date, items)
    finally:
        server.stop()
        store.dispose()
    text = server.log.read_text(errors="replace")
    leaked = [t for *_, t in seed if t.split()[0] in text]
    assert not leaked, "transcript text appeared in the api-server log"


ROUTES = [
    ("GET", "/earmark/"),
    ("GET", "/earmark/review"),
    ("POST", "/earmark/review/claim"),
    ("GET", "/earmark/review/1"),
    ("POST", "/earmark/review/1/decide"),
    ("GET", "/earmark/audio/1"),
]


def test_review_flow_over_http(ui: UI) -> None:
    """Auth on every route; separate claims; audio for the holder only; decisions; expiry."""
    anon = ui.client()
    for method, path in ROUTES:
        assert anon.request(method, path).status_code == 401, path
    assert "Sign in" in anon.get("/earmark/review").text

    ana, ben = ui.client("ana"), ui.client("ben")
    plugins = ana.get("/api/v2/plugins").json()["plugins"]
    mine = next(p for p in plugins if p["name"] == "earmark_review")
    assert mine["external_views"][0]["href"] == "/earmark/review"
    assert ana.get("/api/v2/plugins/importErrors").json()["total_entries"] == 0
    status = ana.get("/earmark/", params={"date": ui.run_date})
    assert status.status_code == 200
    assert "Review queue" in status.text and "pending" in status.text
    assert ana.get("/earmark/", params={"date": "29/11/2026"}).status_code == 400
    assert "Claim next" in ana.get("/earmark/review").text

    # Two reviewers, two different items: the two highest scores.
    claimed_a = ana.post("/earmark/review/claim")
    claimed_b = ben.post("/earmark/review/claim")
    assert claimed_a.status_code == claimed_b.status_code == 303
    item_a = int(claimed_a.headers["location"].rsplit("/", 1)[1])
    item_b = int(claimed_b.headers["location"].rsplit("/", 1)[1])
    assert {item_a, item_b} == {ui.items["a/one.wav"], ui.items["a/two.wav"]}
    assert item_a != item_b
    # Claiming again while holding an item goes back to the held one.
    assert ana.post("/earmark/review/claim").headers["location"].endswith(f"/{item_a}")

    # The item page: only for the holder, with the transcript and the policy.
    page = ana.get(f"/earmark/review/{item_a}")
    assert page.status_code == 200
    assert "SECRET-TRANSCRIPT-ONE" in page.text and "Criteria for Classifying" in page.text
    # The policy rendered from its Markdown; the threshold beside the score; what is left.
    assert "<h1>Criteria for Classifying" in page.text and "<strong>Threat</strong>" in page.text
    assert "## Overview" not in page.text
    assert "(flagged at 0.4235)" in page.text  # LocalEnv's EARMARK_FLAG_THRESHOLD
    assert f'Left for {ui.run_date}</dt><dd id="left">4 ' in page.text
    assert "(harassment 3, self_harm 1)" in page.text
    assert f'src="/earmark/audio/{item_a}"' in page.text
    assert "no-store" in page.headers["cache-control"]
    refused = ben.get(f"/earmark/review/{item_a}")
    assert refused.status_code == 409 and "SECRET" not in refused.text

    # Audio streams to the holder (Range too) and to nobody else.
    wav = (ui.env.data_root / "audio" / ui.run_date / "a/one.wav").read_bytes()
    audio = ana.get(f"/earmark/audio/{item_a}")
    assert audio.status_code == 200 and audio.headers["content-type"] == "audio/wav"
    assert audio.content == wav
    part = ana.get(f"/earmark/audio/{item_a}", headers={"Range": "bytes=0-99"})
    assert part.status_code == 206 and part.content == wav[:100]
    assert ben.get(f"/earmark/audio/{item_a}").status_code in (403, 409)

    # CSRF: a cookie-authenticated POST from another origin is refused; same origin passes.
    cookie = httpx.Client(base_url=ui.base, cookies={"_token": ui.token("ana")}, timeout=30)
    evil = cookie.post(
        f"/earmark/review/{item_a}/decide",
        data={"decision": "violation"},
        headers={"Origin": "http://evil.example"},
    )
    assert evil.status_code == 403 and ui.row(item_a).status == "claimed"
    assert (
        cookie.post(f"/earmark/review/{item_a}/decide", data={"decision": "violation"}).status_code
        == 403
    )  # neither Origin nor Referer
    forged = cookie.post(
        f"/earmark/review/{item_a}/decide",
        data={"decision": "violation"},
        headers={"Origin": "http://evil.example", "X-Forwarded-Host": "evil.example"},
    )
    assert forged.status_code == 403 and ui.row(item_a).status == "claimed"  # not trusted

    # Bad input gets a page that says so, and never the input back.
    quoted = "SECRET-NOTE " * 200  # 2,400 characters, over the 2,000 allowed
    too_long = ana.post(
        f"/earmark/review/{item_a}/decide", data={"decision": "violation", "note": quoted}
    )
    assert too_long.status_code == 422 and "text/html" in too_long.headers["content-type"]
    assert "longer than 2000 characters" in too_long.text and "SECRET-NOTE" not in too_long.text
    assert ui.row(item_a).status == "claimed"
    huge = ana.post(
        f"/earmark/review/{item_a}/decide",
        content=b"decision=violation&note=" + b"x" * 5_000_000,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert huge.status_code == 413 and "at most 64 KiB" in huge.text
    anonymous = httpx.post(
        f"{ui.base}/earmark/review/{item_a}/decide",
        content=b"x" * 5_000_000,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        timeout=30,
    )
    assert anonymous.status_code == 413  # refused before any parsing, signed in or not
    not_an_id = ana.get("/earmark/review/abc")
    assert not_an_id.status_code == 404 and "text/html" in not_an_id.headers["content-type"]
    assert "no such page or item" in not_an_id.text

    # Decisions: only the holder, only once, only known decisions.
    assert (
        ben.post(f"/earmark/review/{item_a}/decide", data={"decision": "violation"}).status_code
        == 409
    )
    assert (
        ana.post(f"/earmark/review/{item_a}/decide", data={"decision": "maybe"}).status_code == 409
    )
    done = cookie.post(
        f"/earmark/review/{item_a}/decide",
        data={"decision": "violation", "note": "clear threat"},
        headers={"Origin": ui.base},
    )
    assert done.status_code == 303 and done.headers["location"] == "/earmark/review"
    row = ui.row(item_a)
    assert (row.status, row.decision, row.note, row.claimed_by) == (
        "resolved",
        "violation",
        "clear threat",
        "ana",
    )
    again = ana.post(f"/earmark/review/{item_a}/decide", data={"decision": "unclear"})
    assert again.status_code == 409 and "not held by ana" in again.text

    # An expired lease returns the item: ana claims ben's lapsed item, ben is refused.
    with ui.store.begin() as conn:
        conn.execute(
            sa.text("UPDATE review_queue SET claimed_until = :t WHERE id = :i"),
            {"t": datetime.now(UTC) - timedelta(minutes=1), "i": item_b},
        )
    assert "Claim next" in ben.get("/earmark/review").text
    taken = ana.post("/earmark/review/claim")
    assert taken.headers["location"].endswith(f"/{item_b}")
    assert ui.row(item_b).claimed_by == "ana"
    assert ben.get(f"/earmark/audio/{item_b}").status_code in (403, 409)
    assert (
        ben.post(f"/earmark/review/{item_b}/decide", data={"decision": "unclear"}).status_code
        == 409
    )
    assert ana.get(f"/earmark/audio/{item_b}").status_code == 200

    # Skip: the item goes back for someone else and the next one opens; release: back to the
    # queue undecided; "record and next" opens the next at once. All in the audit trail.
    three, four = ui.items["b/three.wav"], ui.items["b/four.wav"]
    skipped = ana.post(f"/earmark/review/{item_b}/skip")
    assert skipped.status_code == 303 and skipped.headers["location"] == f"/earmark/review/{three}"
    assert (ui.row(item_b).status, ui.row(item_b).claimed_by) == ("pending", None)
    released = ana.post(f"/earmark/review/{three}/release")
    assert released.headers["location"] == "/earmark/review"
    assert ui.row(three).status == "pending"
    assert ana.post("/earmark/review/claim").headers["location"].endswith(f"/{three}")
    decided = ana.post(
        f"/earmark/review/{three}/decide", data={"decision": "no_violation", "then": "next"}
    )
    assert decided.headers["location"] == f"/earmark/review/{four}"  # item_b was skipped by ana
    assert ben.post(f"/earmark/review/{four}/release").status_code == 409  # not ben's
    assert "Your recent decisions" in ana.get("/earmark/review").text
    # The page in use renews the claim; a lapsed claim is taken again when the item is still
    # free, so the decision is recorded; when someone else took it, the page says who and
    # gives the note back.
    before = ui.row(four).claimed_until
    renewed = ana.post(f"/earmark/review/{four}/extend")
    assert renewed.status_code == 200 and datetime.fromisoformat(renewed.json()["until"]) > before
    script = ana.get("/earmark/static/review.js")
    assert script.status_code == 200 and "text/javascript" in script.headers["content-type"]
    assert "keydown" in script.text
    lapse = sa.text("UPDATE review_queue SET claimed_until = :t WHERE id = :i")
    with ui.store.begin() as conn:
        conn.execute(lapse, {"t": datetime.now(UTC) - timedelta(minutes=1), "i": four})
    late = ana.post(f"/earmark/review/{four}/decide", data={"decision": "unclear", "note": "hm"})
    assert late.status_code == 303
    assert (ui.row(four).status, ui.row(four).decision, ui.row(four).note) == (
        "resolved",
        "unclear",
        "hm",
    )
    cleo = ui.client("cleo")
    assert ben.post("/earmark/review/claim").headers["location"].endswith(f"/{item_b}")
    with ui.store.begin() as conn:
        conn.execute(lapse, {"t": datetime.now(UTC) - timedelta(minutes=1), "i": item_b})
    assert cleo.post("/earmark/review/claim").headers["location"].endswith(f"/{item_b}")
    lost = ben.post(
        f"/earmark/review/{item_b}/decide", data={"decision": "violation", "note": "ben's words"}
    )
    assert lost.status_code == 409 and "taken by another reviewer" in lost.text
    assert "cleo" not in lost.text  # an error never names another reviewer
    assert "ben&#39;s words" in lost.text and ui.row(item_b).claimed_by == "cleo"
    from earmark.review.queue import history

    assert [e.action for e in history(ui.store, item_id=four)][-2:] == ["claim", "decide"]
    assert [(e.action, e.reviewer) for e in history(ui.store, item_id=item_b)][:4] == [
        ("claim", "ben"),
        ("lapse", "ben"),
        ("claim", "ana"),
        ("skip", "ana"),
    ]
    assert [e.action for e in history(ui.store, item_id=three)] == [
        "claim",
        "release",
        "claim",
        "decide",
    ]

    # Corrections: ana's own recent decision, as a new event; nobody else's.
    page = ana.get("/earmark/review/history")
    assert page.status_code == 200 and f'id="decided-{item_a}"' in page.text
    assert "clear threat" in page.text  # her own note, to correct it with
    fixed = ana.post(
        f"/earmark/review/{item_a}/correct",
        data={"decision": "unclear", "note": "second listen"},
        headers={"Origin": ui.base},
    )
    assert fixed.status_code == 303 and fixed.headers["location"] == "/earmark/review/history"
    assert (ui.row(item_a).decision, ui.row(item_a).note) == ("unclear", "second listen")
    assert [e.action for e in history(ui.store, item_id=item_a)][-2:] == ["decide", "correct"]
    assert "(corrected)" in ana.get("/earmark/review/history").text
    assert (
        ben.post(f"/earmark/review/{item_a}/correct", data={"decision": "violation"}).status_code
        == 409
    )

    # Roles: a viewer sees the day page but neither reviews nor sees the stats; a reviewer
    # does not see the stats; an op sees them.
    dave = ui.client("dave")
    assert dave.get("/earmark/", params={"date": ui.run_date}).status_code == 200
    for method, path in [
        ("GET", "/earmark/review"),
        ("POST", "/earmark/review/claim"),
        ("GET", f"/earmark/review/{four}"),
        ("GET", f"/earmark/audio/{four}"),
        ("GET", "/earmark/review/history"),
        ("GET", "/earmark/stats"),
    ]:
        refused = dave.request(method, path)
        assert refused.status_code == 403, (method, path)
    assert "does not include Earmark Review" in dave.get("/earmark/review").text
    assert ana.get("/earmark/stats").status_code == 403
    stats = cleo.get("/earmark/stats", params={"from": ui.run_date, "to": ui.run_date})
    assert stats.status_code == 200 and 'id="quality"' in stats.text
    assert "<td>ana</td>" in stats.text and "SECRET" not in stats.text
    assert cleo.get("/earmark/stats", params={"from": "2026-13-01"}).status_code == 400


@pytest.mark.ui_env(EARMARK_REVIEW_QA_SHARE="1")
def test_nothing_changes_without_a_claim_and_lapses_show_as_pending(ui: UI) -> None:
    """Decide, skip, release and correct on an item the caller never claimed are refused and
    change nothing; the blind second review of one's own flag cannot be taken by its id; a
    lapsed claim is pending everywhere; errors name no one; a blind page names no recording;
    a skip can be undone; the day page shows counts, not scores."""
    from earmark.review.queue import history

    one, two = ui.items["a/one.wav"], ui.items["a/two.wav"]
    three, four = ui.items["b/three.wav"], ui.items["b/four.wav"]
    ana, ben, cleo, dave = (ui.client(u) for u in ("ana", "ben", "cleo", "dave"))
    assert ana.post("/earmark/review/claim").headers["location"].endswith(f"/{one}")
    assert ben.post("/earmark/review/claim").headers["location"].endswith(f"/{two}")

    # ben, holding two, posts to three (never claimed by anyone) and to ana's one.
    for action, data in (
        ("decide", {"decision": "violation", "note": "never seen"}),
        ("skip", {}),
        ("release", {}),
        ("correct", {"decision": "violation"}),
    ):
        for item in (three, one):
            refused = ben.post(f"/earmark/review/{item}/{action}", data=data)
            assert refused.status_code == 409, (action, item, refused.status_code)
            assert "ana" not in refused.text, (action, item)
    assert (ui.row(three).status, ui.row(three).claimed_by) == ("pending", None)
    assert (ui.row(one).status, ui.row(one).claimed_by) == ("claimed", "ana")
    assert history(ui.store, item_id=three) == []
    assert [e.action for e in history(ui.store, item_id=one)] == ["claim"]

    # ana decides her flag; its blind second review (share 1) cannot be taken by her by id.
    assert ana.post(f"/earmark/review/{one}/decide", data={"decision": "violation"}).status_code
    qa = ui.store.scalar("SELECT id FROM review_queue WHERE first_item_id = :i", i=one)
    for action in ("decide", "correct"):
        refused = ana.post(f"/earmark/review/{qa}/{action}", data={"decision": "no_violation"})
        assert refused.status_code == 409, action
    assert (ui.row(qa).status, history(ui.store, item_id=qa)) == ("pending", [])
    assert ana.post("/earmark/review/claim").headers["location"].endswith(f"/{three}")

    # ben's claim lapses: pending on every page and count, and in the trail.
    with ui.store.begin() as conn:
        conn.execute(
            sa.text("UPDATE review_queue SET claimed_until = :t WHERE id = :i"),
            {"t": datetime.now(UTC) - timedelta(minutes=1), "i": two},
        )
    day = dave.get("/earmark/", params={"date": ui.run_date})
    assert day.status_code == 200
    version = '<td><code>sha</code> <span class="muted">cope</span></td>'  # the seed's
    assert f"<td>self_harm</td>{version}<td>flag</td><td>pending</td>" in day.text
    assert "claimed" not in day.text.split('id="review-items"')[1].split("self_harm")[1][:60]
    # Counts only on the day page: no score, no recording name (any flag may go blind).
    assert "0.910" not in day.text and "one.wav" not in day.text
    queue = cleo.get("/earmark/review").text
    assert "<dt>pending</dt><dd>3</dd>" in queue and "<dt>claimed</dt><dd>1</dd>" in queue
    assert (ui.row(two).status, ui.row(two).claimed_by) == ("pending", None)
    assert [(e.action, e.reviewer) for e in history(ui.store, item_id=two)] == [
        ("claim", "ben"),
        ("lapse", "ben"),
    ]

    # cleo takes it; ben's late decision is refused without naming her, his note given back.
    assert cleo.post("/earmark/review/claim").headers["location"].endswith(f"/{two}")
    late = ben.post(f"/earmark/review/{two}/decide", data={"decision": "unclear", "note": "hm?"})
    assert late.status_code == 409 and "taken by another reviewer" in late.text
    assert "cleo" not in late.text and "hm?" in late.text
    assert (ui.row(two).status, ui.row(two).claimed_by) == ("claimed", "cleo")

    # A stray skip is undone: the item is cleo's again, the one the skip opened is released.
    skipped = cleo.post(f"/earmark/review/{two}/skip")
    assert skipped.headers["location"].endswith(f"/{four}")
    page = cleo.get(f"/earmark/review/{four}").text
    assert f"Skipped item #{two}" in page and "Undo skip" in page
    undone = cleo.post(f"/earmark/review/{two}/unskip")
    assert undone.status_code == 303 and undone.headers["location"].endswith(f"/{two}")
    assert (ui.row(two).claimed_by, ui.row(four).status) == ("cleo", "pending")
    assert ben.post(f"/earmark/review/{two}/unskip").status_code == 409  # not his skip

    # ben works on: the blind second review of ana's flag shows no score and no recording.
    assert ben.post("/earmark/review/claim").headers["location"].endswith(f"/{four}")
    following = ben.post(
        f"/earmark/review/{four}/decide", data={"decision": "no_violation", "then": "next"}
    )
    assert following.headers["location"].endswith(f"/{qa}")
    blind = ben.get(f"/earmark/review/{qa}").text
    assert "Blind review" in blind and "one.wav" not in blind and "0.910" not in blind
    assert "Recorded on item #" in blind  # what Enter recorded is confirmed

    # /earmark without the slash is the pages', not Airflow's 404.
    bare = ana.get("/earmark", params={"date": ui.run_date})
    assert bare.status_code == 308
    assert bare.headers["location"] == f"/earmark/?date={ui.run_date}"


def _need_browser() -> None:
    """A clear failure, not a skip, when the browser is missing (`make test` installs it)."""
    missing = [
        what
        for what, ok in (
            ("Debian's chromium (make system)", CHROMIUM.exists()),
            (
                "the playwright package (requirements-dev.txt)",
                importlib.util.find_spec("playwright") is not None,
            ),
        )
        if not ok
    ]
    if missing:
        pytest.fail(f"browser test needs {' and '.join(missing)}", pytrace=False)


def _chromium(playwright: Any, profile: Path) -> Any:
    """Debian's Chromium, headless, with a profile of its own (its own cookies)."""
    return playwright.chromium.launch_persistent_context(
        str(profile),
        executable_path=str(CHROMIUM),
        headless=True,
        viewport={"width": 1366, "height": 900},
        args=[
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ],
    )


def _signed_in(context: Any, ui: UI, user: str) -> Any:
    """A page signed in as ``user`` through Airflow's login page, on the review page."""
    from playwright.sync_api import expect

    page = context.new_page()
    page.set_default_timeout(20_000)
    page.goto(f"{ui.base}/auth/login?next=/earmark/review")
    page.locator("input[name=username], #username").first.fill(user)
    page.locator("input[type=password]").first.fill(ui.passwords[user])
    page.locator("button[type=submit]").first.click()
    page.wait_for_url("**/earmark/review")
    expect(page.get_by_text("Signed in as")).to_contain_text(user)
    return page


def _through_airflows_menu(context: Any, ui: UI, user: str) -> tuple[Any, Any]:
    """Signed in as ``user`` on Airflow's home page, then "RA review" from Airflow's own
    navigation: the page, and the frame the review pages open in."""
    from playwright.sync_api import expect

    page = context.new_page()
    page.set_default_timeout(20_000)
    page.goto(f"{ui.base}/auth/login?next=/")
    page.locator("input[name=username], #username").first.fill(user)
    page.locator("input[type=password]").first.fill(ui.passwords[user])
    page.locator("button[type=submit]").first.click()
    page.get_by_role("link", name="RA review").click()
    page.wait_for_url("**/plugin/earmark-review")
    frame = page.locator("iframe").element_handle().content_frame()
    frame.wait_for_url("**/earmark/review")
    expect(frame.get_by_text("Signed in as")).to_contain_text(user)
    return page, frame


def _the_day_report_renders_its_plots(ui: UI, page: Any) -> None:
    """The day page links the day's report (written as the report task writes it); the page,
    served under the pages' Content-Security-Policy, draws its five plots; no transcript."""
    from earmark.config import Settings
    from earmark.day.report import write_day_report
    from playwright.sync_api import expect

    page.goto(f"{ui.base}/earmark/?date={ui.run_date}")
    expect(page.get_by_text("no report yet")).to_be_visible()
    settings = replace(Settings.from_env(), timezone=ui.env.timezone)
    write_day_report(settings, ui.store, ui.run_date, "manual__browser")
    page.reload()
    page.get_by_role("link", name="Day report with plots").click()
    page.wait_for_url(f"**/earmark/report/{ui.run_date}")
    expect(page.locator("#verdict")).to_be_visible()
    sizes = page.evaluate(
        "() => [...document.querySelectorAll('.plot svg')].map(svg => {"
        " const box = svg.getBoundingClientRect();"
        " return [box.width, box.height, svg.querySelectorAll('path, text, use').length]; })"
    )
    assert len(sizes) == 5, sizes
    assert all(w > 300 and h > 150 and marks >= 5 for w, h, marks in sizes), sizes
    # progress, flags and review have data here (4 files screened and flagged, 4 items); the
    # others say "none"
    assert sizes[0][2] > 20 and sizes[3][2] > 20 and sizes[4][2] > 20, sizes
    for empty in ("no GPU work unit finished", "nothing quarantined"):
        expect(page.get_by_text(empty)).to_be_visible()
    assert "SECRET-TRANSCRIPT" not in page.content()
    page.screenshot(path="/tmp/earmark-day-report.png", full_page=True)


def test_review_in_a_real_browser(ui: UI, tmp_path: Path) -> None:
    """Log in through Airflow's page and open the review from Airflow's own menu (the pages in
    its frame); then by keyboard only, the focus still on Airflow's menu at first: claim, hear
    the audio load, play and pause, decide with a note and go to the next, skip, decide after
    a lapsed lease without losing what was typed, release; then the day's report."""
    _need_browser()
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        context = _chromium(playwright, tmp_path / "chromium-profile")
        try:
            page, frame = _through_airflows_menu(context, ui, "cleo")

            # By keyboard only from here: claim, play and pause, choose, write a note, record
            # and go to the next item; skip that one; on the third, type a decision and a note,
            # let the lease lapse, record anyway (the item is claimed again, nothing typed is
            # lost); release the fourth.
            expect(frame.locator("#claim-form")).to_contain_text("press c")
            # Nobody clicks into the frame: the pages take the focus themselves, and keys
            # pressed while the focus is on Airflow's page around them are forwarded.
            page.get_by_role("link", name="Dags").focus()
            assert page.evaluate("() => document.activeElement.tagName") == "A"
            with frame.expect_navigation():
                page.keyboard.press("c")
            item_id = int(frame.url.rsplit("/", 1)[1])
            expect(frame.locator("#transcript")).to_contain_text("SECRET-TRANSCRIPT")
            duration = frame.evaluate("""() => new Promise((ok, fail) => {
                const audio = document.querySelector('audio');
                if (audio.readyState >= 1) return ok(audio.duration);
                audio.addEventListener('loadedmetadata', () => ok(audio.duration));
                audio.addEventListener('error', () => fail('audio error ' + audio.error.code));
                audio.load();
            })""")
            assert duration > 1.5
            page.wait_for_timeout(200)  # let the controls paint the duration
            page.screenshot(path="/tmp/earmark-review.png", full_page=True)

            expect(frame.locator("#countdown")).to_contain_text(":")
            page.keyboard.press("k")
            frame.wait_for_function("() => !document.querySelector('audio').paused")
            page.keyboard.press("k")
            frame.wait_for_function("() => document.querySelector('audio').paused")
            page.keyboard.press("2")
            expect(frame.get_by_label("No violation")).to_be_checked()
            page.keyboard.press("n")
            page.keyboard.type("benign, checked by ear")
            page.keyboard.press("Escape")
            with frame.expect_navigation():
                page.keyboard.press("Enter")
            skipped_id = int(frame.url.rsplit("/", 1)[1])
            assert skipped_id != item_id
            expect(frame.locator("#last-action")).to_contain_text(
                f"Recorded on item #{item_id}: No violation"
            )
            with frame.expect_navigation():
                page.keyboard.press("s")
            lapsed_id = int(frame.url.rsplit("/", 1)[1])
            expect(frame.locator("#last-action")).to_contain_text(f"Skipped item #{skipped_id}")
            expect(frame.locator("#last-action")).to_contain_text("Undo skip")
            assert lapsed_id not in (item_id, skipped_id)
            page.keyboard.press("1")
            page.keyboard.press("n")
            page.keyboard.type("typed before the lapse")
            page.keyboard.press("Escape")
            with ui.store.begin() as conn:
                conn.execute(
                    sa.text("UPDATE review_queue SET claimed_until = :t WHERE id = :i"),
                    {"t": datetime.now(UTC) - timedelta(minutes=1), "i": lapsed_id},
                )
            with frame.expect_navigation():
                page.keyboard.press("Enter")
            next_id = int(frame.url.rsplit("/", 1)[1])
            assert next_id not in (item_id, skipped_id, lapsed_id)
            expect(frame.locator("#keys")).to_contain_text("release and stop")
            with frame.expect_navigation():
                page.keyboard.press("r")
            assert frame.url.endswith("/earmark/review")
            expect(frame.get_by_role("button", name="Claim next")).to_be_visible()
            assert ui.row(next_id).status == "pending"

            _the_day_report_renders_its_plots(ui, page)
        finally:
            context.close()
    row = ui.row(item_id)
    assert (row.status, row.decision, row.claimed_by, row.note) == (
        "resolved",
        "no_violation",
        "cleo",
        "benign, checked by ear",
    )
    lapsed = ui.row(lapsed_id)
    assert (lapsed.status, lapsed.decision, lapsed.claimed_by, lapsed.note) == (
        "resolved",
        "violation",
        "cleo",
        "typed before the lapse",
    )
    assert (ui.row(skipped_id).status, ui.row(skipped_id).claimed_by) == ("pending", None)
    from earmark.review.queue import history

    assert [e.action for e in history(ui.store, reviewer="cleo")] == [
        "claim",
        "decide",
        "claim",
        "skip",
        "claim",
        "lapse",
        "claim",  # the lapsed lease taken again when the decision came
        "decide",
        "claim",
        "release",
    ]


# Eight flags for the two-reviewer test, the scores apart so the order is known.
QUEUE = [
    (f"q/{n}.wav", ("harassment", "self_harm")[n % 2], 0.95 - 0.05 * n, f"SECRET-QUEUE-{n} words")
    for n in range(8)
]


@pytest.mark.seed(QUEUE)
@pytest.mark.ui_env(EARMARK_REVIEW_QA_SHARE="1")
def test_two_reviewers_share_the_queue_and_second_reviews_are_blind(ui: UI, tmp_path: Path):
    """ana and ben, each in a browser of their own, work the queue in turns by keyboard until
    neither has anything left: every flag decided once, and (share 1) every one reviewed again
    by the other, blind: no score, no first decision, no first note. Then ana corrects one
    decision on her history page and cleo reads the stats."""
    _need_browser()
    from playwright.sync_api import expect, sync_playwright

    flags = set(ui.items.values())
    with sync_playwright() as playwright:
        contexts = {who: _chromium(playwright, tmp_path / who) for who in ("ana", "ben")}
        try:
            pages = {who: _signed_in(contexts[who], ui, who) for who in contexts}
            done: dict[str, list[int]] = {"ana": [], "ben": []}
            blind_seen, worked = 0, True
            while worked:  # until a round in which neither found anything to claim
                worked = False
                for who, page in pages.items():
                    if "/earmark/review/" not in page.url:
                        with page.expect_navigation():
                            page.get_by_role("button", name="Claim next").click()
                        if "/earmark/review/" not in page.url:
                            continue
                    worked = True
                    item_id = int(page.url.rsplit("/", 1)[1])
                    text = page.content()
                    if item_id in flags:
                        assert "flagged at" in text and not page.locator("#blind").count()
                    else:  # a second review: nothing of the first one shows
                        expect(page.locator("#blind")).to_contain_text("Blind review")
                        assert "flagged at" not in text and "NOTE-" not in text
                        blind_seen += 1
                    page.keyboard.press("1" if item_id % 2 else "2")
                    page.keyboard.press("n")
                    page.keyboard.type(f"NOTE-{item_id}-{who}")
                    page.keyboard.press("Escape")
                    with page.expect_navigation():
                        page.keyboard.press("Enter")
                    done[who].append(item_id)
            for page in pages.values():
                expect(page.get_by_text("The queue is empty")).to_be_visible()
            assert blind_seen == len(flags)
            assert done["ana"] and done["ben"]

            # ana corrects her latest decision on her history page.
            history_page = pages["ana"]
            history_page.get_by_role("link", name="Your decisions").first.click()
            latest = done["ana"][-1]
            row = history_page.locator(f"#decided-{latest}")
            row.get_by_label(f"New decision for item {latest}").select_option("unclear")
            row.get_by_role("button", name="Correct").click()
            history_page.wait_for_url("**/earmark/review/history")
            expect(history_page.locator(f"#decided-{latest}")).to_contain_text("(corrected)")
            history_page.screenshot(path="/tmp/earmark-history.png", full_page=True)
        finally:
            for context in contexts.values():
                context.close()
        stats_context = _chromium(playwright, tmp_path / "cleo")
        try:
            page = _signed_in(stats_context, ui, "cleo")
            page.get_by_role("link", name="Review stats").click()
            page.wait_for_url("**/earmark/stats")
            expect(page.locator("#quality")).to_contain_text("harassment")
            expect(page.locator("#reviewers")).to_contain_text("ana")
            assert "SECRET" not in page.content() and "NOTE-" not in page.content()
            page.screenshot(path="/tmp/earmark-stats.png", full_page=True)
        finally:
            stats_context.close()

    # Every item decided exactly once; the second review by the other reviewer, never the
    # first's; both kinds all resolved.
    rows = ui.store.rows(
        "SELECT q.id, q.kind, q.status, q.claimed_by, f.claimed_by AS first_by,"
        " (SELECT count(*) FROM review_events e WHERE e.item_id = q.id"
        "  AND e.action = 'decide') AS decided"
        " FROM review_queue q LEFT JOIN review_queue f ON f.id = q.first_item_id"
    )
    assert len(rows) == 2 * len(flags)
    assert {(r.kind, r.status, int(r.decided)) for r in rows} == {
        ("flag", "resolved", 1),
        ("qa", "resolved", 1),
    }
    assert all(r.claimed_by != r.first_by for r in rows if r.kind == "qa")
    assert sorted(done["ana"] + done["ben"]) == sorted(r.id for r in rows)
    assert ui.row(latest).decision == "unclear"
