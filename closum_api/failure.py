"""How a run of the tap or the target ends on a failure: one line that says what to fix.

Every path that ends a run goes through :func:`fail`: it logs
``<program> failed: <what to fix>`` (the traceback only when the log level is
DEBUG) and exits with :func:`exit_status`: 128 + the signal's number after a
termination signal (143 for SIGTERM, 130 for SIGINT, as a shell reports it),
else 1.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import sys
import typing as t
from pathlib import Path
from urllib.parse import urlsplit

import click
import requests
from singer_sdk.exceptions import ConfigValidationError
from singer_sdk.plugin_base import PluginBase

from closum_api.config import setting_errors, warn_unknown_settings
from closum_api.errors import ClosumError, ClosumSettingsError, one_line
from closum_api.retry import connection_reason
from closum_api.stop import ClosumStopped

if t.TYPE_CHECKING:
    from singer_sdk.plugin_base import _ConfigInput

#: Settings whose value never appears in a message.
SECRET_SETTINGS = ("api_pw", "api_key")
_MAX = 500


def exit_status(exc: BaseException) -> int:
    """The exit status a run ended by ``exc`` reports.

    Args:
        exc: what ended the run.

    Returns:
        128 + the signal's number for a stop, else 1.
    """
    if isinstance(exc, ClosumStopped):
        return 128 + exc.signum
    return 1


def settings_errors(exc: ConfigValidationError) -> str:
    """The errors of a settings validation as one line, secrets never shown.

    Args:
        exc: the SDK's validation error.

    Returns:
        ``invalid settings: <error>; <error>``.
    """
    shown = []
    for error in exc.errors or [str(exc)]:
        secret = next((name for name in SECRET_SETTINGS if f"'{name}'" in error), None)
        shown.append(
            f"{secret} is not valid (a non-empty string is needed; the value is not shown)"
            if secret
            else in_words(error)
        )
    return "invalid settings: " + "; ".join(shown)


_AT_SETTING = re.compile(r"^(?P<message>.*) in config\[(?P<path>.*)\]$", re.DOTALL)
_NOT_OF_TYPE = re.compile(r" is not of type (?P<types>'\w+'(?:, '\w+')*)$")
_TYPE_WORDS = {
    "integer": "a whole number",
    "number": "a number",
    "string": "text",
    "boolean": "true or false",
    "object": "an object",
    "array": "a list",
}


def in_words(error: str) -> str:
    """A JSON Schema error of the SDK as a person reads it: the setting first, the types in words.

    ``'many' is not of type 'integer', 'null' in config['page_size']`` becomes
    ``page_size: 'many' is not a whole number``.

    Args:
        error: one error of the SDK's settings validation.

    Returns:
        The error, reworded where its form is known, else as it was.
    """
    at = _AT_SETTING.match(error)
    if at is None:
        return error
    message = at["message"]
    wanted = _NOT_OF_TYPE.search(message)
    if wanted:
        words = [_TYPE_WORDS[name] for name in re.findall(r"'(\w+)'", wanted["types"]) if name in _TYPE_WORDS]
        if words:
            message = message[: wanted.start()] + " is not " + " or ".join(words)
    setting = ".".join(part.strip("'\"") for part in at["path"].split("]["))
    return f"{setting}: {message}"


def _where(request: requests.Request | requests.PreparedRequest | None) -> str:
    url = getattr(request, "url", None)
    if not isinstance(url, str):
        return "the Closum API"
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


def failure_line(exc: BaseException) -> str:
    """One line saying what ended the run and, where it can, what to fix.

    Args:
        exc: what ended the run.

    Returns:
        The line, without the program's name.
    """
    if isinstance(exc, ConfigValidationError):
        text = settings_errors(exc)
    elif isinstance(exc, ClosumError):
        text = str(exc)
    elif isinstance(exc, requests.exceptions.RequestException):
        text = f"cannot reach {_where(exc.request)}: {connection_reason(exc)}; check api_url and that the server is up"
    elif isinstance(exc, PermissionError):
        text = f"permission denied: {exc.filename or exc}"
    elif isinstance(exc, OSError) and exc.filename:
        text = f"{exc.strerror or type(exc).__name__}: {exc.filename}"
    else:
        text = f"unexpected {type(exc).__name__}: {exc} (run with log level DEBUG for the traceback)"
    return one_line(text, _MAX)


def read_json_argument(kind: str, path: str | None, *, list_key: str | None = None) -> io.StringIO | None:
    """Read a JSON file named on the command line (a catalog, a state), or say in one line why not.

    Args:
        kind: what the file is, for the message (``catalog``, ``state``).
        path: the file, or ``None`` when the option was not given.
        list_key: a key whose value must be a list (``streams`` for a catalog).

    Returns:
        The file's text, to be read again, or ``None``.

    Raises:
        ClosumSettingsError: the file cannot be read, is not JSON or has the wrong shape.
    """
    if path is None:
        return None
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        msg = f"cannot read the {kind} file {path!r}: {getattr(exc, 'strerror', None) or exc}"
        raise ClosumSettingsError(msg) from None
    try:
        value = json.loads(text)
    except ValueError as exc:
        msg = f"the {kind} file {path!r} is not valid JSON: {exc}"
        raise ClosumSettingsError(msg) from None
    if not isinstance(value, dict) or (list_key is not None and not isinstance(value.get(list_key), list)):
        shape = f"an object with a list '{list_key}'" if list_key else "an object"
        msg = f"the {kind} file {path!r} is not a Singer {kind} ({shape})"
        raise ClosumSettingsError(msg)
    return io.StringIO(text)


def check_config_files(paths: t.Iterable[str]) -> None:
    """Check that each ``--config`` file (``ENV`` aside) is a readable JSON object.

    Args:
        paths: the ``--config`` values.

    Raises:
        ClosumSettingsError: one cannot be read or is not a JSON object.
    """
    for path in paths:
        if path != "ENV":
            read_json_argument("config", path)


def fail(logger: logging.Logger, program: str, exc: BaseException) -> t.NoReturn:
    """End the run: one line (the traceback only at DEBUG), then the exit status.

    Args:
        logger: the program's logger.
        program: ``tap-closum`` or ``target-closum``.
        exc: what ended the run.
    """
    logger.error(
        "%s failed: %s",
        program,
        failure_line(exc),
        exc_info=exc if logger.isEnabledFor(logging.DEBUG) else None,
    )
    status = exit_status(exc)
    if isinstance(exc, ClosumStopped) and exc.stop.work_in_flight():
        # Requests of the stopped run still unanswered after the stop's grace: everything of ours
        # is written and flushed; exiting normally would wait out their request_timeout (a create
        # among them stays pending in the ledger, and the next run settles it).
        sys.stdout.flush()
        logging.shutdown()
        os._exit(status)
    sys.exit(status)


class OneLineCommand(PluginBase):
    """The command line of the tap and the target: files it names are read by us, so a bad one fails in one line.

    Put it before the SDK's ``Tap`` or ``Target`` in the bases. The options
    listed in :attr:`path_options` arrive in ``invoke`` as plain paths (not
    opened by click), so ``invoke`` can name a file it cannot read; the
    ``--config`` files are checked before the SDK reads them.
    """

    #: click parameter names whose value stays a path for ``invoke`` to open
    path_options: t.ClassVar[frozenset[str]] = frozenset()

    def setting_errors(self, config: t.Mapping[str, t.Any]) -> list[str]:
        """What the settings' JSON Schema cannot check, each problem named by its setting: the shared settings'.

        Args:
            config: the plugin's config.

        Returns:
            One message per setting that cannot be used (a program adds its own).
        """
        return setting_errors(config)

    # SDK private: the only place to add checks of our own to the SDK's validation of the config.
    def _validate_config(self, *, raise_errors: bool = True) -> list[str]:
        """The SDK's checks against the settings' JSON Schema, then :meth:`setting_errors`; unknown names warned."""
        try:
            errors = super()._validate_config(raise_errors=raise_errors)
        except ConfigValidationError as exc:
            errors = list(exc.errors)
        errors += self.setting_errors(self.config)
        warn_unknown_settings(self)
        if errors and raise_errors:
            msg = "Config validation failed"
            raise ConfigValidationError(msg, errors=errors, schema=self.config_jsonschema)
        return errors

    @classmethod
    def get_singer_command(cls) -> click.Command:
        """The SDK's command, with :attr:`path_options` taken as plain strings.

        Returns:
            The command.
        """
        command = super().get_singer_command()
        for param in command.params:
            if param.name in cls.path_options:
                param.type = click.STRING
        return command

    @classmethod
    @contextlib.contextmanager
    def command_arguments(cls, arguments: dict[str, t.Any]) -> t.Iterator[dict[str, t.Any]]:
        """The command's arguments as the SDK's ``invoke`` takes them, for the length of the run.

        The tap and the target read or open the files of :attr:`path_options`
        here; a failure here ends the run with one line too. By default the
        arguments are passed on as they are.

        Args:
            arguments: click's arguments, by parameter name.

        Yields:
            The arguments for the SDK's ``invoke``.
        """
        yield arguments

    @classmethod
    def invoke(cls, **arguments: t.Any) -> None:
        """Run the command; any failure ends it with one line (a traceback only at log level DEBUG).

        Args:
            arguments: click's arguments, by parameter name (:meth:`command_arguments` prepares them).
        """
        try:
            with cls.command_arguments(arguments) as ready:
                super().invoke(**ready)
        except Exception as exc:  # noqa: BLE001  # every failure ends the run with one line
            fail(cls.logger, cls.name, exc)

    @classmethod
    def cb_config(cls, ctx: click.Context, param: click.Option, value: tuple[str, ...]) -> _ConfigInput:
        """The SDK's ``--config`` reading; a missing or invalid file ends the run with one line.

        Args:
            ctx: click's context.
            param: the ``--config`` option.
            value: the paths given.

        Returns:
            The SDK's config input.
        """
        try:
            check_config_files(value)
        except ClosumSettingsError as exc:
            fail(cls.logger, cls.name, exc)
        return super().cb_config(ctx, param, value)
