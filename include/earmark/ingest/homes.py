"""Where intake's files end up, keyed by ids (see `earmark.ingest.intake` for the layout), and
moving a claimed delivery there once the DB has recorded where it belongs."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import sqlalchemy as sa

from earmark.config import Settings
from earmark.ingest import intake
from earmark.ingest.verdicts import described
from earmark.names import printable
from earmark.statuses import ArchiveStatus, DeliveryStatus
from earmark.store.db import Store


def audio_home(settings: Settings, run_date: str, archive_id: int) -> Path:
    """Where an archive's accepted files live."""
    return settings.audio / run_date / f"archive-{archive_id}"


def archive_quarantine(settings: Settings, run_date: str, archive_id: int) -> Path:
    """Where an archive's refused files, or the rejected archive itself, live."""
    return settings.quarantine / run_date / f"archive-{archive_id}"


def _delivery_home(settings: Settings, row: sa.Row) -> Path | None:
    """Where a delivery's own files belong once settled; None while its archive awaits unpack."""
    run_date = str(row.run_date)
    if row.status == DeliveryStatus.REJECTED:
        return settings.quarantine / run_date / f"delivery-{row.id}"
    if row.status == DeliveryStatus.DUPLICATE:
        return settings.processed / run_date / f"duplicate-{row.id}"
    archive_date = str(row.archive_date)
    if row.archive_status == ArchiveStatus.UNPACKED:
        return settings.processed / archive_date / f"archive-{row.archive_id}"
    if row.archive_status == ArchiveStatus.REJECTED:
        return archive_quarantine(settings, archive_date, row.archive_id)
    return None


def write_reason(path: Path, reason: dict[str, object]) -> None:
    """Write a ``*.reason.json`` beside what it explains (ASCII: names are escaped)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(reason, indent=2, ensure_ascii=True), encoding="utf-8")


def remove_path(path: Path) -> None:
    """Remove a file, link or folder (a link is removed, never followed)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif os.path.lexists(path):
        path.unlink()


_DELIVERY_SQL = (
    "SELECT d.id, d.token, d.name, d.run_date, d.status, d.reason, d.archive_id, d.path,"
    " a.status AS archive_status, a.run_date AS archive_date, a.error AS archive_error"
    " FROM deliveries d LEFT JOIN archives a ON a.id = d.archive_id"
)


def settle_delivery(settings: Settings, store: Store, token: str) -> None:
    """Move a claimed delivery to the home its DB state gives it, and record the path there.

    Idempotent: a no-op once moved, or while its archive still awaits unpack.
    """
    folder = settings.claimed / token
    rows = store.rows(_DELIVERY_SQL + " WHERE d.token = :t", t=token)
    home = _delivery_home(settings, rows[0]) if rows else None
    if home is None:
        return
    row = rows[0]
    if row.path != str(home):  # the DB says where first, so an interrupted move resumes
        with store.begin() as conn:
            conn.execute(
                sa.text("UPDATE deliveries SET path = :p WHERE id = :id"),
                {"p": str(home), "id": row.id},
            )
            if row.status == DeliveryStatus.REGISTERED:
                conn.execute(
                    sa.text("UPDATE archives SET path = :p WHERE id = :id"),
                    {"p": str(home / row.name), "id": row.archive_id},
                )
        intake.step_done("settle.recorded")
    if not folder.exists():
        return
    if row.status == DeliveryStatus.REJECTED:
        removed = _remove_links(folder)
        write_reason(
            home.with_name(f"{home.name}.reason.json"),
            {"delivery": row.id, "name": row.name, "reason": row.reason}
            | ({"links_removed": removed} if removed else {}),
        )
        intake.step_done("settle.reason")
    home.parent.mkdir(parents=True, exist_ok=True)
    if os.path.lexists(home):
        raise FileExistsError(f"{home} exists; delivery {row.id} cannot move there")
    folder.rename(home)
    intake.step_done("settle.moved")


def _remove_links(folder: Path) -> list[str]:
    """Remove what a rejected delivery holds that is not a plain file of its own (symbolic and
    hard links, FIFOs, sockets, devices), never following or opening one; what went, with
    link targets. Kept under quarantine/ they could point outside the data root."""
    removed = []
    for parent, dirs, files in os.walk(folder):
        for name in [*dirs, *files]:
            path = Path(parent) / name
            info = path.lstat()
            if stat.S_ISDIR(info.st_mode) or (stat.S_ISREG(info.st_mode) and info.st_nlink == 1):
                continue
            what = described(path, printable(str(path.relative_to(folder))), info.st_mode)
            if stat.S_ISREG(info.st_mode):
                what += f" with {info.st_nlink} hard links"
            path.unlink()
            removed.append(what)
    return removed


def settle_claimed(settings: Settings, store: Store) -> None:
    """Move every claimed delivery whose verdict is final to its home (see `settle_delivery`)."""
    for folder in sorted(settings.claimed.iterdir()) if settings.claimed.is_dir() else []:
        settle_delivery(settings, store, folder.name)
