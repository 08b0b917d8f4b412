"""Screening policies: one markdown file per policy, in CoPE's published format.

The sha256 of the file bytes is stored with every score so a result can always be
traced to the exact policy text that produced it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Policy:
    """A named policy text and the sha256 (hex) of its file bytes."""

    name: str
    text: str
    sha256: str


def load_policies(directory: Path) -> list[Policy]:
    """Load every ``*.md`` file in ``directory``, sorted by name (the file stem).

    ``text`` has surrounding whitespace stripped so the prompt layout is exact;
    ``sha256`` is over the unmodified file bytes.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise ValueError(f"policy directory does not exist: {directory}")
    files = sorted(directory.glob("*.md"), key=lambda p: p.stem)
    if not files:
        raise ValueError(f"no *.md policy files in {directory}")
    policies = []
    for path in files:
        raw = path.read_bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"policy file is not UTF-8: {path.name}") from exc
        if not text.strip():
            raise ValueError(f"policy file is empty: {path.name}")
        digest = hashlib.sha256(raw).hexdigest()
        policies.append(Policy(name=path.stem, text=text.strip(), sha256=digest))
    return policies
