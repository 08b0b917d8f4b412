"""Every reason code Earmark records when it refuses or sets aside input, with what it means.

A refusal is stored as ``"code: detail"`` (``deliveries.reason``, ``archives.error``,
``audio_files.error``, ``transfers.error``). The code is one of these; the detail is for people.
The test suite fails when the code raises or records a code missing here, and the README's table
is generated from this list (``reasons_table_markdown``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Reason:
    """One reason code: where it is recorded and what it means."""

    code: str
    recorded_on: tuple[str, ...]  # delivery, archive, file, transfer
    meaning: str


REASONS: tuple[Reason, ...] = (
    # Deliveries, before registration: the bytes are not barred.
    Reason("bad_marker", ("delivery",), "The marker does not hold a sha256 hex digest."),
    Reason(
        "checksum_mismatch",
        ("delivery", "transfer"),
        "The bytes do not match the digest their marker (or the source's .sha256) gives.",
    ),
    Reason("marker_without_archive", ("delivery",), "A marker arrived with no archive beside it."),
    Reason(
        "not_a_regular_file",
        ("delivery",),
        "A link, FIFO, device, socket or directory in incoming/; never followed or opened.",
    ),
    Reason(
        "unreadable",
        ("delivery", "file"),
        "The file could not be opened or read, or libsndfile does not recognise it.",
    ),
    Reason(
        "invalid_name",
        ("delivery", "archive"),
        "A name holding control, bidi or invisible characters, a backslash, or nothing "
        "before its suffix; or a member name that is empty or not UTF-8.",
    ),
    Reason(
        "unsupported_suffix", ("delivery",), "The archive name ends in none of .tar, .tar.gz, .tgz."
    ),
    Reason(
        "hard_link",
        ("delivery",),
        "A file in incoming/ with more than one hard link (it may be a file outside the data "
        "root); never opened, the link removed.",
    ),
    Reason(
        "marker_missing",
        ("delivery",),
        "A claimed archive without its marker (an interrupted claim or a hand-made folder); set "
        "aside, never opened.",
    ),
    Reason(
        "vanished",
        ("delivery", "archive", "file"),
        "A delivery, archive or file disappeared after intake recorded it (deleted or moved by "
        "hand); nothing was screened from it.",
    ),
    Reason(
        "erased",
        ("delivery", "file"),
        "The same bytes (or some of their recordings) were erased on request (`earmark erase`):"
        " a redelivery is a duplicate that is not screened again; the reason gives the erasure's"
        " id and date. A recording being erased is set aside with it until its rows go.",
    ),
    # Archives: the content is refused, and a later delivery of the same bytes says so.
    Reason("not_a_tar", ("archive",), "Not a tar (or gzip-compressed tar) archive."),
    Reason("corrupt", ("archive",), "A damaged header, gzip stream or member."),
    Reason(
        "truncated", ("archive", "file"), "The archive or the audio ends early: data is missing."
    ),
    Reason("path_traversal", ("archive",), "A member name climbs out with '..'."),
    Reason("absolute_path", ("archive",), "A member name is absolute."),
    Reason(
        "unsafe_member_type",
        ("archive",),
        "A member that is a link, device, FIFO or sparse file; only files and folders pass.",
    ),
    Reason("path_too_long", ("archive",), "A member path or name is longer than allowed."),
    Reason("path_too_deep", ("archive",), "A member path is nested deeper than allowed."),
    Reason("duplicate_member", ("archive",), "Two members share one name."),
    Reason("path_conflict", ("archive",), "One path is both a file and a folder."),
    Reason("too_many_members", ("archive",), "More members than allowed."),
    Reason("member_too_large", ("archive",), "A member declares more bytes than allowed."),
    Reason("archive_too_large", ("archive",), "The members together exceed the size cap."),
    Reason(
        "compression_ratio",
        ("archive",),
        "A .tar.gz whose members declare more than EARMARK_MAX_COMPRESSION_RATIO bytes per "
        "compressed byte (a gzip bomb).",
    ),
    # Files, quarantined: the rest of the archive goes on.
    Reason("unsupported_extension", ("file",), "Not a .wav or .flac file."),
    Reason("format_mismatch", ("file",), "The content is not the format its extension says."),
    Reason("bad_sample_rate", ("file",), "A sample rate outside the accepted range."),
    Reason("too_many_channels", ("file",), "More channels than accepted."),
    Reason(
        "bad_header",
        ("file",),
        "The audio header is impossible: a WAV fmt chunk giving 0 channels or a block align of 0.",
    ),
    Reason("empty", ("file",), "The file holds no audio: 0 frames or an empty data chunk."),
    Reason("too_short", ("file",), "Shorter than the minimum duration."),
    Reason("too_long", ("file",), "Longer than EARMARK_MAX_AUDIO_SECONDS."),
    Reason(
        "header_data_mismatch",
        ("file",),
        "The header declares more audio than the file holds (a WAV's data chunk, a FLAC's "
        "total samples beyond what its size can hold).",
    ),
    Reason("non_finite", ("file",), "Float samples holding NaN or Inf."),
    Reason("out_of_range", ("file",), "Float samples beyond ±1.0."),
    Reason(
        "undecodable",
        ("file",),
        "Validated at intake but could not be decoded by the GPU stage (damaged since).",
    ),
    # Transfers.
    Reason("bad_companion", ("transfer",), "The source's NAME.sha256 holds no sha256 digest."),
    Reason("source_vanished", ("transfer",), "The source file disappeared before it was copied."),
    Reason(
        "source_changed",
        ("transfer",),
        "The source file changed while it was copied (still uploading): copied again once it"
        " settles.",
    ),
    Reason("source_unreadable", ("transfer",), "The source refused to let the file be read."),
)

BY_CODE: dict[str, Reason] = {reason.code: reason for reason in REASONS}


def code_of(recorded: str) -> str:
    """The code of a recorded ``"code: detail"`` string."""
    return recorded.split(":", 1)[0].strip()


def reasons_table_markdown() -> str:
    """The README's table of reason codes, from ``REASONS``."""
    rows = ["| code | recorded on | meaning |", "|---|---|---|"]
    rows += [f"| `{r.code}` | {', '.join(r.recorded_on)} | {r.meaning} |" for r in REASONS]
    return "\n".join(rows)


assert len(BY_CODE) == len(REASONS), "reason codes must be unique"
