"""Read once: the archive file feeds a digest every byte, in file order, as extraction reads it.

So the archive's checksum costs no second read. The hashing runs in a helper thread (hashlib
releases the GIL), overlapping the extraction on another core; see `earmark.ingest.extract`.
"""

from __future__ import annotations

import os
import queue
import threading
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:
    from hashlib import _Hash

_COPY_BUFSIZE = 1024 * 1024
# Gaps up to this size between what was hashed and what is read next (a plain tar's headers,
# which extraction seeks over) are filled from the file; larger ones are left to `finish`.
_MAX_HASH_GAP = 64 * 1024
_HASH_QUEUE_CHUNKS = 16


class HashingReader:
    """The archive file, feeding ``digest`` each byte once, in file order, as reads reach it.

    Tracks how far the file has been hashed. A read that continues from there is hashed; a
    small gap before it is filled with ``pread`` first; reads behind it (gzip rewinding for the
    extraction pass) are not hashed again. `finish` hashes whatever is left and waits for the
    helper thread.
    """

    def __init__(self, raw: BinaryIO, digest: _Hash) -> None:
        self._raw = raw
        self._fd = raw.fileno()
        self._position = raw.tell()
        self._hashed = 0
        self._digest = digest
        self._chunks: queue.Queue[bytes | None] = queue.Queue(maxsize=_HASH_QUEUE_CHUNKS)
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._hash_chunks, daemon=True)
        self._thread.start()

    def _hash_chunks(self) -> None:
        # Keeps taking chunks even after a failure, so a reader never blocks on a full queue.
        while (chunk := self._chunks.get()) is not None:
            if self._failure is None:
                try:
                    self._digest.update(chunk)
                except BaseException as exc:  # handed to finish()
                    self._failure = exc

    def _feed(self, chunk: bytes) -> None:
        self._chunks.put(chunk)
        self._hashed += len(chunk)

    def _fill_gap_to(self, offset: int) -> None:
        while self._hashed < offset:
            chunk = os.pread(self._fd, min(_COPY_BUFSIZE, offset - self._hashed), self._hashed)
            if not chunk:
                raise EOFError(f"archive shorter than offset {offset}")
            self._feed(chunk)

    def read(self, size: int = -1) -> bytes:
        start = self._position
        data = self._raw.read(size)
        self._position += len(data)
        if start > self._hashed and start - self._hashed <= _MAX_HASH_GAP:
            self._fill_gap_to(start)
        if start <= self._hashed < self._position:
            self._feed(data[self._hashed - start :])
        return data

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        self._position = self._raw.seek(offset, whence)
        return self._position

    def tell(self) -> int:
        return self._position

    def fileno(self) -> int:
        return self._fd

    def close(self) -> None:
        """The file is closed by whoever opened it."""

    def finish(self) -> None:
        """Hash the rest of the file and wait until the digest holds all of it."""
        try:
            self._fill_gap_to(os.fstat(self._fd).st_size)
        finally:
            self._chunks.put(None)
            self._thread.join()
        if self._failure is not None:
            raise RuntimeError("hashing the archive failed") from self._failure

    def abandon(self) -> None:
        """Stop the helper thread without completing the digest (an I/O error ends the read)."""
        self._chunks.put(None)
        self._thread.join()
