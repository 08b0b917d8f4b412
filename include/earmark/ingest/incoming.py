"""The ``incoming/`` contract, shared by whoever writes archives there and by intake.

An archive ``NAME.tar`` (or another of `earmark.ingest.formats.ARCHIVE_SUFFIXES`: ``.tar.gz``,
``.tgz``) is ready once ``NAME.tar.sha256`` exists beside it, written last, holding the archive's
hex sha256 (``sha256sum`` output is fine). Light on purpose: the transfer DAG, the sample-data
generator and intake all import it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

MARKER_SUFFIX = ".sha256"
_HEX = frozenset("0123456789abcdef")
_CHUNK = 4 * 1024 * 1024


def marker_path(archive: Path) -> Path:
    """The ready marker of an archive: the archive's name plus ``.sha256``."""
    return archive.with_name(f"{archive.name}{MARKER_SUFFIX}")


def marker_text(digest: str, name: str) -> str:
    """A marker's content, as ``sha256sum`` writes it."""
    return f"{digest}  {name}\n"


def parse_marker(text: str) -> str | None:
    """The hex digest a marker holds, or None when it holds none."""
    token = text.split(maxsplit=1)[0].lower() if text.strip() else ""
    # sha256sum starts the line with a backslash when it had to escape the file's name.
    token = token.removeprefix("\\")
    return token if len(token) == 64 and set(token) <= _HEX else None


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, streamed."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
