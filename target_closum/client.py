"""The shared :class:`closum_api.client.ClosumClient`, with two write cases made safe.

The HTTP layer (auth, retries, error decoding) is the shared one; this only
re-classifies two answers to a create (a POST) that the shared client, as of
this writing, would retry and so could duplicate:

- a 2xx answer that is not the JSON envelope (``ClosumBadResponse``, e.g. an
  HTML page from a proxy): the write probably happened;
- a connection cut after the response head (``ChunkedEncodingError``): the
  write may have happened.

Both become :class:`ClosumOutcomeUnknown` for creates, which the sink
reconciles. For reads and updates a cut connection is retried like any other
dropped connection. (Proposed for ``closum_api.client`` itself; when it lands
there this module reduces to ``client_from_config``.)
"""

from __future__ import annotations

import typing as t

import requests

from closum_api.client import ClosumClient
from closum_api.config import client_from_config
from closum_api.errors import ClosumBadResponse, ClosumOutcomeUnknown

CUT_AFTER_HEAD = (requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError)


class _WriteSafeClient(ClosumClient):
    def _send(self, method: str, path: str, *, safe: bool, **kwargs: t.Any) -> dict[str, t.Any]:
        try:
            return super()._send(method, path, safe=safe, **kwargs)
        except CUT_AFTER_HEAD as exc:
            if safe:
                raise requests.exceptions.ConnectionError(str(exc)) from exc  # retried
            msg = f"{method} {path}: the connection was cut during the answer ({type(exc).__name__})"
            raise ClosumOutcomeUnknown(msg) from None
        except ClosumBadResponse as exc:
            if safe:
                raise
            raise ClosumOutcomeUnknown(str(exc), exc.status) from None


def write_client(config: t.Mapping[str, t.Any], *, user_agent: str) -> ClosumClient:
    """The shared client built from the settings, with creates never retried blindly."""
    client = client_from_config(config, user_agent=user_agent)
    client.__class__ = _WriteSafeClient
    return client
