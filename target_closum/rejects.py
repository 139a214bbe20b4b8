"""The rejects file: one JSON line per record set aside, with its reason.

Each line holds ``stream``, ``record`` (as received), ``payload`` (the body
that was or would have been sent, null when it could not be built), ``status``
(the HTTP status Closum answered, or null for a record refused before sending:
payload validation or the stream's own schema), ``message`` (one line from the
server or the validator) and ``time`` (UTC, ISO 8601). Lines are appended and
flushed one by one, so memory stays flat and a killed run keeps what it wrote.

One file across runs, never a reject twice: a replay of the same input (a
rerun after a failure, a backfill) finds its rejects already in the file and
does not append them again. A reject is the same when its stream, record,
status and message are; the file's lines are read once, at the first reject of
a run, and only a digest of each is kept.

The file is always whole JSON lines: each line is written with one call, and a
write that fails half way (a full disk) is cut back to where the line began,
then the run ends with :class:`RejectsFileError`, which names the file. A
record whose text cannot be encoded (a lone surrogate, U+D800 say)
is written with ASCII escapes instead.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import threading
import typing as t
from pathlib import Path

from closum_api.errors import ClosumError
from target_closum.payloads import json_default

#: bytes of a reject's digest kept in memory
_DIGEST = 16


class RejectsFileError(ClosumError):
    """The rejects file cannot be read or written: a record set aside would be lost, so the run ends."""


def _digest(stream: str, record: t.Mapping[str, t.Any], status: int | None, message: str) -> bytes:
    """What makes two rejects the same, as a short digest (the time, and the payload built from the record, aside)."""
    text = json.dumps([stream, record, status, message], sort_keys=True, default=json_default)
    return hashlib.blake2b(text.encode("ascii"), digest_size=_DIGEST).digest()


def _digest_of_line(raw: bytes) -> bytes | None:
    """The digest of a line of the file; None for a line that is not a reject."""
    try:
        old = json.loads(raw)
        return _digest(old["stream"], old["record"], old["status"], old["message"])
    except (ValueError, TypeError, KeyError):
        return None


def _encoded(line: dict[str, t.Any]) -> bytes:
    """One reject as one JSON line in UTF-8; ASCII escapes when its text cannot be encoded (a lone surrogate)."""
    try:
        return (json.dumps(line, ensure_ascii=False, default=json_default) + "\n").encode("utf-8")
    except UnicodeEncodeError:
        return (json.dumps(line, ensure_ascii=True, default=json_default) + "\n").encode("ascii")


class RejectsFile:
    """Appends reject lines to ``path``; the file is created on the first reject.

    Attributes:
        path: the file.
        written: rejects appended by this run.
        repeated: rejects of this run that the file already held (not appended again).
    """

    def __init__(self, path: str | Path) -> None:
        """Remember the path; nothing is read or created before the first reject."""
        self.path = Path(path)
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._known: set[bytes] | None = None
        self.written = 0
        self.repeated = 0

    def write(
        self,
        *,
        stream: str,
        record: t.Mapping[str, t.Any],
        payload: t.Mapping[str, t.Any] | None,
        status: int | None,
        message: str,
    ) -> None:
        """Append one reject line and flush it, unless the file holds the same reject already.

        Args:
            stream: the input stream.
            record: the record as received.
            payload: the body that was or would have been sent (None when it could not be built).
            status: Closum's HTTP status, or None for a record refused before sending.
            message: why, in one line.

        Raises:
            RejectsFileError: the file cannot be read or written (it is left whole).
        """
        digest = _digest(stream, record, status, message)
        line = _encoded(
            {
                "stream": stream,
                "record": record,
                "payload": payload,
                "status": status,
                "message": message,
                "time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds"),
            }
        )
        with self._lock:
            known = self._known if self._known is not None else self._read_known()
            if digest in known:
                self.repeated += 1
                return
            self._append(line)
            known.add(digest)
            self.written += 1

    def _read_known(self) -> set[bytes]:
        """The digests of the rejects the file holds; a line that is not a reject is passed over."""
        known: set[bytes] = set()
        try:
            with self.path.open("rb") as fh:
                known.update(digest for digest in map(_digest_of_line, fh) if digest is not None)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise self._error(exc, action="read") from None
        self._known = known
        return known

    def _append(self, line: bytes) -> None:
        """Write one whole line at the end of the file, or cut the file back to where it began."""
        try:
            if self._fd is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            start = os.fstat(self._fd).st_size
        except OSError as exc:
            raise self._error(exc, action="open") from None
        try:
            view = memoryview(line)
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, start)  # no torn line for the next append to run into
            raise self._error(exc, action="write") from None

    def _error(self, exc: OSError, *, action: str) -> RejectsFileError:
        reason = exc.strerror or type(exc).__name__
        msg = (
            f"cannot {action} the rejects file {str(self.path)!r} ({reason}): a record set aside would be lost; "
            "free space or fix rejects_path, then rerun (what is written stays written)"
        )
        return RejectsFileError(msg)

    def close(self) -> None:
        """Close the file (a later reject opens it again)."""
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
