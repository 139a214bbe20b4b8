"""Reading Singer messages: line numbers, a stop between two lines, one-line complaints.

The SDK's reader, with four differences:

- a line that is not a Singer message (not JSON, not an object, no ``type``,
  an unknown type, a missing field, a RECORD or BATCH before its SCHEMA, a BATCH
  whose files cannot be read) raises :class:`BadInputError`, which names the line
  number, instead of logging a traceback;
- a blank line is passed over (still counted in the line numbers);
- a stop of the run's event (:class:`~closum_api.stop.StopEvent`, given to the
  reader) is honoured between two lines;
- :attr:`ClosumReader.waiting_for_input` tells a signal handler that the
  reader is blocked on its input, where stopping at once loses nothing.

:func:`batch_records` reads the files of a BATCH message as the SDK's
``Sink.process_batch_files`` does (JSON lines, gzipped or not, from the
message's URL or the ``batch_config`` storage); the target hands each record
on as a RECORD message.
"""

from __future__ import annotations

import gzip
import typing as t
import zlib
from collections import Counter

from singer_sdk.exceptions import RecordsWithoutSchemaException

# The SDK 0.54 has no public API to read BATCH files outside a Sink's own path (its sinks import these
# from here too); this module is the one place the target touches them.
from singer_sdk.helpers._batch import BaseBatchFileEncoding, BatchFileFormat, StorageTarget
from singer_sdk.io_base import SingerReader
from singer_sdk.singerlib.exceptions import InvalidInputLine
from singer_sdk.singerlib.json import deserialize_json

from closum_api.errors import ClosumError, one_line
from closum_api.failure import ClosumSettingsError

if t.TYPE_CHECKING:
    from closum_api.stop import StopEvent

#: characters of a bad line shown in the message
SHOWN = 120


class BadInputError(ClosumError):
    """A line of the input is not a Singer message the target can use.

    Attributes:
        lineno: the line's number, from 1.
        reason: what is wrong with it.
    """

    def __init__(self, lineno: int, reason: str) -> None:
        """Name the line.

        Args:
            lineno: the line's number, from 1.
            reason: what is wrong with it.
        """
        super().__init__(
            f"the input is not Singer messages: line {lineno} {reason}; the lines before it were loaded, "
            "fix the input and rerun"
        )
        self.lineno = lineno
        self.reason = reason


class RecordBeforeSchemaError(BadInputError, RecordsWithoutSchemaException):
    """A RECORD (or BATCH) before any SCHEMA of its stream (still the SDK's exception, for its callers)."""


class BatchFileError(ClosumError):
    """A BATCH message whose files cannot be read (the reader names its line)."""


#: what reading a BATCH file can raise: no such file or storage, not gzip, cut short, not JSON
_READ_ERRORS = (OSError, ValueError, EOFError, zlib.error)


def batch_records(
    encoding: object, manifest: object, storage: StorageTarget | None
) -> t.Iterator[list[dict[str, t.Any]]]:
    """The records of a BATCH message's files, one list per file, each file read whole before it is handed on.

    Args:
        encoding: the message's ``encoding`` (``{"format": "jsonl", "compression": "gzip" | "none"}``).
        manifest: the message's ``manifest``, the files' URLs.
        storage: the ``batch_config`` storage the files are read from, else the storage their URL names.

    Yields:
        The records of each file, in the manifest's order.

    Raises:
        BatchFileError: the encoding is not JSON lines (gzipped or not), or a file cannot be read
            or holds a line that is not a JSON object.
    """
    try:
        spec = BaseBatchFileEncoding.from_dict(encoding) if isinstance(encoding, dict) else None
    except TypeError:
        spec = None
    if spec is None:
        msg = f"encoding {one_line(repr(encoding), 2 * SHOWN)} is not a BATCH encoding"
        raise BatchFileError(msg)
    if spec.format != BatchFileFormat.JSONL or spec.compression not in {"gzip", "none", None}:
        msg = f"encoding {one_line(repr(encoding), 2 * SHOWN)} is not supported: JSON lines (jsonl), gzipped or not"
        raise BatchFileError(msg)
    if not isinstance(manifest, list) or not all(isinstance(url, str) for url in manifest):
        msg = "the manifest is not a list of file URLs"
        raise BatchFileError(msg)
    for url in manifest:
        yield _read_jsonl(url, gzipped=spec.compression == "gzip", storage=storage)


