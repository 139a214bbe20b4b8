"""The target's own settings, parsed and checked once, with their defaults written here only.

The ``th.Property`` definitions in :mod:`target_closum.target` take their
defaults from the constants below, and :meth:`TargetSettings.from_config`
applies the same constants, so a default is written in one place. The settings
the tap and the target share (connection, parallel requests) are parsed by
:class:`closum_api.config.SharedSettings`.
"""

from __future__ import annotations

import typing as t
from dataclasses import dataclass, field

from target_closum.mapping import ClosumConfigError, StreamMapping, check_load_method, mapping_for
from target_closum.payloads import PayloadOptions
from target_closum.phones import DEFAULT_REGION, check_region

#: The ledger and the rejects file default to ``output/``, relative to the working directory: the folder
#: a Meltano project keeps its plugins' output in and git-ignores (``meltano init`` creates it so). The
#: Meltano plugin definition anchors them at ``$MELTANO_PROJECT_ROOT``.
OUTPUT_FOLDER = "output"
DEFAULT_REJECTS_PATH = f"{OUTPUT_FOLDER}/closum-rejects.jsonl"
DEFAULT_LEDGER_PATH = f"{OUTPUT_FOLDER}/closum-ledger.sqlite"
DEFAULT_DRY_RUN = False
DEFAULT_LOAD_METHOD = "append-only"
DEFAULT_BATCH_ROWS = 1000
DEFAULT_CREATE_MISSING_REFERENCES = False
#: more than half the records refused: almost always a mapping error upstream, so the run fails
DEFAULT_MAX_REJECTED_SHARE = 0.5
DEFAULT_PHONE_REGION = DEFAULT_REGION
#: a V2 add updates the contact Closum already has, so sending it again never creates a second one
DEFAULT_UPDATE_ENABLED = True


@dataclass(frozen=True)
class TargetSettings:
    """The target's own settings, defaults applied.

    Attributes:
        rejects_path: the JSON-lines file of records set aside.
        ledger_path: the SQLite ledger that makes writes exactly-once.
        dry_run: map and validate only; write nothing anywhere.
        load_method: ``append-only`` or ``upsert`` (``overwrite`` is refused).
        resource_map: input stream name → ``{"resource": ..., "action": ...}``.
        batch_size_rows: records held per stream before they are written.
        create_missing_references: create the contact types and audience lists a record names that do not exist.
        max_rejected_share: the run fails when a larger share of its records is rejected (0: any reject, 1: never).
        default_phone_region: the region of phone numbers written without a country code.
        default_consent_email: a contact's ``consent_email`` when its record has none (None: rejected).
        default_consent_sms: the same for ``consent_sms``.
        update_enabled: a V2 add updates the contact that exists already.
    """

    rejects_path: str = DEFAULT_REJECTS_PATH
    ledger_path: str = DEFAULT_LEDGER_PATH
    dry_run: bool = DEFAULT_DRY_RUN
    load_method: str = DEFAULT_LOAD_METHOD
    resource_map: t.Mapping[str, t.Mapping[str, t.Any]] = field(default_factory=dict)
    batch_size_rows: int = DEFAULT_BATCH_ROWS
    create_missing_references: bool = DEFAULT_CREATE_MISSING_REFERENCES
    max_rejected_share: float = DEFAULT_MAX_REJECTED_SHARE
    default_phone_region: str = DEFAULT_PHONE_REGION
    default_consent_email: bool | None = None
    default_consent_sms: bool | None = None
    update_enabled: bool = DEFAULT_UPDATE_ENABLED

    @property
    def payload_options(self) -> PayloadOptions:
        """The settings that shape payloads."""
        return PayloadOptions(
            phone_region=self.default_phone_region,
            consent_email=self.default_consent_email,
            consent_sms=self.default_consent_sms,
        )

    @classmethod
    def from_config(cls, config: t.Mapping[str, t.Any]) -> TargetSettings:
        """Parse the target's settings; refuse, with one line, settings that can never work.

        Args:
            config: the target's config.

        Returns:
            The parsed settings, every stream of ``resource_map`` checked.

        Raises:
            ClosumConfigError: ``load_method`` or ``resource_map`` cannot be loaded as asked.
        """
        load_method = _text(config, "load_method", DEFAULT_LOAD_METHOD)
        check_load_method(load_method)
        resource_map = config.get("resource_map") or {}
        if not isinstance(resource_map, t.Mapping):
            msg = "resource_map must be an object: stream name → {resource, action}"
            raise ClosumConfigError(msg)
        settings = cls(
            rejects_path=_text(config, "rejects_path", DEFAULT_REJECTS_PATH),
            ledger_path=_text(config, "ledger_path", DEFAULT_LEDGER_PATH),
            dry_run=bool(config.get("dry_run") or DEFAULT_DRY_RUN),
            load_method=load_method,
            resource_map=dict(resource_map),
            batch_size_rows=int(config.get("batch_size_rows") or DEFAULT_BATCH_ROWS),
            create_missing_references=bool(
                config.get("create_missing_references") or DEFAULT_CREATE_MISSING_REFERENCES
            ),
            max_rejected_share=float(
                DEFAULT_MAX_REJECTED_SHARE if config.get("max_rejected_share") is None else config["max_rejected_share"]
            ),
            default_phone_region=_text(config, "default_phone_region", DEFAULT_PHONE_REGION).upper(),
            default_consent_email=_optional_bool(config, "default_consent_email"),
            default_consent_sms=_optional_bool(config, "default_consent_sms"),
            update_enabled=bool(
                DEFAULT_UPDATE_ENABLED if config.get("update_enabled") is None else config["update_enabled"]
            ),
        )
        problem = check_region(settings.default_phone_region)
        if problem:
            msg = f"default_phone_region: {problem}"
            raise ClosumConfigError(msg)
        for stream in settings.resource_map:
            settings.mapping_for(stream)
        return settings

    def mapping_for(self, stream: str) -> StreamMapping:
        """The resource and action for a stream, or a :class:`ClosumConfigError` of one line."""
        return mapping_for(stream, self.resource_map, self.load_method)


def _text(config: t.Mapping[str, t.Any], key: str, default: str) -> str:
    """A text setting; ``default`` when it is absent, null or empty."""
    return str(config.get(key) or default)


def _optional_bool(config: t.Mapping[str, t.Any], key: str) -> bool | None:
    """An on/off setting without a default; None when it is absent or null."""
    value = config.get(key)
    return None if value is None else bool(value)
