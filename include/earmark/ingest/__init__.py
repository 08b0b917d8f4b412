"""Ingest: unpack incoming tar archives safely and validate every audio file in them.

`extract` turns an untrusted archive into a directory (or an `ArchiveRejected` reason);
`validate` decodes one audio file completely and returns its facts (or an `AudioRejected`
reason). Both are pure functions on paths: no database, no scheduler.
"""
