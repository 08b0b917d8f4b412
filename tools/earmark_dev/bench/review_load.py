"""Review load benchmark: N reviewers working one queue at once through a real api-server.

Seeds ``--items`` flagged review items (tiny WAVs, transcripts) in a throwaway Postgres results
DB (or ``--db-url``, whose review queue must be empty), starts ``airflow api-server`` with the
Earmark plugin on a LocalEnv home in a temp dir (``--workers``, one as the deployment runs) and
``--reviewers`` users of role ``user``, each signed in with the ``_token`` cookie and sending
the pages' own Origin, as a browser does. Each reviewer is a thread with its own client: open
the review page, claim, then per item the item page, the audio, a think time and "record and
next" (``decide`` with ``then=next``, which claims the next item), until the queue is empty for
everyone (second reviews appear as flags are decided, ``--qa-share``) or ``--seconds`` pass.
Requests go to 127.0.0.1 only; the time (``--seconds``) and the requests (``--max-requests``)
are capped, and everything stops by itself. The throwaway database is dropped at the end, on
a failure and on Ctrl-C too.

Prints, per route (claim, item page, audio, decide, review page), the count and the p50, p95
and max latency as the clients saw it; decisions per second; the results-DB connections open
at peak (``pg_stat_activity`` for the database, sampled every 0.5 s: the api-server's, as
nothing else uses a throwaway database). Then checks the review queue from the database and
prints each invariant; exits 1 when one does not hold or any request failed (no 4xx/5xx is
expected in this flow: every reviewer acts only on items it was handed, within a 30 min
lease):

- no item decided twice;
- the trail replays: per item, a claim only of a free item, a decide/release/skip/lapse only
  by its holder; per reviewer, never a second claim while holding one; nobody holds two now;
- every decision is the holder's: the item's ``claimed_by`` and decision are the decide's;
- no lost decision: every decide answered 303 is recorded with the decision and note sent,
  and nothing is recorded that no client saw answered;
- no blind second review decided by the flag's own reviewer;
- the queue is drained (unless ``--seconds`` cut the run);
- no transcript text in the api-server's log (nor in this output: it never prints one).

    python -m earmark_dev.bench.review_load --reviewers 20 --items 400 --seconds 300
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import psutil
import sqlalchemy as sa
from earmark.store.db import Store
from earmark_dev.localenv import LocalEnv
from earmark_dev.postgres import admin_url, throwaway_database
from earmark_dev.review_server import ReviewServer, seed_items, start_review_server

ROUTES = ("claim", "item page", "audio", "decide", "review page")
#: What each route answers when all is well; anything else is an error of the run.
EXPECTED = {"claim": 303, "item page": 200, "audio": 200, "decide": 303, "review page": 200}
DECISIONS = ("violation", "no_violation", "unclear")
TRANSCRIPT_MARK = "BENCH-TRANSCRIPT"  # every seeded transcript starts with it; no log may show it
Decided = tuple[int, str, str, str]  # item, reviewer, decision, note
_ITEM = re.compile(r"/earmark/review/(\d+)$")


# ---- the clients -----------------------------------------------------------------------------
class Stopped(Exception):  # noqa: N818 - a signal to stop, not a failure
    """The run's bound was reached (time, requests) or it was interrupted."""


@dataclass
class Ledger:
    """Everything the clients saw, shared by their threads."""

    stop: threading.Event
    max_requests: int
    timings: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: Counter[str] = field(default_factory=Counter)
    decided: list[Decided] = field(default_factory=list)
    requests: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def request(
        self, client: httpx.Client, route: str, method: str, url: str, **kwargs: Any
    ) -> httpx.Response | None:
        """One timed request; None (and counted as an error) when it failed or answered
        other than ``EXPECTED[route]``."""
        with self.lock:
            if self.stop.is_set():
                raise Stopped
            if self.requests >= self.max_requests:
                self.stop.set()
                raise Stopped
            self.requests += 1
        started = time.perf_counter()
        try:
            response = client.request(method, url, **kwargs)
        except httpx.HTTPError as error:
            with self.lock:
                self.errors[f"{route}: {type(error).__name__}"] += 1
            return None
        elapsed_ms = (time.perf_counter() - started) * 1000
        with self.lock:
            self.timings[route].append(elapsed_ms)
            if response.status_code != EXPECTED[route]:
                self.errors[f"{route}: HTTP {response.status_code}"] += 1
                return None
        return response

    def expect(self, condition: bool, error: str) -> bool:
        """``condition``; counted as ``error`` when false."""
        if not condition:
            with self.lock:
                self.errors[error] += 1
        return condition


