"""The extraction's destination side: enough free disk first, no temporaries a killed earlier
attempt left, and nothing that exists ever replaced (see `earmark.ingest.extract`)."""

from __future__ import annotations

import contextlib
import errno
import math
import os
import re
import shutil
from pathlib import Path

_DISK_BLOCK = 4096


class InsufficientDisk(OSError):  # noqa: N818 - public name fixed by the API
    """Not enough free space to extract right now; retry later, the archive is fine."""

    def __init__(self, path: Path, needed: int, free: int, margin: int = 0) -> None:
        super().__init__(
            errno.ENOSPC,
            f"need {needed} bytes ({needed - margin} for the members and a margin of {margin};"
            f" EARMARK_FREE_DISK_MARGIN_MB/_SHARE set it), {free} free",
            str(path),
        )
        self.path = Path(path)
        self.needed = needed
        self.free = free

        self.margin = margin

    def __reduce__(self) -> tuple[type[InsufficientDisk], tuple[Path, int, int, int]]:
        return (type(self), (self.path, self.needed, self.free, self.margin))


def _space_needed(sizes: list[int]) -> int:
    """Disk bytes ``sizes`` take, in whole blocks, with a block for each entry and the root."""
    blocks = sum(-(-size // _DISK_BLOCK) + 1 for size in sizes)
    return (blocks + 1) * _DISK_BLOCK


def check_free_disk(
    directory: Path, sizes: list[int], margin_bytes: int, margin_share: float
) -> None:
    """Raise `InsufficientDisk` unless ``directory``'s volume holds entries of ``sizes`` and a
    margin of ``margin_bytes`` plus ``margin_share`` of what they need."""
    members = _space_needed(sizes)
    margin = margin_bytes + math.ceil(margin_share * members)
    free = shutil.disk_usage(directory).free
    if free < members + margin:
        raise InsufficientDisk(directory, members + margin, free, margin)


def _leftover_pattern(name: str) -> re.Pattern[str]:
    return re.compile(rf"\.tmp-{re.escape(name)}-[0-9a-f]{{8}}")


def _remove_tree(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def remove_stale(parent: Path, name: str) -> None:
    """Remove temporary folders a killed earlier attempt for this same destination left."""
    pattern = _leftover_pattern(name)
    for entry in parent.iterdir():
        if pattern.fullmatch(entry.name):
            _remove_tree(entry)


def refuse_existing(destination: Path) -> None:
    """An existing destination is never replaced: `FileExistsError`."""
    if os.path.lexists(destination):
        raise FileExistsError(errno.EEXIST, "extraction destination exists", str(destination))
