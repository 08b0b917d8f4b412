"""How names from outside are shown: refused characters escaped, and two names that differ only
in their Unicode normalisation told apart (issue 27, item 6)."""

import unicodedata

import pytest
from earmark.names import printable, printable_text

NFC = "caf\u00e9.wav"  # é as one code point
NFD = "cafe\u0301.wav"  # e + COMBINING ACUTE ACCENT


def test_names_differing_only_in_normalisation_look_different() -> None:
    assert unicodedata.normalize("NFC", NFD) == NFC  # the same name to a reader
    assert printable(NFC) == NFC  # an NFC name shows as it is
    assert printable(NFD) == "cafe\\u0301.wav"
    assert printable(NFC) != printable(NFD)


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        ("\u212b.wav", "\\u212b.wav"),  # ANGSTROM SIGN, which NFC replaces by U+00C5
        ("a\u0316\u0301", "a\\u0316\\u0301"),  # composes to á, the other mark kept
        ("q\u0307\u0323", "q\\u0307\\u0323"),  # marks out of canonical order
        ("\u1100\u1161\u11a8", "\u1100\\u1161\\u11a8"),  # Hangul jamo that compose to 각
        ("नमस्ते cafe\u0301", "नमस्ते cafe\\u0301"),  # only what NFC changes is escaped
        ("e\u0301\u202e", "e\\u0301\\u202e"),  # with a refused character too
    ],
)
def test_what_nfc_would_change_is_escaped(name: str, shown: str) -> None:
    assert printable(name) == shown


@pytest.mark.parametrize("name", ["café.wav", "नमस्ते.wav", "q\u0323\u0307.wav", "각.flac", "plain"])
def test_nfc_names_with_marks_show_as_they_are(name: str) -> None:
    assert unicodedata.is_normalized("NFC", name)
    assert printable(name) == name


def test_refused_characters_are_escaped() -> None:
    assert printable("a\u202eb\x07\U000e0041") == "a\\u202eb\\x07\\U000e0041"


def test_transcripts_keep_their_normalisation_and_line_breaks() -> None:
    """A transcript is read, not told apart from another: only refused characters escaped."""
    text = "line one cafe\u0301\n\tline two \u202e"
    assert printable_text(text) == "line one cafe\u0301\n\tline two \\u202e"
