"""A day written straight into the results DB, with figures known in advance: the monitoring,
report and alert tests check their answers against it, and the README's report picture shows it.

Day 2026-11-29 (deadline 12:00 Europe/London = 12:00 UTC):
- deliveries: 3 registered, 1 duplicate, 1 rejected (checksum_mismatch)
- archives: a.tar unpacked (3 files: 2 classified, 1 quarantined bad_audio), b.tar unpacked
  (2 files: 1 classified, 1 ready), c.tar registered (no files yet)
- classified files: 60 s at 08:00, 120 s at 09:00, 30 s at 10:30 (UTC); the ready file 90 s
- labels: harassment and self_harm for each classified file (written when it was classified);
  harassment flags 2, self_harm 1
- review items: harassment pending + resolved, self_harm claimed until 23:00 UTC
- GPU units: run "r1" seq 1 (a.tar's files, finished: 180 s audio in 2 + 1 s) and seq 2
  (b.tar's files, transcribed only); run "r2" seq 1 (the ready file, not started)
- task failures: r1's transcribe of unit 2 tried twice, then report once
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from earmark.store.db import Store

DAY = "2026-11-29"
OTHER_DAY = "2026-11-28"


def at(hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 11, 29, hour, minute, tzinfo=UTC)


def build(store: Store) -> dict[str, int]:
    """Write the day; the ids of what was written, by name."""
    ids: dict[str, int] = {}
    ts = store.timestamp
    with store.begin() as conn:

        def insert(table: str, **values: object) -> int:
            columns = ", ".join(values)
            marks = ", ".join(f":{k}" for k in values)
            sql = f"INSERT INTO {table} ({columns}) VALUES ({marks}) RETURNING "
            sql += "id" if table != "work_unit_files" else "unit_id"
            return int(conn.execute(sa.text(sql), values).scalar_one())

        for name, sha in (("a.tar", "a" * 64), ("b.tar", "b" * 64), ("c.tar", "c" * 64)):
            status = "registered" if name == "c.tar" else "unpacked"
            ids[name] = insert(
                "archives",
                name=name,
                sha256=sha,
                run_date=DAY,
                status=status,
                path=f"/data/{name}",
                updated_at=ts(at(7)),
            )
            insert(
                "deliveries",
                token=f"t-{name}",
                name=name,
                run_date=DAY,
                status="registered",
                sha256=sha,
                archive_id=ids[name],
                path=f"/data/{name}",
                received_at=ts(at(6, 30)),
            )
        insert(
            "deliveries",
            token="t-dup",  # noqa: S106 - a delivery token, not a secret
            name="a-again.tar",
            run_date=DAY,
            status="duplicate",
            sha256="a" * 64,
            archive_id=ids["a.tar"],
            path="/data/dup",
            received_at=ts(at(6, 40)),
        )
        insert(
            "deliveries",
            token="t-bad",  # noqa: S106 - a delivery token, not a secret
            name="cut.tar",
            run_date=DAY,
            status="rejected",
            reason="checksum_mismatch: marker says 1234, archive is 5678",
            path="/data/cut",
            received_at=ts(at(6, 45)),
        )
        files = (
            ("a.tar", "x1.wav", "classified", 60.0, at(8), None),
            ("a.tar", "x2.wav", "classified", 120.0, at(9), None),
            ("a.tar", "bad.wav", "quarantined", None, at(7), "bad_audio: not a sound file"),
            ("b.tar", "y1.wav", "classified", 30.0, at(10, 30), None),
            ("b.tar", "y2.wav", "ready", 90.0, at(7), None),
        )
        for archive, member, status, seconds, done, error in files:
            ids[member] = insert(
                "audio_files",
                archive_id=ids[archive],
                member_path=member,
                path=f"/audio/{member}",
                duration_s=seconds,
                status=status,
                error=error,
                updated_at=ts(done),
            )
        flagged = {("x1.wav", "harassment"), ("x2.wav", "harassment"), ("y1.wav", "self_harm")}
        classified_at = {member: done for _, member, status, _, done, _ in files}
        for member in ("x1.wav", "x2.wav", "y1.wav"):
            for policy in ("harassment", "self_harm"):
                label = int((member, policy) in flagged)
                insert(
                    "labels",
                    file_id=ids[member],
                    policy=policy,
                    policy_sha="p",
                    model="m",
                    score=0.9 if label else 0.1,
                    label=label,
                    created_at=ts(classified_at[member]),
                )
        for member, policy, status in (
            ("x1.wav", "harassment", "pending"),
            ("x2.wav", "harassment", "resolved"),
            ("y1.wav", "self_harm", "claimed"),
        ):
            decision = "violation" if status == "resolved" else None
            claim = {"claimed_by": "ana", "claimed_until": at(23)} if status == "claimed" else {}
            insert(
                "review_queue",
                file_id=ids[member],
                policy=policy,
                policy_sha="p",
                model="m",
                score=0.9,
                status=status,
                decision=decision,
                **claim,
            )
        units = (
            ("r1", 1, ("x1.wav", "x2.wav"), 180.0, 2.0, 1.0),
            ("r1", 2, ("y1.wav", "y2.wav"), 120.0, 3.0, None),
            ("r2", 1, ("y2.wav",), 90.0, None, None),
        )
        for run_id, seq, members, audio_s, transcribe_s, classify_s in units:
            unit = insert(
                "work_units",
                run_id=run_id,
                run_date=DAY,
                seq=seq,
                n_files=len(members),
                audio_s=audio_s,
                expected_gpu_s=audio_s / 100,
                transcribe_wall_s=transcribe_s,
                classify_wall_s=classify_s,
                created_at=ts(at(7, seq)),
            )
            ids[f"{run_id}/{seq}"] = unit
            for member in members:
                insert("work_unit_files", unit_id=unit, file_id=ids[member])
        for task_id, map_index, tries, minute in (
            ("gpu_unit.transcribe", 1, 2, 5),
            ("report", -1, 1, 30),
        ):
            for try_number in range(1, tries + 1):
                insert(
                    "task_failures",
                    run_id="r1",
                    run_date=DAY,
                    task_id=task_id,
                    map_index=map_index,
                    map_name="unit 2 of r1" if map_index >= 0 else None,
                    try_number=try_number,
                    reason=f"RuntimeError: try {try_number}",
                    failed_at=ts(at(11, minute + try_number)),
                )
        # Another day, so every per-day query is seen to keep to its day.
        other = insert(
            "archives",
            name="old.tar",
            sha256="d" * 64,
            run_date=OTHER_DAY,
            status="unpacked",
            path="/data/old",
        )
        insert(
            "audio_files",
            archive_id=other,
            member_path="old.wav",
            path="/audio/old.wav",
            duration_s=5.0,
            status="classified",
            updated_at=ts(datetime(2026, 11, 28, 9, tzinfo=UTC)),
        )
    return ids
