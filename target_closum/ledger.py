"""The ledger: one SQLite row per record key, so each write happens once.

Key: the stream plus the record's primary key (SCHEMA ``key_properties``) when
it has one, otherwise a hash of its payload. A create is written ahead as
``pending`` (with its payload) before the POST and turned ``done`` with the
Closum id as soon as the answer arrives; each step is committed on its own
(WAL mode), so a run killed at any instant leaves either nothing, a
``pending`` intent to reconcile, or a ``done`` row to skip.

One run writes a ledger at a time (:class:`LedgerLock`): two runs on one
ledger would each create what the other has not finished, so a second run is
refused at once. The lock is an ``flock`` on a file beside the ledger
(``<ledger>.lock``), which the kernel drops when the process ends, however it
ends (``kill -9`` too); the file itself may stay, and means nothing then.
"""

from __future__ import annotations

import datetime as dt
import errno
import fcntl
import os
import socket
import sqlite3
import threading
import typing as t
from dataclasses import dataclass
from pathlib import Path

from closum_api.errors import ClosumError
from target_closum.payloads import pk_key

SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS writes (
    stream       TEXT NOT NULL,
    record_key   TEXT NOT NULL,
    resource     TEXT NOT NULL,
    state        TEXT NOT NULL CHECK (state IN ('pending', 'done')),
    closum_id    INTEGER,
    payload_hash TEXT NOT NULL,
    payload      TEXT,
    action       TEXT,
    updated_at   TEXT NOT NULL,
    PRIMARY KEY (stream, record_key)
);
CREATE INDEX IF NOT EXISTS writes_by_closum_id ON writes (resource, closum_id);
CREATE INDEX IF NOT EXISTS writes_by_state ON writes (stream, state);
CREATE INDEX IF NOT EXISTS writes_by_key ON writes (resource, record_key);
"""
_INSERT = (
    "INSERT INTO writes (stream, record_key, resource, state, closum_id, payload_hash, payload, action, updated_at) "
)
_SELECT = "SELECT stream, record_key, resource, state, closum_id, payload_hash, payload FROM writes "


class LedgerInUseError(ClosumError):
    """Another run holds the ledger: writing alongside it would duplicate records."""


class LedgerLock:
    """The one-writer lock of a ledger: an exclusive ``flock`` on ``<ledger>.lock``, held for the run.

    Args:
        ledger_path: the ledger file.
    """

    def __init__(self, ledger_path: str | Path) -> None:
        """Nothing is locked yet."""
        self.ledger_path = str(ledger_path)
        self.path = Path(self.ledger_path + ".lock")
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock, or refuse at once (never wait) naming the run that holds it.

        Raises:
            LedgerInUseError: another run holds it.
        """
        if self._fd is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.read(fd, 200).decode("utf-8", "replace").strip()
            os.close(fd)
            if exc.errno not in {errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES}:
                raise
            msg = (
                f"ledger_path {self.ledger_path!r} is in use by another target-closum run"
                f"{f' ({holder})' if holder else ''}: two runs writing at once would create the same records twice. "
                "Wait for it to end, or give each load its own ledger_path and account"
            )
            raise LedgerInUseError(msg) from None
        os.ftruncate(fd, 0)
        when = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}, since {when}\n".encode())
        self._fd = fd

    def release(self) -> None:
        """Let the lock go (the file stays: it is locked, not present, that counts)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


@dataclass(frozen=True)
class Entry:
    """One row of the ledger: what is known of one record key's write."""

    stream: str
    record_key: str
    resource: str
    state: str
    closum_id: int | None
    payload_hash: str
    payload: str | None


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