class Coordinator:
    """When the queue is empty for everyone: each reviewer that finds it empty waits until a
    decision was recorded after its claim began (a second review may have appeared), and the
    run is drained when every reviewer still working found it empty after the last one."""

    def __init__(self, reviewers: list[str], stop: threading.Event) -> None:
        self.cond = threading.Condition()
        self.stop = stop
        self.epoch = 0  # decisions recorded so far
        self.idle: dict[str, int] = {}  # reviewer -> epoch when its empty claim began
        self.working = set(reviewers)
        self.drained = False

    def now(self) -> int:
        with self.cond:
            return self.epoch

    def decided(self) -> None:
        with self.cond:
            self.epoch += 1
            self.cond.notify_all()

    def busy(self, who: str) -> None:
        with self.cond:
            self.idle.pop(who, None)

    def leave(self, who: str) -> None:
        with self.cond:
            self.working.discard(who)
            self.idle.pop(who, None)
            self.cond.notify_all()

    def _everyone_idle(self) -> bool:
        return all(self.idle.get(r) == self.epoch for r in self.working)

    def empty(self, who: str, began: int) -> bool:
        """``who``'s claim that began at ``began`` found nothing: True when the run is drained,
        False when something may have changed since (claim again)."""
        with self.cond:
            self.idle[who] = began
            while not self.stop.is_set():
                if self.drained or self._everyone_idle():
                    self.drained = True
                    self.cond.notify_all()
                    return True
                if began != self.epoch:
                    return False
                self.cond.wait(0.5)
            raise Stopped


def _item_of(location: str) -> int | None:
    match = _ITEM.search(location.split("?", maxsplit=1)[0])
    return int(match.group(1)) if match else None


@dataclass
class Reviewer:
    """One reviewer's session, working the queue with "record and next"."""

    who: str
    client: httpx.Client
    ledger: Ledger
    coord: Coordinator
    think_s: float
    rng: random.Random
    began: int = 0  # the decisions recorded when this reviewer's latest claim began

    def run(self) -> None:
        """Until the queue is drained for everyone, a request fails or the run stops."""
        try:
            if self.ledger.request(self.client, "review page", "GET", "/earmark/review"):
                location = None
                while (item := self._next(location)) is not None:
                    location = self._work(item)
                    if location is None:
                        return
        except Stopped:
            return
        finally:
            self.coord.leave(self.who)

    def _next(self, location: str | None) -> int | None:
        """The item ``location`` opens, else the next claimed; None when the queue is drained
        for everyone or a request failed."""
        while True:
            if location is None:
                self.coord.busy(self.who)
                self.began = self.coord.now()
                claimed = self.ledger.request(self.client, "claim", "POST", "/earmark/review/claim")
                if claimed is None:
                    return None
                location = claimed.headers["location"]
            item = _item_of(location)
            if item is not None:
                self.coord.busy(self.who)
                return item
            # /earmark/review?empty=1: the page, then wait for the others
            if self.ledger.request(self.client, "review page", "GET", location) is None:
                return None
            if self.coord.empty(self.who, self.began):
                return None
            location = None

    def _work(self, item: int) -> str | None:
        """Item page, audio, think, decide with ``then=next``: where the decide sends the
        reviewer (the next item or the empty queue); None when a request failed."""
        ledger, client = self.ledger, self.client
        page = ledger.request(client, "item page", "GET", f"/earmark/review/{item}")
        if page is None or not ledger.expect(
            f'src="/earmark/audio/{item}"' in page.text, "item page: not the item's page"
        ):
            return None
        audio = ledger.request(client, "audio", "GET", f"/earmark/audio/{item}")
        if audio is None or not ledger.expect(audio.content[:4] == b"RIFF", "audio: not a WAV"):
            return None
        if self.think_s > 0 and ledger.stop.wait(self.rng.uniform(0.5, 1.5) * self.think_s):
            raise Stopped
        decision = self.rng.choice(DECISIONS)
        note = f"bench note {self.rng.randrange(1000)}" if self.rng.random() < 0.2 else ""
        self.began = self.coord.now()  # the next claim happens inside the decide
        done = ledger.request(
            client,
            "decide",
            "POST",
            f"/earmark/review/{item}/decide",
            data={"decision": decision, "note": note, "then": "next"},
        )
        if done is None:
            return None
        with ledger.lock:
            ledger.decided.append((item, self.who, decision, note))
        self.coord.decided()
        return done.headers["location"]


