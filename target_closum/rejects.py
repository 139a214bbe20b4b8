"""The rejects file: one JSON line per record set aside, with its reason.

Each line holds ``stream``, ``record`` (as received), ``payload`` (the body
that was or would have been sent, null when it could not be built), ``status``
(the HTTP status Closum answered, or null for a record refused before sending:
payload validation or the stream's own schema), ``message`` (one line from the
server or the validator) and ``time`` (UTC, ISO 8601). Lines are appended and
flushed one by one, so memory stays flat and a killed run keeps what it wrote.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import typing as t
from pathlib import Path

from target_closum.payloads import json_default


class RejectsFile:
    """Appends reject lines to ``path``; the file is created on the first reject."""

    def __init__(self, path: str | Path) -> None:
        """Remember the path; nothing is created before the first reject."""
        self.path = Path(path)
        self._lock = threading.Lock()
        self._fh: t.TextIO | None = None

    def write(
        self,
        *,
        stream: str,
        record: t.Mapping[str, t.Any],
        payload: t.Mapping[str, t.Any] | None,
        status: int | None,
        message: str,
    ) -> None:
        """Append one reject line and flush it.

        Args:
            stream: the input stream.
            record: the record as received.
            payload: the body that was or would have been sent (None when it could not be built).
            status: Closum's HTTP status, or None for a record refused before sending.
            message: why, in one line.
        """
        line = json.dumps(
            {
                "stream": stream,
                "record": record,
                "payload": payload,
                "status": status,
                "message": message,
                "time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds"),
            },
            ensure_ascii=False,
            default=json_default,
        )
        with self._lock:
            if self._fh is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fh = self.path.open("a", encoding="utf-8")
            self._fh.write(line + "\n")
            self._fh.flush()

    def close(self) -> None:
        """Close the file (a later reject opens it again)."""
        with self._lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None
