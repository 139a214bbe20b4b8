"""Per-stream tallies, the one summary line per stream at the end of a run, and its rejects by reason."""

from __future__ import annotations

import re
import threading
import typing as t
from dataclasses import dataclass, field

from closum_api.errors import one_line

#: distinct reasons kept per stream (the rest are counted under the last line)
MAX_REASONS = 20
#: characters of a reason's first example shown
SHOWN = 240
# What varies between two rejects of the same reason: quoted values, numbers.
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
_NUMBER = re.compile(r"\d+")


def reason_of(message: str) -> str:
    """The reason of a reject message, its values left out, so rejects alike count together.

    ``email.email: 'ana@' is not a 'email'`` and ``email.email: 'rui@' is not a 'email'``
    share one reason.

    Args:
        message: the reject's message.

    Returns:
        The message with quoted values and numbers replaced.
    """
    return _NUMBER.sub("N", _QUOTED.sub("…", message))


FIELDS = (
    "created",
    "updated",
    "skipped",
    "rejected",
    "reconciled",
    "recovered",
    "would_create",
    "would_update",
    "matched",
    "references_created",
)


@dataclass
class Tally:
    """What happened to the records of one stream. Thread-safe increments."""

    stream: str
    resource: str
    action: str
    dry_run: bool = False
    created: int = 0
    updated: int = 0
    skipped: int = 0  # already loaded (ledger) - nothing sent
    rejected: int = 0
    reconciled: int = 0  # of the created: found on the server after a lost answer
    recovered: int = 0  # writes left pending by an earlier run, settled before this run's
    would_create: int = 0
    would_update: int = 0
    matched: int = 0  # found on the server by match_on (or a default match): not created again
    references_created: int = 0  # contact types / audience lists created for a lookup (create_missing_references)
    changed_but_skipped: int = 0
    #: what the counts mean beyond their names, added to the summary line (a V2 add may have updated)
    note: str = field(default="", compare=False)
    #: reason → [count, the first message of that reason]
    reasons: dict[str, list[t.Any]] = field(default_factory=dict, repr=False, compare=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, name: str, count: int = 1) -> None:
        """Add ``count`` to the counter ``name``."""
        with self._lock:
            setattr(self, name, getattr(self, name) + count)

    @property
    def handled(self) -> int:
        """The input records this stream's run dealt with: written, matched, skipped, rejected (or would be)."""
        return (
            self.created
            + self.updated
            + self.skipped
            + self.rejected
            + self.matched
            + self.would_create
            + self.would_update
        )

    def reject(self, message: str) -> None:
        """Count a rejected record and its reason (the first message of each reason is kept as its example)."""
        reason = reason_of(message)
        with self._lock:
            self.rejected += 1
            if reason not in self.reasons and len(self.reasons) >= MAX_REASONS:
                reason = "(other reasons)"
            entry = self.reasons.setdefault(reason, [0, message])
            entry[0] += 1

    def reason_lines(self) -> list[str]:
        """One line per reason of this stream's rejects, the most frequent first: the count and the first example."""
        with self._lock:
            ranked = sorted(self.reasons.values(), key=lambda entry: -entry[0])
        verb = "would reject" if self.dry_run else "rejected"
        return [
            f"stream {self.stream}: {verb} {count} record{'s' if count > 1 else ''}"
            f"{' like this one' if count > 1 else ''}: {one_line(first, SHOWN)}"
            for count, first in ranked
        ]

    def as_dict(self) -> dict[str, int | str | bool]:
        """The counters and what they count, as the ``closum_load_summary`` metric carries them."""
        out: dict[str, int | str | bool] = {
            "stream": self.stream,
            "resource": self.resource,
            "action": self.action,
            "dry_run": self.dry_run,
        }
        out.update({name: getattr(self, name) for name in FIELDS})
        return out

    def line(self, rejects_path: str | None = None) -> str:
        """The one summary line of the stream, naming the rejects file when there were rejects."""
        head = f"stream {self.stream} → {self.resource} ({self.action})"
        if self.dry_run:
            body = (
                f"DRY RUN, nothing written: would create {self.would_create}, would update {self.would_update}, "
                f"skipped as already loaded {self.skipped}, rejected {self.rejected}"
            )
        else:
            body = (
                f"created {self.created}, updated {self.updated}, skipped as already loaded {self.skipped}, "
                f"rejected {self.rejected}, matched existing {self.matched}, "
                f"references created {self.references_created}"
            )
            if self.reconciled:
                body += f" ({self.reconciled} of the created found on the server after a lost answer)"
        if self.rejected and rejects_path and not self.dry_run:
            body += f"; rejects in {rejects_path}"
        if self.recovered:
            body += f"; {self.recovered} writes left pending by an earlier run settled first"
        if self.note:
            body += f"; {self.note}"
        if self.changed_but_skipped:
            body += (
                f"; {self.changed_but_skipped} already-loaded records changed since, use action upsert to update them"
            )
        return f"{head}: {body}"