class Ledger:
    """Thread-safe access to the ledger file.

    Args:
        path: the SQLite file; created when missing (unless ``read_only``).
        read_only: for dry runs: read an existing ledger, never write one.
    """

    def __init__(self, path: str | Path, *, read_only: bool = False) -> None:
        """Open (or, unless read-only, create) the ledger file."""
        self.path = Path(path)
        self.read_only = read_only
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None
        if read_only:
            if self.path.exists():
                uri = f"{self.path.resolve().as_uri()}?mode=ro"
                self._conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
            else:
                self._conn = None
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False, timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")  # durable across a killed process in WAL mode
        conn.executescript(SCHEMA_SQL)
        self._conn = conn

    def close(self) -> None:
        """Close the file; later reads find nothing."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _query(self, sql: str, params: t.Sequence[t.Any] = ()) -> list[tuple[t.Any, ...]]:
        with self._lock:
            if self._conn is None:
                return []
            try:
                return self._conn.execute(sql, params).fetchall()
            except sqlite3.OperationalError:
                if self.read_only:  # an old or foreign file in a dry run: nothing known
                    return []
                raise

    def _write(self, sql: str, params: t.Sequence[t.Any]) -> None:
        if self.read_only:
            msg = "the ledger is read-only in a dry run"
            raise RuntimeError(msg)
        with self._lock:
            if self._conn is None:
                msg = "the ledger is closed"
                raise RuntimeError(msg)
            self._conn.execute(sql, params)

    # -- reads ------------------------------------------------------------------
    def get(self, stream: str, record_key: str) -> Entry | None:
        """The row of one record key, if any."""
        rows = self._query(_SELECT + "WHERE stream = ? AND record_key = ?", (stream, record_key))
        return Entry(*rows[0]) if rows else None

    def pending(self, stream: str) -> list[Entry]:
        """The creates of a stream whose outcome is not known yet, oldest first."""
        rows = self._query(_SELECT + "WHERE stream = ? AND state = 'pending' ORDER BY updated_at", (stream,))
        return [Entry(*r) for r in rows]

    def claimed(self, resource: str, closum_id: int) -> bool:
        """True when a finished write of the ledger already owns this Closum id."""
        rows = self._query(
            "SELECT 1 FROM writes WHERE resource = ? AND closum_id = ? AND state = 'done' LIMIT 1",
            (resource, closum_id),
        )
        return bool(rows)

    def loaded_id(self, resource: str, source_id: int) -> int | None:
        """The Closum id this ledger wrote for the record whose primary key was ``[source_id]``, if any.

        That is how an id copied from another account (``contact_type_id: 7``
        in a ``tap-closum | target-closum`` copy) is translated: the record 7 of
        the source was loaded as the id answered. The latest write wins.
        """
        rows = self._query(
            "SELECT closum_id FROM writes WHERE resource = ? AND record_key = ? AND state = 'done' "
            "AND closum_id IS NOT NULL ORDER BY updated_at DESC LIMIT 1",
            (resource, pk_key([source_id])),
        )
        return int(rows[0][0]) if rows else None

    def count(self, state: str | None = None) -> int:
        """The number of rows, or of rows in ``state``."""
        if state is None:
            rows = self._query("SELECT COUNT(*) FROM writes")
        else:
            rows = self._query("SELECT COUNT(*) FROM writes WHERE state = ?", (state,))
        return int(rows[0][0]) if rows else 0

    # -- writes (each one its own committed transaction) ------------------------
    def mark_pending(self, stream: str, record_key: str, resource: str, payload_json: str, payload_hash: str) -> None:
        """Record the intent of a create, with its payload, before the POST is sent."""
        self._write(
            _INSERT + "VALUES (?, ?, ?, 'pending', NULL, ?, ?, 'create', ?) "
            "ON CONFLICT (stream, record_key) DO UPDATE SET resource = excluded.resource, state = 'pending', "
            "closum_id = NULL, payload_hash = excluded.payload_hash, payload = excluded.payload, "
            "action = 'create', updated_at = excluded.updated_at",
            (stream, record_key, resource, payload_hash, payload_json, _now()),
        )

    def mark_done(  # noqa: PLR0913, PLR0917  # one argument per column of the row written
        self, stream: str, record_key: str, resource: str, closum_id: int | None, payload_hash: str, action: str
    ) -> None:
        """Record a finished write: the key now owns ``closum_id`` (None when the answer gave none: a V2 add)."""
        self._write(
            _INSERT + "VALUES (?, ?, ?, 'done', ?, ?, NULL, ?, ?) "
            "ON CONFLICT (stream, record_key) DO UPDATE SET resource = excluded.resource, state = 'done', "
            "closum_id = excluded.closum_id, payload_hash = excluded.payload_hash, payload = NULL, "
            "action = excluded.action, updated_at = excluded.updated_at",
            (stream, record_key, resource, closum_id, payload_hash, action, _now()),
        )

    def forget(self, stream: str, record_key: str) -> None:
        """Drop a pending intent whose write surely did not happen."""
        self._write(
            "DELETE FROM writes WHERE stream = ? AND record_key = ? AND state = 'pending'", (stream, record_key)
        )
