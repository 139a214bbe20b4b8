"""The state of one sandbox server, shared by the API and admin routes.

:class:`Sandbox` holds the settings, the store, the tokens, the faults and the
request log; :func:`create_app <closum_sandbox.app.create_app>` keeps one in
``app.state.sandbox`` and the handlers reach it with :func:`sandbox_of`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from fastapi import Request

from closum_api import registry
from closum_sandbox import seed as seeding
from closum_sandbox.auth import TokenStore
from closum_sandbox.faults import Faults, RequestLog
from closum_sandbox.responses import ApiError, bearer_token
from closum_sandbox.store import Store

if TYPE_CHECKING:
    from closum_api.registry import Resource
    from closum_sandbox.settings import Settings

_BEARER = {"WWW-Authenticate": "Bearer"}


class Sandbox:
    """The state of one sandbox server: settings, store, tokens, faults, log.

    Attributes:
        settings: the server's knobs (the runtime ones change through ``/_admin/config``).
        store: the records.
        tokens: the bearer tokens issued.
        faults: the fault knobs and scripted faults.
        log: the recorded ``/api`` calls.
        resources: the registry resources this revision serves.
        served_names: their names.
    """

    def __init__(self, settings: Settings) -> None:
        """Open the store and seed it, unless its database already is.

        Args:
            settings: the server's knobs.
        """
        self.settings = settings
        self.store = Store(settings.db, settings.revisions)
        self.tokens = TokenStore()
        self.faults = Faults(settings)
        self.log = RequestLog()
        self.resources: tuple[Resource, ...] = tuple(r for r in registry.RESOURCES if r.revisions & settings.revisions)
        self.served_names = {r.name for r in self.resources}
        if not self.store.is_seeded():
            self.reset(settings.seed)

    def reset(self, seed: int) -> None:
        """Wipe every record and seed again.

        Args:
            seed: how many records to seed per resource (and the data RNG seed).
        """
        self.store.wipe()
        seeding.seed_all(self.store, seed, self.settings.revisions)
        self.store.mark_seeded(seed)

    def check_auth(self, request: Request) -> None:
        """Refuse a request without a valid bearer token.

        Args:
            request: the request.

        Raises:
            ApiError: 401 when the token is missing, unknown or expired.
        """
        if not request.headers.get("authorization"):
            raise ApiError(401, "Unauthorized: missing bearer token", headers=_BEARER)
        token = bearer_token(request)
        if token is None or not self.tokens.valid(token):
            raise ApiError(401, "Unauthorized: invalid or expired bearer token", headers=_BEARER)


def sandbox_of(request: Request) -> Sandbox:
    """The sandbox a request reached.

    Args:
        request: the request.

    Returns:
        The :class:`Sandbox` of the application serving it.
    """
    return cast("Sandbox", request.app.state.sandbox)
