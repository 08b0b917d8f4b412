"""Names that come from outside (archive and member names): what is refused, how they are shown.

Why: a name is shown to people (review pages, CLI, logs) and a bidirectional override or an
invisible character can make one recording's name read as another's. Names holding control,
bidi or other invisible format characters are refused at intake; ``printable`` escapes them
wherever a name from before that rule, or a refused one, must still be shown.
"""

from __future__ import annotations

import unicodedata

# Zero-width (non-)joiners are Cf but part of ordinary spelling in several scripts.
_ALLOWED_FORMAT = frozenset({"\u200c", "\u200d"})
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp", "Co", "Cn"})


def _refused(char: str) -> bool:
    if char in _ALLOWED_FORMAT:
        return False
    return unicodedata.category(char) in _REFUSED_CATEGORIES


def unsafe_characters(name: str) -> list[str]:
    """The characters of ``name`` that a shown name must not hold (control, bidi, invisible)."""
    return [char for char in name if _refused(char)]


def _escape(char: str) -> str:
    if ord(char) <= 0xFF:
        return f"\\x{ord(char):02x}"
    if ord(char) <= 0xFFFF:
        return f"\\u{ord(char):04x}"
    return f"\\U{ord(char):08x}"


def _clusters(name: str) -> list[str]:
    """``name`` cut before each character that NFC leaves apart from what precedes it: a
    cluster is a character with the combining marks (and composing jamo) that follow it."""
    clusters: list[str] = []
    for char in name:
        if clusters and (
            unicodedata.combining(char)
            or len(unicodedata.normalize("NFC", clusters[-1] + char))
            <= len(unicodedata.normalize("NFC", clusters[-1]))
        ):
            clusters[-1] += char
        else:
            clusters.append(char)
    return clusters


def _changed_by_nfc(name: str) -> set[int]:
    """The positions in ``name`` that NFC would change, to be shown escaped: after a base
    character, the marks it would absorb or reorder (``cafe\\u0301``); a character NFC
    replaces on its own (``\\u212b``, the Angstrom sign) itself."""
    changed: set[int] = set()
    start = 0
    for cluster in _clusters(name):
        if not unicodedata.is_normalized("NFC", cluster):
            if not unicodedata.is_normalized("NFC", cluster[0]):
                changed.add(start)
            changed.update(range(start + 1, start + len(cluster)))
        start += len(cluster)
    return changed


def printable(name: str, keep: frozenset[str] = frozenset(), *, normalisation: bool = True) -> str:
    """``name`` with every refused character written as an escape (``\\u202e``); the characters
    in ``keep`` stay as they are.

    With ``normalisation`` (names), a name that is not in NFC also shows the characters NFC
    would compose, reorder or replace as escapes, so that "café" typed as ``e`` + U+0301
    (shown ``cafe\\u0301``) does not read as the "café" typed as U+00E9 beside it: two names
    that differ only in their normalisation look different. A name in NFC shows as it is.
    """
    changed: set[int] = set()
    if normalisation and not unicodedata.is_normalized("NFC", name):
        changed = _changed_by_nfc(name)
    return "".join(
        _escape(char) if i in changed or (char not in keep and _refused(char)) else char
        for i, char in enumerate(name)
    )


_LINE_BREAKS = frozenset({"\n", "\t"})


def printable_text(text: str) -> str:
    """A longer text (a transcript) shown as ``printable`` shows a name, its line breaks and
    tabs kept: a bidi override in it cannot reorder what a reviewer reads. Its normalisation
    is left alone: a transcript is read, not told apart from another."""
    return printable(text, keep=_LINE_BREAKS, normalisation=False)
