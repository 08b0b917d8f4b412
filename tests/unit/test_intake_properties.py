"""Intake's invariants under random sequences of deliveries across days (hypothesis, stateful).

Names are drawn to collide (shared stems, the same name with new bytes, empty and dot stems,
case variants, .tar beside .tar.gz), contents good and bad, markers right, mistyped, junk or
not yet written; intake runs for one of two days, reruns its unpacks, and the GPU stage marks
what is ready as classified. After every step:

- every file that was ever classified is on disk with its original sha256, its row intact;
- every delivery that intake took ends in exactly one recorded state, at a path that exists;
- bytes delivered with a correct marker under a valid name are an archive, exactly once.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

import pytest
import sqlalchemy as sa
from delivery_kit import sha256, tar_bytes, wav, write_then_rename
from earmark.config import Settings
from earmark.ingest.deliveries import register_archives
from earmark.ingest.incoming import sha256_file
from earmark.ingest.unpack import unpack_archive
from earmark.store.db import Store
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

DAYS = ("2026-11-28", "2026-11-29")
VALID_NAMES = ("a.tar", "a.tar.gz", "a.tgz", "A.tar", "a.b.tar", "b.tar")
NAMES = st.one_of(st.sampled_from(VALID_NAMES), st.sampled_from((".tar", "..tar", "a")))


def _content(kind: str, variant: int) -> bytes:
    tone = wav(0.2, 200.0 + 37 * variant)
    if kind == "good":
        return tar_bytes({"rec/one.wav": tone, f"rec/v{variant}.wav": wav(0.2, 900.0)})
    if kind == "good-gz":
        return tar_bytes({"rec/one.wav": tone}, gz=True)
    if kind == "mixed":  # one file quarantined, the other screened
        return tar_bytes({"rec/one.wav": tone, "rec/bad.wav": b"not audio"})
    if kind == "unsafe":
        return tar_bytes({"../escape.wav": tone})
    if kind == "truncated":
        return tar_bytes({"rec/one.wav": tone})[:700]
    return b"garbage %d" % variant


CONTENTS = st.tuples(
    st.one_of(
        st.sampled_from(["good", "good-gz", "mixed"]),
        st.sampled_from(["unsafe", "truncated", "garbage"]),
    ),
    st.integers(0, 2),
)
MARKERS = st.one_of(st.just("ok"), st.sampled_from(["typo", "junk", None]))


def _valid_name(name: str) -> bool:
    suffix = next((s for s in (".tar.gz", ".tgz", ".tar") if name.endswith(s)), None)
    return suffix is not None and bool(name.removesuffix(suffix).strip("."))


class IntakeMachine(RuleBasedStateMachine):
    """One data root and results DB per example; the model is what the test delivered."""

    store_url: str = ""  # set per backend by the test below

    def __init__(self) -> None:
        super().__init__()
        self.root = Path(tempfile.mkdtemp(prefix="intake-prop-"))
        self.settings = replace(
            Settings.from_env(), data_root=self.root / "data", max_audio_seconds=60
        )
        self.settings.ensure_layout()
        self.store = Store.from_url(self.store_url or f"sqlite:///{self.root / 'results.db'}")
        if self.store_url:  # a Postgres database shared by the examples: start from nothing
            with self.store.begin() as conn:
                conn.execute(sa.text("DROP SCHEMA public CASCADE"))
                conn.execute(sa.text("CREATE SCHEMA public"))
        self.store.migrate()
        self.incoming: dict[str, tuple[bytes, str | None]] = {}
        self.expected_deliveries = 0
        self.sent: list[bytes] = []
        self.expected_archives: set[str] = set()
        self.classified: dict[int, tuple[str, str]] = {}

    def teardown(self) -> None:
        self.store.dispose()
        shutil.rmtree(self.root, ignore_errors=True)

    @initialize(
        day=st.sampled_from(DAYS),
        kinds=st.lists(st.sampled_from(["good", "good-gz", "mixed"]), min_size=1, max_size=3),
    )
    def a_screened_day(self, day: str, kinds: list[str]) -> None:
        """Every example starts with recordings already screened: the ones to keep safe."""
        for variant, kind in enumerate(kinds):
            self.deliver(VALID_NAMES[variant], (kind, variant), "ok")
        self.run_intake(day)
        self.gpu_stage_classifies_what_is_ready()

    @rule(name=NAMES, content=CONTENTS, marker=MARKERS)
    def deliver(self, name: str, content: tuple[str, int], marker: str | None) -> None:
        """As a producer does: drop any old marker, write the archive, then the marker."""
        data = _content(*content)
        incoming = self.settings.incoming
        (incoming / f"{name}.sha256").unlink(missing_ok=True)
        write_then_rename(incoming / name, data)
        self.incoming[name] = (data, None)
        if marker is not None:
            self.write_marker(name, marker)

    def write_marker(self, name: str, kind: str) -> None:
        data, _ = self.incoming[name]
        digest = sha256(data)
        text = {
            "ok": digest,
            "typo": ("0" if digest[0] != "0" else "1") + digest[1:],
            "junk": "sha256 to follow",
        }[kind]
        write_then_rename(self.settings.incoming / f"{name}.sha256", f"{text}  {name}\n".encode())
        self.incoming[name] = (data, kind)

    @rule(name=NAMES, pick=st.integers(0, 10**6))
    def redeliver(self, name: str, pick: int) -> None:
        """Bytes intake already took, again (a resend, a retry upstream), under any name."""
        if self.sent:
            data = self.sent[pick % len(self.sent)]
            (self.settings.incoming / f"{name}.sha256").unlink(missing_ok=True)
            write_then_rename(self.settings.incoming / name, data)
            self.incoming[name] = (data, None)
            self.write_marker(name, "ok")

    @rule(name=NAMES)
    def marker_arrives(self, name: str) -> None:
        if name in self.incoming and self.incoming[name][1] is None:
            self.write_marker(name, "ok")

    @rule(day=st.sampled_from(DAYS))
    def run_intake(self, day: str) -> None:
        for name, (data, marker) in list(self.incoming.items()):
            if marker is None:
                continue
            self.expected_deliveries += 1
            self.sent.append(data)
            if marker == "ok" and _valid_name(name):
                self.expected_archives.add(sha256(data))
            del self.incoming[name]
        for archive_id in register_archives(self.settings, self.store, day):
            unpack_archive(self.settings, self.store, archive_id)

    @rule()
    def rerun_unpacks(self) -> None:
        for row in self.store.rows("SELECT id FROM archives"):
            unpack_archive(self.settings, self.store, row.id)

    @rule()
    def gpu_stage_classifies_what_is_ready(self) -> None:
        ready = self.store.rows("SELECT id, path, sha256 FROM audio_files WHERE status = 'ready'")
        with self.store.begin() as conn:
            for row in ready:
                conn.execute(
                    sa.text("UPDATE audio_files SET status = 'classified' WHERE id = :i"),
                    {"i": row.id},
                )
        self.classified.update({row.id: (row.path, row.sha256) for row in ready})

    @invariant()
    def classified_recordings_are_intact(self) -> None:
        for file_id, (path, digest) in self.classified.items():
            row = self.store.rows(
                "SELECT status, path, sha256 FROM audio_files WHERE id = :i", i=file_id
            )[0]
            assert tuple(row) == ("classified", path, digest)
            assert sha256_file(Path(path)) == digest

    @invariant()
    def every_delivery_has_one_state(self) -> None:
        rows = self.store.rows(
            "SELECT d.status, d.path, d.archive_id, a.status AS archive"
            " FROM deliveries d LEFT JOIN archives a ON a.id = d.archive_id"
        )
        assert len(rows) == self.expected_deliveries
        for row in rows:
            assert row.status in {"registered", "duplicate", "rejected"}
            assert Path(row.path).exists(), row
            if row.status == "registered":  # intake unpacks what it registers, in this model
                assert row.archive in {"unpacked", "rejected"}
        assert not list(self.settings.claimed.iterdir())
        left = {p.name for p in self.settings.incoming.iterdir()}
        assert left == set(self.incoming) | {
            f"{n}.sha256" for n, (_, m) in self.incoming.items() if m is not None
        }

    @invariant()
    def good_bytes_are_one_archive_each(self) -> None:
        registered = self.store.rows(
            "SELECT a.sha256, count(d.id) AS n FROM archives a LEFT JOIN deliveries d"
            " ON d.archive_id = a.id AND d.status = 'registered' GROUP BY a.sha256"
        )
        assert all(row.n == 1 for row in registered)
        # Every unpack read its archive: no digest is left unknown.
        assert self.store.scalar("SELECT count(*) FROM archives WHERE sha256 IS NULL") == 0
        assert self.expected_archives <= {row.sha256 for row in registered}
        for row in self.store.rows("SELECT path FROM audio_files"):
            assert Path(row.path).is_file()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_no_sequence_of_deliveries_loses_or_overwrites_anything(backend, request):
    IntakeMachine.store_url = request.getfixturevalue("pg_url") if backend == "postgres" else ""
    try:
        run_state_machine_as_test(
            IntakeMachine,
            settings=settings(
                max_examples=80 if backend == "sqlite" else 25,
                stateful_step_count=30,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow],
            ),
        )
    finally:
        IntakeMachine.store_url = ""
