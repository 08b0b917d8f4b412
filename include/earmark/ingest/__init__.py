"""Ingest: take archives in, unpack them safely and validate every audio file in them.

Intake (the protocol: `intake`): `deliveries` claims and registers what arrived in ``incoming/``,
`verdicts` judges a claimed delivery on its own files, `homes` moves files where they belong,
`unpack` extracts, judges on the bytes and registers the files, `retention` prunes ``processed/``.
Pure functions on paths, no database: `extract` turns an untrusted archive into a directory (or
an `ArchiveRejected` reason), reading the formats of `formats`; `validate` decodes one audio file
completely and returns its facts (or an `AudioRejected` reason). `transfer` copies archives from
a source (`transfer_source`) into ``incoming/`` under the contract of `incoming`.
"""
