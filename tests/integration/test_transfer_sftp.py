"""earmark.ingest.transfer against a real SFTP server on loopback (asyncssh's, in a thread of this
process: its own host key, key authentication, a folder of its own as the vendor's drop), through
Airflow's SFTP provider and an Airflow connection. Each case ends with its ledger state and what
is in ``incoming/`` asserted; nothing half-written ever appears there."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import asyncssh
import pytest
from earmark.config import Settings
from earmark.ingest import transfer, transfer_source

pytestmark = pytest.mark.integration

CONN_ID = "vendor_drop"
OLD = time.time() - 3600


class FaultySFTP(asyncssh.SFTPServer):
    """The drop's SFTP server, with faults a test asks for by file name: ``deny`` (permission
    denied on open), ``abort`` (the connection dropped once, mid-file), ``grow`` (the uploader
    appends to the file once while it is read), ``vanish`` (the file deleted mid-copy)."""

    faults: ClassVar[dict[str, str]] = {}

    def __init__(self, chan: Any, root: str) -> None:
        super().__init__(chan, chroot=root)

    def _fault(self, path: bytes) -> str | None:
        return self.faults.get(Path(os.fsdecode(path)).name)

    def open(self, path: bytes, pflags: int, attrs: Any) -> Any:
        if self._fault(path) == "deny":
            raise asyncssh.SFTPPermissionDenied("not yours to read")
        return super().open(path, pflags, attrs)

    def open56(self, path: bytes, *args: Any) -> Any:
        if self._fault(path) == "deny":
            raise asyncssh.SFTPPermissionDenied("not yours to read")
        return super().open56(path, *args)

    def read(self, file_obj: Any, offset: int, size: int) -> Any:
        name = Path(os.fsdecode(file_obj.name)).name
        fault = self.faults.get(name)
        if fault == "abort" and offset > 0:
            del self.faults[name]
            self.channel.get_extra_info("connection").abort()
        elif fault == "vanish" and offset > 0:
            del self.faults[name]
            Path(os.fsdecode(file_obj.name)).unlink()  # the open handle still reads it
        elif fault == "grow" and offset > 0:
            del self.faults[name]
            with Path(os.fsdecode(file_obj.name)).open("ab") as more:
                more.write(b"\0" * 4096)
        return super().read(file_obj, offset, size)


@dataclasses.dataclass
class Drop:
    """The running server and what a test needs around it."""

    root: Path
    port: int
    key_file: Path
    known_hosts: Path
    settings: Settings

    def put(self, name: str, payload: bytes, *, companion: bool = True, age: float = 3600) -> str:
        path = self.root / name
        path.write_bytes(payload)
        digest = hashlib.sha256(payload).hexdigest()
        if companion:
            (self.root / f"{name}.sha256").write_text(f"{digest}  {name}\n")
        stamp = time.time() - age
        os.utime(path, (stamp, stamp))
        return digest

    def incoming(self) -> dict[str, bytes]:
        folder = self.settings.incoming
        return {p.name: p.read_bytes() for p in sorted(folder.iterdir())} if folder.exists() else {}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def drop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Drop]:
    root = tmp_path / "sftp-root"
    root.mkdir()
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    client_key = asyncssh.generate_private_key("ssh-ed25519")
    key_file = tmp_path / "id_ed25519"
    client_key.write_private_key(str(key_file))
    key_file.chmod(0o600)
    port = _free_port()
    loop = asyncio.new_event_loop()
    started = threading.Event()
    server: list[Any] = []

    async def listen() -> None:
        server.append(
            await asyncssh.listen(
                "127.0.0.1",
                port,
                server_host_keys=[host_key],
                authorized_client_keys=asyncssh.import_authorized_keys(
                    client_key.export_public_key().decode()
                ),
                sftp_factory=lambda chan: FaultySFTP(chan, str(root)),
            )
        )
        started.set()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(listen())
        loop.run_forever()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert started.wait(20), "the SFTP server did not start"
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{port} {host_key.export_public_key().decode()}")
    monkeypatch.setenv(
        f"AIRFLOW_CONN_{CONN_ID.upper()}",
        json.dumps(
            {
                "conn_type": "sftp",
                "host": "127.0.0.1",
                "port": port,
                "login": "earmark",
                "extra": {"key_file": str(key_file)},
            }
        ),
    )
    settings = dataclasses.replace(
        Settings.from_env(),
        data_root=tmp_path / "data",
        transfer_source=f"sftp://{CONN_ID}@127.0.0.1/",
        transfer_settle_seconds=120,
        transfer_known_hosts=known_hosts,
        transfer_delete_source=False,
    )
    FaultySFTP.faults.clear()
    transfer_source._CONNECTED.clear()  # every test connects anew to its own server
    try:
        yield Drop(root, port, key_file, known_hosts, settings)
    finally:
        FaultySFTP.faults.clear()
        transfer_source._CONNECTED.clear()
        loop.call_soon_threadsafe(server[0].close)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def _ledger(store) -> dict[str, tuple[str, str | None]]:
    return {
        r.name: (r.status, (r.error or "").split(":")[0] or None)
        for r in store.rows("SELECT name, status, error FROM transfers ORDER BY name")
    }


def _copy_all(drop: Drop, store) -> list[transfer.CopyResult]:
    return [
        transfer.copy_one(drop.settings, store, i) for i in transfer.discover(drop.settings, store)
    ]


def test_a_normal_day_over_sftp(drop: Drop, store):
    day = {f"2026-11-29-{k}.tar": os.urandom(300_000 + k) for k in range(3)}
    digests = {name: drop.put(name, data) for name, data in day.items()}
    late = drop.put("2026-11-29-late.tar", b"late" * 1000, companion=False, age=10)
    results = _copy_all(drop, store)
    assert [r.action for r in results] == ["copied"] * 3
    assert _ledger(store) == dict.fromkeys(day, ("copied", None))  # late: still settling
    got = drop.incoming()
    for name, data in day.items():
        assert got[name] == data
        assert got[f"{name}.sha256"].decode().split()[0] == digests[name]
    assert not [n for n in got if n.startswith(".")]  # no partial file left
    assert all((drop.root / name).exists() for name in day)  # sources are never deleted
    # The companion-less archive is copied once it has settled.
    stamp = time.time() - 600
    os.utime(drop.root / "2026-11-29-late.tar", (stamp, stamp))
    assert [r.action for r in _copy_all(drop, store)] == ["copied"]
    assert hashlib.sha256(drop.incoming()["2026-11-29-late.tar"]).hexdigest() == late


def test_delete_source_only_after_the_checksum_matched(drop: Drop, store):
    drop.settings = dataclasses.replace(drop.settings, transfer_delete_source=True)
    drop.put("checked.tar", b"x" * 5000)
    drop.put("unchecked.tar", b"y" * 5000, companion=False)
    drop.put("corrupt.tar", b"z" * 5000)
    (drop.root / "corrupt.tar.sha256").write_text(f"{'0' * 64}  corrupt.tar\n")
    _copy_all(drop, store)
    assert _ledger(store) == {
        "checked.tar": ("copied", None),
        "corrupt.tar": ("failed", "checksum_mismatch"),
        "unchecked.tar": ("copied", None),
    }
    left = sorted(p.name for p in drop.root.iterdir())
    assert left == ["corrupt.tar", "corrupt.tar.sha256", "unchecked.tar"]
    assert "corrupt.tar" not in drop.incoming()


def test_an_interrupted_copy_starts_again_and_leaves_nothing_half_written(drop: Drop, store):
    payload = os.urandom(10_000_000)  # read in 4 MiB chunks: the drop comes mid-file
    drop.put("big.tar", payload)
    FaultySFTP.faults["big.tar"] = "abort"
    [transfer_id] = transfer.discover(drop.settings, store)
    with pytest.raises(transfer_source.TransferSourceError, match=r"copy of big\.tar interrupted"):
        transfer.copy_one(drop.settings, store, transfer_id)
    assert _ledger(store) == {"big.tar": ("pending", None)}
    assert drop.incoming() == {}  # the partial file is gone
    again = transfer.copy_one(drop.settings, store, transfer_id)  # Airflow's retry
    assert again.action == "copied" and drop.incoming()["big.tar"] == payload


def test_a_file_that_grows_during_the_copy_is_not_published(drop: Drop, store):
    drop.put("growing.tar", os.urandom(10_000_000), companion=False)
    FaultySFTP.faults["growing.tar"] = "grow"
    [result] = _copy_all(drop, store)
    assert result.action == "failed" and result.error.startswith("source_changed")
    assert _ledger(store) == {"growing.tar": ("failed", "source_changed")}
    assert drop.incoming() == {}
    # Once the upload is over and settled, the next discovery copies the whole file.
    stamp = time.time() - 600
    os.utime(drop.root / "growing.tar", (stamp, stamp))
    [again] = _copy_all(drop, store)
    assert again.action == "copied"
    assert drop.incoming()["growing.tar"] == (drop.root / "growing.tar").read_bytes()


def test_a_source_that_vanishes_mid_copy_is_recorded_not_published(drop: Drop, store):
    drop.put("gone.tar", os.urandom(10_000_000))
    FaultySFTP.faults["gone.tar"] = "vanish"
    [result] = _copy_all(drop, store)
    assert result.action == "failed" and result.error.startswith("source_vanished")
    assert _ledger(store) == {"gone.tar": ("failed", "source_vanished")}
    assert drop.incoming() == {}


def test_a_permission_error_is_recorded_for_that_file_only(drop: Drop, store):
    drop.put("secret.tar", b"s" * 1000)
    drop.put("fine.tar", b"f" * 1000)
    FaultySFTP.faults["secret.tar"] = "deny"
    _copy_all(drop, store)
    assert _ledger(store) == {
        "fine.tar": ("copied", None),
        "secret.tar": ("failed", "source_unreadable"),
    }
    assert sorted(drop.incoming()) == ["fine.tar", "fine.tar.sha256"]


def test_refused_connection_and_an_unknown_host_key_raise_clearly(drop: Drop, store, tmp_path):
    drop.put("a.tar", b"a" * 1000)
    closed = _free_port()
    os.environ[f"AIRFLOW_CONN_{CONN_ID.upper()}"] = os.environ[
        f"AIRFLOW_CONN_{CONN_ID.upper()}"
    ].replace(f'"port": {drop.port}', f'"port": {closed}')
    with pytest.raises(transfer_source.TransferSourceError, match="cannot connect to the transfer"):
        transfer.discover(drop.settings, store)
    assert _ledger(store) == {} and drop.incoming() == {}

    os.environ[f"AIRFLOW_CONN_{CONN_ID.upper()}"] = os.environ[
        f"AIRFLOW_CONN_{CONN_ID.upper()}"
    ].replace(f'"port": {closed}', f'"port": {drop.port}')
    impostor = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode()
    drop.known_hosts.write_text(f"[127.0.0.1]:{drop.port} {impostor}")
    with pytest.raises(transfer_source.TransferSourceError, match="cannot connect") as raised:
        transfer.discover(drop.settings, store)
    assert "HostKeyNotVerifiable" in str(raised.value) or "host key" in str(raised.value).lower()
    missing = dataclasses.replace(drop.settings, transfer_known_hosts=tmp_path / "nope")
    with pytest.raises(transfer_source.TransferSourceError, match="no known_hosts file"):
        transfer.discover(missing, store)
    assert _ledger(store) == {} and drop.incoming() == {}


def test_a_large_file_streams_in_bounded_memory(drop: Drop, tmp_path: Path):
    """Python's allocations traced while a 12 MiB and a 48 MiB file go through SFTP: the peak
    (a few read buffers) does not grow with the file."""
    import tracemalloc

    from earmark.store.db import Store

    store = Store.from_url(f"sqlite:///{tmp_path / 'ledger.db'}")
    store.migrate()
    peaks = {}
    for mib in (12, 48):
        name = f"large-{mib}.tar"
        with (drop.root / name).open("wb") as out:
            for _ in range(mib):
                out.write(os.urandom(1024 * 1024))
        stamp = time.time() - 600
        os.utime(drop.root / name, (stamp, stamp))
        [transfer_id] = transfer.discover(drop.settings, store)
        tracemalloc.start()
        try:
            result = transfer.copy_one(drop.settings, store, transfer_id)
            peaks[mib] = tracemalloc.get_traced_memory()[1] / 2**20
        finally:
            tracemalloc.stop()
        assert result.action == "copied"
        assert (drop.settings.incoming / name).stat().st_size == mib * 2**20
    store.dispose()
    assert peaks[48] < 32 and peaks[48] - peaks[12] < 4, peaks  # MiB: about 20 either way
