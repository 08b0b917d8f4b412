"""The status values of the results DB, one enum per table: the only place they are spelled.

The schema's CHECK constraints and every status literal in the SQL are checked against these by
the test suite (``tests/unit/test_vocabulary.py``), so a new value is added here first.
"""

from __future__ import annotations

from enum import StrEnum


class DeliveryStatus(StrEnum):
    """``deliveries.status``: the verdict on one thing taken out of incoming/."""

    REGISTERED = "registered"
    DUPLICATE = "duplicate"
    REJECTED = "rejected"


class ArchiveStatus(StrEnum):
    """``archives.status``: registered bytes, then unpacked or rejected for their content."""

    REGISTERED = "registered"
    UNPACKED = "unpacked"
    REJECTED = "rejected"


class FileStatus(StrEnum):
    """``audio_files.status``: a recording's way through the GPU stage."""

    READY = "ready"
    TRANSCRIBED = "transcribed"
    CLASSIFIED = "classified"
    QUARANTINED = "quarantined"


class ReviewStatus(StrEnum):
    """``review_queue.status``."""

    PENDING = "pending"
    CLAIMED = "claimed"
    RESOLVED = "resolved"
    WITHDRAWN = "withdrawn"  # not decided when its label was superseded: out of the queue


class TransferStatus(StrEnum):
    """``transfers.status``: the transfer ledger."""

    PENDING = "pending"
    COPIED = "copied"
    FAILED = "failed"


class ErasureStatus(StrEnum):
    """``erasures.status``: an erasure recorded before anything is removed, then done."""

    INTENDED = "intended"
    DONE = "done"


#: The files that need no more work: the day is complete when every file is in one of these.
FILE_DONE = frozenset({FileStatus.CLASSIFIED, FileStatus.QUARANTINED})

#: Table name -> the enum of its ``status`` column.
BY_TABLE: dict[str, type[StrEnum]] = {
    "deliveries": DeliveryStatus,
    "archives": ArchiveStatus,
    "audio_files": FileStatus,
    "review_queue": ReviewStatus,
    "transfers": TransferStatus,
    "erasures": ErasureStatus,
}