def _read_jsonl(url: str, *, gzipped: bool, storage: StorageTarget | None) -> list[dict[str, t.Any]]:
    try:
        head, tail = StorageTarget.split_url(url)
        with (storage or StorageTarget.from_url(head)).open(tail, mode="rb") as raw:
            if gzipped:
                with gzip.GzipFile(fileobj=raw) as unzipped:
                    lines = unzipped.readlines()
            else:
                lines = raw.readlines()
    except _READ_ERRORS as exc:
        msg = f"{url}: {type(exc).__name__}: {one_line(str(exc), 2 * SHOWN)}"
        raise BatchFileError(msg) from None
    records: list[dict[str, t.Any]] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = deserialize_json(line)
        except ValueError:
            record = None
        if not isinstance(record, dict):
            msg = f"{url}: line {number} is not a JSON object: {line.strip()[:SHOWN]!r}"
            raise BatchFileError(msg)
        records.append(record)
    return records


class ClosumReader(SingerReader):
    """The SDK's Singer reader, counting lines, stoppable, without tracebacks.

    Args:
        stop: the run's stop event, looked at between two lines.

    Attributes:
        waiting_for_input: True while blocked reading the next line.
        lineno: the number of the line being handled (0 before the first).
    """

    def __init__(self, stop: StopEvent) -> None:
        """Nothing read yet."""
        super().__init__()
        self._stop = stop
        self.waiting_for_input = False
        self.lineno = 0

    def deserialize_json(self, line: str) -> dict:
        """Decode one line.

        Raises:
            InvalidInputLine: the line is not a JSON object.
        """
        try:
            message = deserialize_json(line)
        except ValueError:
            msg = f"is not JSON: {line.strip()[:SHOWN]!r}"
            raise InvalidInputLine(msg) from None
        if not isinstance(message, dict):
            msg = f"is not a JSON object: {line.strip()[:SHOWN]!r}"
            raise InvalidInputLine(msg)
        return message

    def _next_line(self, lines: t.Iterator[str]) -> str | None:
        self.waiting_for_input = True
        try:
            return next(lines, None)
        finally:
            self.waiting_for_input = False

    def _parse(
        self, line: str, callbacks: dict[str, t.Callable[[dict], None]]
    ) -> tuple[dict, str, t.Callable[[dict], None]]:
        """The line's message, its type and the type's callback.

        Raises:
            BadInputError: the line is not a Singer message of a known type.
        """
        try:
            message = self.deserialize_json(line)
        except InvalidInputLine as exc:
            raise BadInputError(self.lineno, str(exc)) from None
        if "type" not in message:
            raise BadInputError(self.lineno, "has no 'type'")
        kind = message["type"]
        callback = callbacks.get(kind)
        if callback is None:
            raise BadInputError(self.lineno, f"has an unknown message type {str(kind)[:SHOWN]!r}")
        return message, kind, callback

    def process_lines(
        self,
        file_input: t.IO[str] | None,
        callbacks: dict[str, t.Callable[[dict], None]],
    ) -> t.Counter[str]:
        """Hand each line to the callback of its type; stop between lines when asked.

        Args:
            file_input: the input (default: standard input).
            callbacks: the handler of each message type.

        Returns:
            How many messages of each type were handled.

        Raises:
            BadInputError: a line is not a usable Singer message.
        """
        stats: Counter[str] = Counter()
        lines = iter(file_input or self.default_input)
        while (line := self._next_line(lines)) is not None:
            self.lineno += 1
            self._stop.check()
            if not line.strip():
                continue  # a blank line (an export's trailing newline, say) carries no message
            self._current_message = line
            message, kind, callback = self._parse(line, callbacks)
            try:
                callback(message)
            except RecordsWithoutSchemaException:
                reason = f"is a {kind} of stream {message.get('stream')!r} before any SCHEMA of that stream"
                raise RecordBeforeSchemaError(self.lineno, reason) from None
            except InvalidInputLine as exc:
                raise BadInputError(self.lineno, f"is incomplete ({one_line(str(exc), 2 * SHOWN)})") from None
            except BatchFileError as exc:
                reason = f"is a BATCH whose files cannot be read ({exc})"
                raise BadInputError(self.lineno, reason) from None
            stats[kind] += 1
        return stats


def batch_storage(config: t.Mapping[str, t.Any]) -> StorageTarget | None:
    """Where BATCH files are read from: ``batch_config.storage``, else (``None``) the URL each file names.

    Args:
        config: the target's settings.

    Returns:
        The storage, or ``None``.

    Raises:
        ClosumSettingsError: ``batch_config.storage`` has no ``root``, or fields a storage does not have.
    """
    storage = (config.get("batch_config") or {}).get("storage")
    if not storage:
        return None
    if not storage.get("root"):
        msg = "batch_config.storage needs a root (the URL the BATCH files are read from)"
        raise ClosumSettingsError(msg)
    try:
        return StorageTarget.from_dict(storage)
    except TypeError:
        msg = f"batch_config.storage takes root, prefix and params, not {sorted(storage)}"
        raise ClosumSettingsError(msg) from None
