"""The RA review pages in a real ``airflow api-server`` with seeded review items: what the review
UI tests and the review load benchmark start.

The api-server runs on a LocalEnv home (Airflow's SimpleAuthManager with the given users), its
results DB is the given URL (Postgres in the tests), and every item is a classified file with a
tiny WAV, a transcript and a flagged label.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import soundfile as sf
import sqlalchemy as sa
from earmark.store.db import Store
from earmark_dev.localenv import LocalEnv

#: (member, policy, score, transcript): the transcripts are secrets no log may show.
SeedRow = tuple[str, str, float, str]


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_wav(path: Path, seconds: float, freq: float) -> None:
    """A sine tone at 16 kHz, 16-bit PCM."""
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(16000 * seconds)) / 16000
    sf.write(path, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), 16000, subtype="PCM_16")


def seed_items(store: Store, audio_dir: Path, run_date: str, seed: list[SeedRow]) -> dict[str, int]:
    """One archive, a classified file per ``seed`` row, its transcript, its label (flagged) and
    its review item; the items' ids by member."""
    ids: dict[str, int] = {}
    with store.begin() as conn:
        archive = conn.execute(
            sa.text(
                "INSERT INTO archives (name, sha256, run_date, status, path, n_files)"
                " VALUES ('day.tar', 'f00d', :d, 'unpacked', '/x/day.tar', :n) RETURNING id"
            ),
            {"d": run_date, "n": len(seed)},
        ).scalar_one()
        for n, (member, policy, score, text) in enumerate(seed):
            path = audio_dir / member
            seconds = 2.0 + 0.5 * (n % 8)
            write_wav(path, seconds, 220.0 * (n % 8 + 1))
            file_id = conn.execute(
                sa.text(
                    "INSERT INTO audio_files (archive_id, member_path, path, bytes, format,"
                    " duration_s, sample_rate, channels, status)"
                    " VALUES (:a, :m, :p, :b, 'WAV', :s, 16000, 1, 'classified') RETURNING id"
                ),
                {
                    "a": archive,
                    "m": member,
                    "p": str(path),
                    "b": path.stat().st_size,
                    "s": seconds,
                },
            ).scalar_one()
            conn.execute(
                sa.text(
                    "INSERT INTO transcripts (file_id, model, text, n_chars)"
                    " VALUES (:f, 'w', :t, :n)"
                ),
                {"f": file_id, "t": text, "n": len(text)},
            )
            conn.execute(
                sa.text(
                    "INSERT INTO labels (file_id, policy, policy_sha, model, score, label)"
                    " VALUES (:f, :p, 'sha', 'cope', :s, 1)"
                ),
                {"f": file_id, "p": policy, "s": score},
            )
            ids[member] = conn.execute(
                sa.text(
                    "INSERT INTO review_queue (file_id, policy, policy_sha, model, score)"
                    " VALUES (:f, :p, 'sha', 'cope', :s)"
                    " RETURNING id"
                ),
                {"f": file_id, "p": policy, "s": score},
            ).scalar_one()
    return ids


@dataclass
class ReviewServer:
    """A running api-server with the plugin, and what a client needs to talk to it."""

    base: str
    env: LocalEnv
    log: Path
    process: subprocess.Popen[bytes]
    passwords: dict[str, str] = field(default_factory=dict)
    _tokens: dict[str, str] = field(default_factory=dict)

    def token(self, user: str) -> str:
        """A JWT for ``user`` from Airflow's ``/auth/token`` (cached)."""
        if user not in self._tokens:
            response = httpx.post(
                f"{self.base}/auth/token",
                timeout=30,
                json={"username": user, "password": self.passwords[user]},
            )
            response.raise_for_status()
            self._tokens[user] = response.json()["access_token"]
        return self._tokens[user]

    def client(self, user: str | None = None, **options: object) -> httpx.Client:
        """A client signed in as ``user`` (a bearer token), or anonymous."""
        headers = {"Authorization": f"Bearer {self.token(user)}"} if user else {}
        return httpx.Client(base_url=self.base, headers=headers, timeout=30, **options)

    def stop(self) -> None:
        """Stop the api-server and everything it started (its process group)."""
        proc = self.process
        if proc.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 10)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                proc.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                continue


def start_review_server(
    env: LocalEnv,
    users: dict[str, str],
    log: Path,
    extra_env: dict[str, str] | None = None,
    workers: int = 1,
    timeout_s: float = 90,
) -> ReviewServer:
    """``airflow api-server`` on a free loopback port with ``users`` (name -> simple auth
    manager role), once its health answers; the Airflow metadata DB is migrated first."""
    env.airflow_home.mkdir(parents=True, exist_ok=True)
    env.airflow("db", "migrate", capture=True)
    port = free_port()
    environ = env.environ(
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS=",".join(f"{u}:{r}" for u, r in users.items()),
        **(extra_env or {}),
    )
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "airflow"),
                "api-server",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                str(workers),
            ],
            env=environ,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = ReviewServer(f"http://127.0.0.1:{port}", env, log, proc)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"api-server exited:\n{log.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"api-server not up:\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{server.base}/api/v2/monitor/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        server.passwords = json.loads(
            (env.airflow_home / "simple_auth_manager_passwords.json.generated").read_text()
        )
    except BaseException:
        server.stop()
        raise
    return server
