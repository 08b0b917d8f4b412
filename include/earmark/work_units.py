"""Plan the day's GPU work units: one mapped GPU task per unit, each well under an hour.

A *work unit* is a set of files one GPU task transcribes and screens (a row of ``gpu_batches``);
a *micro-unit* is what one model forward pass takes inside it (``earmark.inference``). Files are
packed longest first by audio seconds, so units come out balanced and the mapped count stays far
below Airflow's ``max_map_length``. XCom carries unit ids only.
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
    """Greedy first-fit over files sorted longest first; an over-long file gets its own unit."""
    units: list[list[FileLength]] = []
    loads: list[float] = []
    for item in sorted(files, key=lambda f: (-f.duration_s, f.file_id)):
        for index, unit in enumerate(units):
            if len(unit) < max_files and loads[index] + item.duration_s <= max_audio_s:
                unit.append(item)
                loads[index] += item.duration_s
                break
        else:
            units.append([item])
            loads.append(item.duration_s)
    return units


def plan_work_units(
    store: Store, run_id: str, run_date: str, *, reprocess: bool, max_audio_s: float, max_files: int
) -> list[int]:
    """Record the units of ``run_id`` (replacing an earlier try's plan); return their ids.

    Without ``reprocess`` only files still waiting for a stage are planned; with it, every live
    file of the day is planned again.
    """
    statuses = ALL_LIVE_STATUSES if reprocess else PENDING_STATUSES
    query = sa.text(
        "SELECT f.id, f.duration_s FROM audio_files f JOIN archives a ON a.id = f.archive_id"
        " WHERE a.run_date = :d AND f.status IN :statuses"
    ).bindparams(sa.bindparam("statuses", expanding=True))
    with store.engine.connect() as conn:
        rows = conn.execute(query, {"d": run_date, "statuses": [s.value for s in statuses]}).all()
    files = [FileLength(r.id, float(r.duration_s or 0.0)) for r in rows]
    units = pack(files, max_audio_s, max_files)
    ids = []
    with store.begin() as conn:
        old = (
            conn.execute(sa.text("SELECT id FROM gpu_batches WHERE run_id = :r"), {"r": run_id})
            .scalars()
            .all()
        )
        for unit_id in old:
            conn.execute(sa.text("DELETE FROM batch_files WHERE batch_id = :b"), {"b": unit_id})
        conn.execute(sa.text("DELETE FROM gpu_batches WHERE run_id = :r"), {"r": run_id})
        for seq, unit in enumerate(units):
            unit_id = conn.execute(
                sa.text(
                    "INSERT INTO gpu_batches (run_id, run_date, seq, n_files, audio_s)"
                    " VALUES (:r, :d, :seq, :n, :a) RETURNING id"
                ),
                {
                    "r": run_id,
                    "d": run_date,
                    "seq": seq,
                    "n": len(unit),
                    "a": sum(f.duration_s for f in unit),
                },
            ).scalar_one()
            conn.execute(
                sa.text("INSERT INTO batch_files (batch_id, file_id) VALUES (:b, :f)"),
                [{"b": unit_id, "f": f.file_id} for f in unit],
            )
            ids.append(unit_id)
    return ids


def unit_label(store: Store, unit_id: int) -> str:
    """A readable name for the UI's map index: date, sequence, size (never content)."""
    row = store.rows("SELECT run_date, seq, n_files FROM gpu_batches WHERE id = :b", b=unit_id)[0]
    return f"{row.run_date} unit {row.seq:03d} ({row.n_files} files)"
