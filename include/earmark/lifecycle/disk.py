"""What an erasure removes from disk, and how many bytes that frees: paths under the data root
only, links removed and never followed (the homes are those of `earmark.ingest.intake`)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from earmark.config import Settings
from earmark.ingest.homes import archive_quarantine, audio_home, remove_path


class OutsideDataRootError(Exception):
    """A recorded path that does not lie under ``EARMARK_DATA_ROOT``: never removed."""


def inside_data_root(settings: Settings, path: Path) -> Path:
    """``path`` when it lies under the data root (its folder resolved, the name itself never
    followed); OutsideDataRootError otherwise."""
    root = Path(os.path.realpath(settings.data_root))
    where = Path(os.path.realpath(path.parent)) / path.name
    if not where.is_relative_to(root) or where == root:
        raise OutsideDataRootError(f"{where} is not under EARMARK_DATA_ROOT ({root})")
    return path


def archive_homes(
    settings: Settings, archive_id: int, run_date: str, duplicates: Iterable[tuple[int, str]]
) -> list[Path]:
    """Every place an archive's delivered bytes or its recordings may lie, existing or not: the
    archive and its marker in processed/, each duplicate delivery of the same bytes there, its
    quarantine home and reason file (refused recordings, or the archive rejected for its
    content), and its audio home."""
    quarantine = archive_quarantine(settings, run_date, archive_id)
    return [
        settings.processed / run_date / f"archive-{archive_id}",
        *(settings.processed / day / f"duplicate-{delivery}" for delivery, day in duplicates),
        quarantine,
        quarantine.with_name(f"{quarantine.name}.reason.json"),
        audio_home(settings, run_date, archive_id),
    ]


def size_of(path: Path, leave_out: frozenset[str] = frozenset()) -> tuple[int, int]:
    """(regular files, bytes) at ``path``: a file, or everything under a folder, links not
    followed; files named in ``leave_out`` are not counted (they are counted elsewhere)."""
    try:
        info = path.lstat()
    except FileNotFoundError:
        return 0, 0
    if not path.is_dir() or path.is_symlink():
        regular = str(path) not in leave_out and path.is_file() and not path.is_symlink()
        return (1, info.st_size) if regular else (0, 0)
    files = size = 0
    for parent, _dirs, names in os.walk(path):
        for name in names:
            n, b = size_of(Path(parent) / name, leave_out)
            files, size = files + n, size + b
    return files, size


def remove(settings: Settings, paths: Iterable[Path]) -> None:
    """Remove each path that is there (a file, link or folder); idempotent."""
    for path in paths:
        remove_path(inside_data_root(settings, path))


def remove_empty_folders(settings: Settings, folder: Path) -> None:
    """Remove ``folder`` when a removal left it empty, then each folder above it left so (a
    recording's folder, its archive's, its day's), never the data root's own (audio/, ...)."""
    root = Path(os.path.realpath(settings.data_root))
    folder = Path(os.path.realpath(folder))
    while folder.is_relative_to(root) and root not in (folder, folder.parent):
        try:
            folder.rmdir()
        except OSError:  # not empty (or gone): what is above it is not empty either
            return
        folder = folder.parent


def remove_audio_file(settings: Settings, path: Path) -> None:
    """Remove one recording's audio file and the folders it leaves empty; a refused recording's
    (in quarantine/) takes its archive's reason file with it once no refused file is left."""
    remove(settings, [path])
    remove_empty_folders(settings, path.parent)
    where = (
        path.relative_to(settings.quarantine).parts
        if path.is_relative_to(settings.quarantine)
        else ()
    )
    if len(where) < 3:  # not quarantine/DAY/archive-ID/...
        return
    folder = settings.quarantine / where[0] / where[1]
    if not folder.exists():
        remove(settings, [folder.with_name(f"{folder.name}.reason.json")])
        remove_empty_folders(settings, folder.parent)
