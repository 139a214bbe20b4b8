"""Secrets out of text: what a message, an error or a log line shows of a URL that carries the V2 api-key.

Closum's V2 API takes its key in the query string (``?api-key=…``), so the key
is part of every URL the HTTP stack sees: urllib3 logs that URL at DEBUG, and a
failed connection's exception quotes it. Our own messages name requests by
method and path only (``POST /lead/add/``) and URLs by scheme, host and path
(:func:`closum_api.errors.shown_url`), but text from elsewhere is scrubbed here:

- :func:`remember` notes a secret the process holds (the client does it for
  ``api_key``); :func:`scrub` replaces every remembered secret, and the value
  of any ``api-key=`` parameter, by ``***``;
- :func:`closum_api.errors.server_message`, the one way a server's words enter
  our messages (a server may echo the key), scrubs them;
- :func:`guard_logs` puts :class:`ScrubFilter` on the loggers that write URLs
  (urllib3's) and on the handlers of the root logger, so a record, its
  arguments and its traceback are scrubbed before any handler writes them.
"""

from __future__ import annotations

import logging
import re
import threading

#: what replaces a secret
MASK = "***"
#: the query parameter of the V2 API's key
KEY_PARAM = "api-key"
#: loggers that write request URLs (query strings included)
URL_LOGGERS = ("urllib3.connectionpool", "urllib3.connection", "urllib3.util.retry", "urllib3.response", "requests")

_KEY_IN_URL = re.compile(r"(api[-_]key(?:=|%3D))[^&\s'\"<>#]*", re.IGNORECASE)
_lock = threading.Lock()
_secrets: set[str] = set()


def remember(secret: str | None) -> None:
    """Note a secret this process holds: from now on :func:`scrub` masks it wherever it appears.

    Args:
        secret: the secret; None or an empty string is ignored.
    """
    if secret:
        with _lock:
            _secrets.add(secret)


def scrub(text: str) -> str:
    """``text`` with every remembered secret and every ``api-key=`` value masked.

    Args:
        text: any text.

    Returns:
        The text, safe to show.
    """
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return _KEY_IN_URL.sub(lambda m: m.group(1) + MASK, text)


class ScrubFilter(logging.Filter):
    """Scrubs a log record in place: its message (arguments merged in) and its traceback."""

    _format_exception = logging.Formatter().formatException

    def filter(self, record: logging.LogRecord) -> bool:
        """Scrub ``record``; always let it through.

        Args:
            record: the record about to be written.

        Returns:
            True.
        """
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a malformed record: logging reports it on its own
            return True
        scrubbed = scrub(message)
        if scrubbed != message:
            record.msg, record.args = scrubbed, ()
        if record.exc_info and record.exc_info[1] is not None:
            text = record.exc_text or self._format_exception(record.exc_info)
            scrubbed = scrub(text)
            if scrubbed != text:
                # The formatted traceback replaces the exception, so no formatter renders it again.
                record.exc_text, record.exc_info = scrubbed, None
        return True


_FILTER = ScrubFilter()


def guard_logs() -> None:
    """Scrub every record of the URL-writing loggers, and every record the root logger's handlers write. Idempotent.

    A handler added later (after this call) is guarded for the URL loggers' records, not for tracebacks.
    """
    for name in URL_LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
    for handler in logging.getLogger().handlers:
        if _FILTER not in handler.filters:
            handler.addFilter(_FILTER)
