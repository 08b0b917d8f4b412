"""Archive intake: claim what arrived in ``incoming/``, give every delivery a verdict, unpack.

The protocol, and the step hook every part of it reports to. The parts, by role:
`deliveries` (claim and register what arrived), `verdicts` (judge a claimed delivery on its own
files), `homes` (where files end up, and moving them there), `unpack` (extract, judge on the
bytes, validate, register the files), `retention` (prune ``processed/``).

Every delivery ends in one queryable state (``deliveries``): ``registered`` (its bytes became an
archive), ``duplicate`` (those bytes were an archive already) or ``rejected`` (its marker, its
name, its file type or the transport was wrong). A rejected delivery's bytes are not remembered as
bad, so a corrected delivery of them is screened; an archive rejected for its *content* is, and a
later delivery of it says so. A registered archive then ends ``unpacked`` or ``rejected``.

Each archive is read once. Registration reads markers, not archives: a delivery whose marker
names new bytes becomes an archive whose digest is still unknown (``archives.sha256`` NULL), and
the unpack hashes the archive while extracting it. Only then is the delivery judged on its bytes:
a digest that differs from the marker's rejects it (``checksum_mismatch``, the archive row goes),
a digest another archive already has makes it a ``duplicate`` of that one (the row and its
extraction go), and otherwise the digest is recorded with the files. A marker naming bytes an
archive already has is checked at registration, by hashing that delivery there, since it will
not be unpacked.

Homes are keyed by ids, never by names, so no delivery can touch another's files:

    claimed/<token>/                      taken out of incoming/, until its verdict (and unpack)
    audio/<date>/archive-<id>/            an archive's accepted files
    quarantine/<date>/archive-<id>/       its refused files (files/...) or, rejected, the archive
    quarantine/<date>/delivery-<id>/      a rejected delivery, as it arrived
    processed/<date>/archive-<id>/        an unpacked archive and its marker
    processed/<date>/duplicate-<id>/      a delivery of bytes already registered

Nothing in ``incoming/`` is trusted: entries are taken by rename (no link followed, no special file
opened), and only regular files with a single link are read, opened with ``O_NOFOLLOW |
O_NONBLOCK``; a rejected delivery's links (symbolic or hard) are recorded with their targets and
removed, so nothing kept under the data root points outside it. A marker pairs with the archive
of exactly its name, and a marker of a marker is a delivery of its own (rejected).

Every step is crash-consistent: the DB records where files belong before they are moved there,
so every step resumes from the DB and the disk, and whatever an interrupted claim left in
``claimed/`` with no row is settled by the next registration (an empty folder removed, a marker
joined by its archive from ``incoming/``). A delivery, archive or file that vanishes after it was
recorded ends with the reason ``vanished``. Input problems never raise; infrastructure problems
(DB down, disk full) do, so Airflow retries.
"""

from __future__ import annotations

import logging

# Every part logs here, under the one name intake has always logged as.
log = logging.getLogger(__name__)


def step_done(step: str) -> None:
    """Called after each step of a claim, a registration and an unpack that leaves the disk or
    the DB changed: a no-op. The crash tests replace it to stop intake right there, so the
    parts call it as ``intake.step_done`` (looked up at each call)."""