# ---- connections -----------------------------------------------------------------------------
class ConnectionSampler:
    """Connections to the results DB (other than its own), every ``every_s``."""

    SQL = sa.text(
        "SELECT count(*) AS n, count(*) FILTER (WHERE state = 'active') AS active"
        " FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
    )

    def __init__(self, url: str, every_s: float = 0.5) -> None:
        self.engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
        self.every_s = every_s
        self.samples: list[tuple[int, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pg-sampler", daemon=True)

    def sample(self) -> tuple[int, int]:
        with self.engine.connect() as conn:
            row = conn.execute(self.SQL).one()
        return int(row.n), int(row.active)

    def _run(self) -> None:
        with self.engine.connect() as conn:
            while not self._stop.is_set():
                row = conn.execute(self.SQL).one()
                self.samples.append((int(row.n), int(row.active)))
                conn.rollback()  # a fresh snapshot of pg_stat_activity each time
                self._stop.wait(self.every_s)

    def __enter__(self) -> ConnectionSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.engine.dispose()


# ---- the invariants --------------------------------------------------------------------------
@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


def _few(items: list[Any], n: int = 5) -> str:
    shown = "; ".join(str(i) for i in items[:n])
    return shown + (f"; and {len(items) - n} more" if len(items) > n else "")


_GIVE_BACK = ("decide", "release", "skip", "lapse")  # what ends a claim


def check_invariants(store: Store, decided: list[Decided], cut: bool, log_text: str) -> list[Check]:
    """The review queue's invariants, from the results DB after the run."""
    events = store.rows(
        "SELECT id, item_id, action, reviewer, decision, note FROM review_events ORDER BY id"
    )
    queue = {r.id: r for r in store.rows("SELECT * FROM review_queue")}
    own_second = store.rows(
        "SELECT q.id, e.reviewer FROM review_queue q"
        " JOIN review_events e ON e.item_id = q.id AND e.action = 'decide'"
        " JOIN review_events f ON f.item_id = q.first_item_id AND f.action = 'decide'"
        " WHERE q.kind = 'qa' AND e.reviewer = f.reviewer ORDER BY q.id"
    )
    return [
        _decided_once(events),
        _items_replayed(events),
        _reviewers_replayed(events, queue),
        _rows_match_trail(events, queue),
        _nothing_lost(events, decided),
        _blind_stays_blind(queue, own_second),
        _drained(queue, cut),
        _log_clean(log_text),
    ]


def _decided_once(events: list[sa.Row]) -> Check:
    decides = Counter(e.item_id for e in events if e.action == "decide")
    twice = sorted(i for i, n in decides.items() if n > 1)
    return Check(
        "no item decided twice",
        not twice,
        f"{sum(decides.values())} decide events on {len(decides)} items"
        + (f"; decided more than once: {_few(twice)}" if twice else ""),
    )


def _items_replayed(events: list[sa.Row]) -> Check:
    """Per item, in id order (an item's events are written under its row lock)."""
    wrong: list[str] = []
    holder: dict[int, str | None] = {}
    resolved: set[int] = set()
    for e in events:
        held = holder.get(e.item_id)
        if e.action == "claim":
            if held is not None or e.item_id in resolved:
                state = "resolved" if e.item_id in resolved else f"held by {held}"
                wrong.append(f"event {e.id}: {e.reviewer} claimed item {e.item_id} {state}")
            holder[e.item_id] = e.reviewer
        elif e.action in _GIVE_BACK:
            if held != e.reviewer:
                wrong.append(
                    f"event {e.id}: {e.action} of item {e.item_id} by {e.reviewer}, held by {held}"
                )
            holder[e.item_id] = None
            if e.action == "decide":
                resolved.add(e.item_id)
    return Check(
        "every decide/release/skip by the item's holder, after their own claim; no claim of"
        " a held or decided item",
        not wrong,
        f"{len(events)} events replayed" + (f": {_few(wrong)}" if wrong else ""),
    )


def _reviewers_replayed(events: list[sa.Row], queue: dict[int, sa.Row]) -> Check:
    """Per reviewer, in id order (each reviewer's requests come one after another)."""
    doubles: list[str] = []
    holding: dict[str, int | None] = {}
    for e in events:
        if e.action == "claim":
            if holding.get(e.reviewer) is not None:
                doubles.append(
                    f"event {e.id}: {e.reviewer} claimed item {e.item_id} while holding"
                    f" item {holding[e.reviewer]}"
                )
            holding[e.reviewer] = e.item_id
        elif e.action in _GIVE_BACK and holding.get(e.reviewer) == e.item_id:
            holding[e.reviewer] = None
    now = Counter(r.claimed_by for r in queue.values() if r.status == "claimed")
    doubles += [f"{who} holds {n} items now" for who, n in sorted(now.items()) if n > 1]
    return Check(
        "nobody held two live claims at once",
        not doubles,
        f"trail replayed per reviewer; at the end {sum(now.values())} items held by"
        f" {len(now)} reviewers" + (f": {_few(doubles)}" if doubles else ""),
    )


def _rows_match_trail(events: list[sa.Row], queue: dict[int, sa.Row]) -> Check:
    last = {e.item_id: e for e in events if e.action == "decide"}
    wrong = [
        f"item {i}: row {r.status}/{r.claimed_by}/{r.decision}, decide by {e.reviewer}/{e.decision}"
        for i, e in sorted(last.items())
        if (r := queue[i]).status != "resolved"
        or (r.claimed_by, r.decision, r.note or "") != (e.reviewer, e.decision, e.note or "")
    ]
    wrong += [
        f"item {i} resolved without a decide event"
        for i, r in sorted(queue.items())
        if r.status == "resolved" and i not in last
    ]
    return Check(
        "every resolved item's holder, decision and note are its decide event's",
        not wrong,
        f"{len(last)} items resolved" + (f": {_few(wrong)}" if wrong else ""),
    )


def _nothing_lost(events: list[sa.Row], decided: list[Decided]) -> Check:
    recorded = Counter(
        (e.item_id, e.reviewer, e.decision, e.note or "") for e in events if e.action == "decide"
    )
    sent = Counter(decided)
    lost = sorted(sent - recorded)
    phantom = sorted(recorded - sent)
    return Check(
        "no lost decision: every decide answered 303 is recorded as sent, and only those",
        not lost and not phantom,
        f"{sum(sent.values())} answered 303, {sum(recorded.values())} recorded"
        + (f"; lost: {_few([d[:3] for d in lost])}" if lost else "")
        + (f"; recorded, never answered: {_few([d[:3] for d in phantom])}" if phantom else ""),
    )


def _blind_stays_blind(queue: dict[int, sa.Row], own: list[sa.Row]) -> Check:
    second = [r for r in queue.values() if r.kind == "qa"]
    return Check(
        "no blind second review decided by the flag's own reviewer",
        not own,
        f"{len(second)} second reviews queued,"
        f" {sum(r.status == 'resolved' for r in second)} decided"
        + (f": {_few([f'item {r.id} by {r.reviewer}' for r in own])}" if own else ""),
    )


def _drained(queue: dict[int, sa.Row], cut: bool) -> Check:
    left = Counter(r.status for r in queue.values() if r.status != "resolved")
    return Check(
        "queue drained" + (" (not required: the run was cut)" if cut else ""),
        cut or not left,
        f"{left['pending']} pending, {left['claimed']} claimed",
    )


def _log_clean(log_text: str) -> Check:
    leaks = log_text.count(TRANSCRIPT_MARK)
    return Check(
        "no transcript text in the api-server log",
        leaks == 0,
        f"{len(log_text):,} characters of log"
        + (f"; transcript text {leaks} times" if leaks else ""),
    )


# ---- the run ---------------------------------------------------------------------------------
def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0-100) of ``values``."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


@dataclass
class Figures:
    reviewers: int
    items: int
    workers: int
    think_s: float
    seconds: float
    wall_s: float
    cut: bool
    requests: int
    routes: dict[str, dict[str, float]]
    errors: dict[str, int]
    decisions: int
    second_reviews: int
    connections_peak: int
    connections_active_peak: int
    connections_before: int
    connections_after: int
    server_cpu_s: float
    client_cpu_s: float
    checks: list[Check]

    @property
    def ok(self) -> bool:
        return not self.errors and all(c.ok for c in self.checks)

    def as_json(self) -> dict[str, Any]:
        return {
            **{k: v for k, v in vars(self).items() if k != "checks"},
            "decisions_per_s": self.decisions / self.wall_s if self.wall_s else 0.0,
            "checks": [vars(c) for c in self.checks],
            "ok": self.ok,
        }

    def lines(self) -> list[str]:
        out = [
            f"review load: {self.reviewers} reviewers, {self.items} flags"
            f" (+ {self.second_reviews} blind second reviews queued as they were decided),"
            f" api-server with {self.workers} worker(s), think time {self.think_s:g} s,"
            f" bound {self.seconds:g} s",
            f"ran {self.wall_s:.1f} s"
            + (" (CUT by --seconds/--max-requests)" if self.cut else " (queue drained)")
            + f": {self.decisions} decisions, {self.decisions / self.wall_s:.1f} decisions/s,"
            f" {self.requests} requests",
            "",
            f"{'route':<12} {'count':>6} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}",
        ]
        for route in ROUTES:
            f = self.routes.get(route)
            if f:
                out.append(
                    f"{route:<12} {int(f['count']):>6} {f['p50_ms']:>8.1f} {f['p95_ms']:>8.1f}"
                    f" {f['max_ms']:>8.1f}"
                )
            else:
                out.append(f"{route:<12} {0:>6}")
        out += [
            "",
            f"CPU during the load: api-server {self.server_cpu_s:.1f} s, these clients"
            f" {self.client_cpu_s:.1f} s, in {self.wall_s:.1f} s of wall time on"
            f" {os.cpu_count()} cores",
        ]
        out += [
            "",
            f"results-DB connections: peak {self.connections_peak} during the run"
            f" ({self.connections_active_peak} active at once at most), {self.connections_before}"
            f" before it, {self.connections_after} after it (sampled every 0.5 s)",
            "HTTP errors: "
            + (
                ", ".join(f"{k} x{v}" for k, v in sorted(self.errors.items()))
                if self.errors
                else "none"
            ),
            "",
            "invariants:",
        ]
        out += [f"  {'ok  ' if c.ok else 'FAIL'} {c.name}: {c.detail}" for c in self.checks]
        out.append("all invariants hold" if self.ok else "FAILED")
        return out


@contextmanager
def results_database(db_url: str | None, pg_url: str) -> Iterator[str]:
    """``db_url``, or a throwaway Postgres database on ``pg_url``'s server, dropped after (on
    errors and Ctrl-C too)."""
    if db_url is not None:
        yield db_url
        return
    with throwaway_database(pg_url, "earmark_bench_review") as url:
        yield url


def _rng(seed: int | str) -> random.Random:
    return random.Random(seed)  # noqa: S311 - a benchmark's choices, not secrets


def _seed_rows(items: int, seed: int) -> list[tuple[str, str, float, str]]:
    rng = _rng(seed)
    return [
        (
            f"d{n // 100:03d}/item{n:05d}.wav",
            ("harassment", "self_harm")[n % 2],
            round(rng.uniform(0.43, 0.99), 4),
            f"{TRANSCRIPT_MARK}-{n:05d} words only the item page may show",
        )
        for n in range(items)
    ]


def run(args: argparse.Namespace, workdir: Path) -> Figures:
    with results_database(args.db_url, args.pg_url) as url:
        store = Store.from_url(url)
        try:
            store.migrate()
            if store.scalar("SELECT count(*) FROM review_queue"):
                raise SystemExit(f"the review queue of {args.db_url} is not empty")
            env = LocalEnv(home=workdir / "home", results_db_url=url)
            run_date = datetime.now(ZoneInfo(env.timezone)).date().isoformat()
            seed_items(
                store,
                env.data_root / "audio" / run_date,
                run_date,
                _seed_rows(args.items, args.seed),
            )
        finally:
            store.dispose()
        names = [f"r{n:02d}" for n in range(1, args.reviewers + 1)]
        server = start_review_server(
            env,
            dict.fromkeys(names, "user"),
            workdir / "api-server.log",
            {"EARMARK_REVIEW_QA_SHARE": str(args.qa_share)},
            workers=args.workers,
            timeout_s=180,
        )
        try:
            return _load(args, server, url, names)
        finally:
            server.stop()


def _load(args: argparse.Namespace, server: ReviewServer, url: str, names: list[str]) -> Figures:
    if not server.base.startswith("http://127.0.0.1:"):
        raise RuntimeError(f"not a loopback server: {server.base}")
    clients = {
        who: httpx.Client(
            base_url=server.base,
            cookies={"_token": server.token(who)},
            headers={"Origin": server.base},
            timeout=args.request_timeout,
            follow_redirects=False,
            trust_env=False,  # no proxy: loopback only
        )
        for who in names
    }
    stop = threading.Event()
    ledger = Ledger(stop, args.max_requests)
    coord = Coordinator(names, stop)
    sampler = ConnectionSampler(url)
    # One page before the clock starts: the plugin's first request builds its engine.
    clients[names[0]].get("/earmark/review").raise_for_status()
    before = sampler.sample()[0]
    reviewers = [
        Reviewer(who, clients[who], ledger, coord, args.think, _rng(f"{args.seed}-{who}"))
        for who in names
    ]
    threads = [
        threading.Thread(target=r.run, name=f"reviewer-{r.who}", daemon=True) for r in reviewers
    ]
    server_cpu, client_cpu = _cpu_s(server), _cpu_s(None)
    started = time.monotonic()
    deadline = started + args.seconds
    try:
        with sampler:
            for thread in threads:
                thread.start()
            while alive := [t for t in threads if t.is_alive()]:
                now = time.monotonic()
                if now > deadline:
                    stop.set()
                if now > deadline + args.request_timeout + 10:
                    break  # a request that never returns: counted below
                alive[0].join(0.2)
            wall_s = time.monotonic() - started
            server_cpu_s = _cpu_s(server) - server_cpu
            client_cpu_s = _cpu_s(None) - client_cpu
    except BaseException:
        stop.set()
        raise
    finally:
        for client in clients.values():
            client.close()
    stuck = [t.name for t in threads if t.is_alive()]
    if stuck:
        ledger.errors[f"reviewers still waiting for an answer at the end: {len(stuck)}"] += 1
    cut = stop.is_set() and not coord.drained
    after = sampler.sample()[0]
    store = Store.from_url(url)
    try:
        checks = check_invariants(
            store, ledger.decided, cut, server.log.read_text(errors="replace")
        )
        second = store.scalar("SELECT count(*) FROM review_queue WHERE kind = 'qa'")
    finally:
        store.dispose()
    routes = {
        route: {
            "count": len(t),
            "p50_ms": percentile(t, 50),
            "p95_ms": percentile(t, 95),
            "max_ms": max(t),
        }
        for route in ROUTES
        if (t := ledger.timings.get(route))
    }
    samples = [*sampler.samples, (before, 0), (after, 0)]  # all while the server ran
    return Figures(
        reviewers=len(names),
        items=args.items,
        workers=args.workers,
        think_s=args.think,
        seconds=args.seconds,
        wall_s=wall_s,
        cut=cut,
        requests=ledger.requests,
        routes=routes,
        errors=dict(ledger.errors),
        decisions=len(ledger.decided),
        second_reviews=int(second),
        connections_peak=max(n for n, _ in samples),
        connections_active_peak=max(a for _, a in samples),
        connections_before=before,
        connections_after=after,
        server_cpu_s=server_cpu_s,
        client_cpu_s=client_cpu_s,
        checks=checks,
    )


def _cpu_s(server: ReviewServer | None) -> float:
    """User + system CPU seconds so far of the api-server's processes (None: this one)."""
    if server is None:
        times = psutil.Process().cpu_times()
        return times.user + times.system
    total = 0.0
    root = psutil.Process(server.process.pid)
    for proc in [root, *root.children(recursive=True)]:
        try:
            times = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reviewers", type=int, default=20, help="concurrent reviewer sessions")
    parser.add_argument("--items", type=int, default=400, help="flagged items to seed")
    parser.add_argument("--seconds", type=float, default=60.0, help="hard bound on the load")
    parser.add_argument(
        "--think", type=float, default=0.0, help="mean seconds a reviewer spends on an item"
    )
    parser.add_argument("--workers", type=int, default=1, help="api-server workers")
    parser.add_argument(
        "--qa-share", type=float, default=0.1, help="EARMARK_REVIEW_QA_SHARE (production's 0.1)"
    )
    parser.add_argument(
        "--max-requests", type=int, default=None, help="cap (default 8 per item + 20 per reviewer)"
    )
    parser.add_argument("--request-timeout", type=float, default=60.0, help="seconds per request")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--pg-url",
        default=admin_url(),
        help="a Postgres where this user may create (and drop) databases",
    )
    parser.add_argument(
        "--db-url", default=None, help="an existing results DB instead (its queue must be empty)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.max_requests is None:
        args.max_requests = 8 * args.items + 20 * args.reviewers
    try:
        with tempfile.TemporaryDirectory(prefix="earmark-review-load-") as scratch:
            figures = run(args, Path(scratch))
    except KeyboardInterrupt:
        print("interrupted: the api-server is stopped and the throwaway database dropped")
        return 130
    print(json.dumps(figures.as_json()) if args.json else "\n".join(figures.lines()))
    return 0 if figures.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
