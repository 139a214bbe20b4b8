"""Bearer tokens: random opaque strings kept in memory with their expiry."""

from __future__ import annotations

import secrets
import threading
import time

#: Past this many tokens, issuing one first forgets the expired ones.
_PRUNE_ABOVE = 10_000


class TokenStore:
    """Issues, checks and revokes bearer tokens."""

    def __init__(self) -> None:
        """Start with no tokens."""
        self._tokens: dict[str, float] = {}
        self._lock = threading.Lock()

    def issue(self, ttl: float) -> tuple[str, float]:
        """A new token and its expiry (a UNIX time)."""
        token = secrets.token_urlsafe(32)
        now = time.time()
        expires = now + ttl
        with self._lock:
            if len(self._tokens) > _PRUNE_ABOVE:
                self._tokens = {t: e for t, e in self._tokens.items() if e > now}
            self._tokens[token] = expires
        return token, expires

    def valid(self, token: str) -> bool:
        """Whether ``token`` was issued, not revoked, and has not expired."""
        expires = self._tokens.get(token)
        return expires is not None and expires > time.time()

    def revoke_all(self) -> int:
        """Invalidate every token; answers how many there were."""
        with self._lock:
            n = len(self._tokens)
            self._tokens.clear()
        return n
