"""Plan the day's GPU batches: one mapped GPU task per batch, each well under an hour.

Files are packed longest first by audio seconds, so batches come out balanced and the mapped count
stays far below Airflow's ``max_map_length``. XCom carries batch ids only.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from earmark.statuses import FileStatus
from earmark.store.db import Store

PENDING_STATUSES = (FileStatus.READY, FileStatus.TRANSCRIBED)
ALL_LIVE_STATUSES = (FileStatus.READY, FileStatus.TRANSCRIBED, FileStatus.CLASSIFIED)


@dataclass(frozen=True)
class FileLength:
    file_id: int
    duration_s: float


def pack(files: list[FileLength], max_audio_s: float, max_files: int) -> list[list[FileLength]]:
    """Greedy first-fit over files sorted longest first; an over-long file gets its own batch."""
    batches: list[list[FileLength]] = []
    loads: list[float] = []
    for item in sorted(files, key=lambda f: (-f.duration_s, f.file_id)):
        for index, batch in enumerate(batches):
            if len(batch) < max_files and loads[index] + item.duration_s <= max_audio_s:
                batch.append(item)
                loads[index] += item.duration_s
                break
        else:
            batches.append([item])
            loads.append(item.duration_s)
    return batches


def plan_batches(
    store: Store, run_id: str, run_date: str, *, reprocess: bool, max_audio_s: float, max_files: int
) -> list[int]:
    """Record the batches of ``run_id`` (replacing an earlier try's plan); return their ids.

    Without ``reprocess`` only files still waiting for a stage are planned; with it, every live
    file of the day is planned again.
    """
    statuses = ALL_LIVE_STATUSES if reprocess else PENDING_STATUSES
    rows = store.rows(
        "SELECT f.id, f.duration_s FROM audio_files f JOIN archives a ON a.id = f.archive_id"
        f" WHERE a.run_date = :d AND f.status IN ({', '.join(repr(s) for s in statuses)})",
        d=run_date,
    )
    files = [FileLength(r.id, float(r.duration_s or 0.0)) for r in rows]
    batches = pack(files, max_audio_s, max_files)
    ids = []
    with store.begin() as conn:
        old = (
            conn.execute(sa.text("SELECT id FROM gpu_batches WHERE run_id = :r"), {"r": run_id})
            .scalars()
            .all()
        )
        for batch_id in old:
            conn.execute(sa.text("DELETE FROM batch_files WHERE batch_id = :b"), {"b": batch_id})
        conn.execute(sa.text("DELETE FROM gpu_batches WHERE run_id = :r"), {"r": run_id})
        for seq, batch in enumerate(batches):
            batch_id = conn.execute(
                sa.text(
                    "INSERT INTO gpu_batches (run_id, run_date, seq, n_files, audio_s)"
                    " VALUES (:r, :d, :seq, :n, :a) RETURNING id"
                ),
                {
                    "r": run_id,
                    "d": run_date,
                    "seq": seq,
                    "n": len(batch),
                    "a": sum(f.duration_s for f in batch),
                },
            ).scalar_one()
            conn.execute(
                sa.text("INSERT INTO batch_files (batch_id, file_id) VALUES (:b, :f)"),
                [{"b": batch_id, "f": f.file_id} for f in batch],
            )
            ids.append(batch_id)
    return ids


def batch_label(store: Store, batch_id: int) -> str:
    """A readable name for the UI's map index: date, sequence, size (never content)."""
    row = store.rows("SELECT run_date, seq, n_files FROM gpu_batches WHERE id = :b", b=batch_id)[0]
    return f"{row.run_date} b{row.seq:03d} ({row.n_files} files)"
