"""Per-stream tallies and the one summary line per stream at the end of a run."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

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
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, name: str, count: int = 1) -> None:
        """Add ``count`` to the counter ``name``."""
        with self._lock:
            setattr(self, name, getattr(self, name) + count)

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
        if self.changed_but_skipped:
            body += (
                f"; {self.changed_but_skipped} already-loaded records changed since, use action upsert to update them"
            )
        return f"{head}: {body}"
