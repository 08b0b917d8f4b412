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


def printable(name: str, keep: frozenset[str] = frozenset()) -> str:
    """``name`` with every refused character written as an escape (``\\u202e``), nothing else;
    the characters in ``keep`` stay as they are."""
    out = []
    for char in name:
        if char in keep or not _refused(char):
            out.append(char)
        elif ord(char) <= 0xFF:
            out.append(f"\\x{ord(char):02x}")
        elif ord(char) <= 0xFFFF:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(f"\\U{ord(char):08x}")
    return "".join(out)


_LINE_BREAKS = frozenset({"\n", "\t"})


def printable_text(text: str) -> str:
    """A longer text (a transcript) shown as ``printable`` shows a name, its line breaks and
    tabs kept: a bidi override in it cannot reorder what a reviewer reads."""
    return printable(text, keep=_LINE_BREAKS)
