"""A local SMTP server that keeps every message as a file, and ways to read them back.

``python -m earmark_dev.mailsink --port P --maildir D`` is the harness's ``smtp`` role.
"""

from __future__ import annotations

import argparse
import email
import email.policy
import signal
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any


def serve_smtp(port: int, maildir: Path) -> None:
    """Accept every message on 127.0.0.1:``port``; write each to ``maildir/NNNN.eml``."""
    from aiosmtpd.controller import Controller

    maildir.mkdir(parents=True, exist_ok=True)

    class Sink:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
            count = len(list(maildir.glob("*.eml")))
            tmp = maildir / f".{count:04d}.tmp"
            tmp.write_bytes(envelope.original_content or envelope.content)
            tmp.rename(maildir / f"{count:04d}-{uuid.uuid4().hex[:6]}.eml")
            return "250 OK"

    controller = Controller(Sink(), hostname="127.0.0.1", port=port)
    controller.start()
    print(f"smtp sink on 127.0.0.1:{port} -> {maildir}", flush=True)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    while not stop:
        time.sleep(0.5)
    controller.stop()


def read_mails(maildir: Path) -> list[email.message.EmailMessage]:
    """Every message the sink kept, oldest first."""
    return [
        email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        for path in sorted(maildir.glob("*.eml"))
    ]


def wait_for_mail(
    maildir: Path, predicate: Callable[[email.message.EmailMessage], bool], timeout: float = 120
) -> email.message.EmailMessage:
    """The first kept message ``predicate`` accepts; TimeoutError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        for message in read_mails(maildir):
            if predicate(message):
                return message
        if time.monotonic() > deadline:
            subjects = [m["subject"] for m in read_mails(maildir)]
            raise TimeoutError(f"no matching mail after {timeout}s; have {subjects}")
        time.sleep(1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--maildir", type=Path, required=True)
    args = parser.parse_args(argv)
    serve_smtp(args.port, args.maildir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
