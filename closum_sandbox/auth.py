"""Bearer tokens: random opaque strings kept in memory with their expiry."""

from __future__ import annotations

import secrets
import threading
import time


class TokenStore:
    """Issues, checks and revokes bearer tokens."""

    def __init__(self) -> None:
        self._tokens: dict[str, float] = {}
        self._lock = threading.Lock()

    def issue(self, ttl: float) -> tuple[str, float]:
        """A new token and its expiry (a UNIX time)."""
        token = secrets.token_urlsafe(32)
        now = time.time()
        expires = now + ttl
        with self._lock:
            if len(self._tokens) > 10_000:
                self._tokens = {t: e for t, e in self._tokens.items() if e > now}
            self._tokens[token] = expires
        return token, expires

    def valid(self, token: str) -> bool:
        expires = self._tokens.get(token)
        return expires is not None and expires > time.time()

    def revoke_all(self) -> int:
        with self._lock:
            n = len(self._tokens)
            self._tokens.clear()
        return n
