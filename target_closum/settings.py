"""The target's own settings: their schema, with each default written once there, and the typed settings of a run.

:func:`target_properties` declares them (the target's ``config_jsonschema``
adds the connection settings of :func:`closum_api.config.connection_properties`);
:meth:`TargetSettings.from_config` converts a config, filled with the schema's
defaults (:func:`closum_api.config.schema_values`), into the typed settings,
and refuses with one line settings that can never work. The settings the tap
and the target share are parsed by :class:`closum_api.config.SharedSettings` and
held in :attr:`TargetSettings.shared`: the target builds one settings object.
"""

from __future__ import annotations

import typing as t

import msgspec
from singer_sdk import typing as th

from closum_api import __version__
from closum_api.config import SharedSettings, schema_values
from closum_api.errors import ClosumSettingsError
from target_closum.mapping import (
    ACTIONS,
    LOAD_METHODS,
    StreamMapping,
    check_load_method,
    mapping_for,
    writable_resources,
)
from target_closum.payloads import PayloadOptions
from target_closum.phones import DEFAULT_REGION, check_region

#: The ledger and the rejects file default to ``output/``, relative to the working directory: the folder
#: a Meltano project keeps its plugins' output in and git-ignores (``meltano init`` creates it so). The
#: Meltano plugin definition anchors them at ``$MELTANO_PROJECT_ROOT``.
OUTPUT_FOLDER = "output"
#: The User-Agent sent unless ``user_agent`` says otherwise.
USER_AGENT = f"target-closum/{__version__}"


def target_properties() -> list[th.Property]:
    """The target's own settings, in the order the settings table lists them.

    Returns:
        Their ``th.Property`` definitions, each with its default.
    """
    return [
        th.Property(
            "resource_map",
            th.ObjectType(
                additional_properties=th.ObjectType(
                    th.Property(
                        "resource",
                        th.StringType,
                        required=True,
                        allowed_values=[r.name for r in writable_resources()],
                        description="The Closum resource the stream's records become.",
                    ),
                    th.Property(
                        "action",
                        th.StringType,
                        allowed_values=list(ACTIONS),
                        description="create (POST), update (PUT by the record's id) or upsert "
                        "(PUT when the id is given or known from the ledger, else POST).",
                    ),
                    th.Property(
                        "match_on",
                        th.ArrayType(th.StringType),
                        description="Fields that identify a record already in Closum, which is then not created "
                        "again (counted 'matched existing'; upsert updates it): leads and unqualified leads email "
                        "and/or phone, emails email, phones number (+ extension). Contact types (label), audience "
                        "lists (name) and lead audience lists (lead_id + audience_list_id) are always matched. "
                        "Costs one read of the resource's list per run.",
                    ),
                    additional_properties=False,
                ),
            ),
            title="Resource map",
            description='Input stream name → {"resource": lead | unqualified_lead | email | phone | '
            'contact_type | audience_list | lead_audience_list | contact, "action": create | update | upsert, '
            '"match_on": [fields]}. '
            "Streams not listed map by name (leads, lead, contact-types, contacts...) with action create. "
            "update and upsert need a resource with an update endpoint (email, phone, contact_type). "
            "contact is written through Closum's V2 API (api_key): action create, no match_on.",
        ),
        th.Property(
            "update_enabled",
            th.BooleanType,
            default=True,  # a V2 add then updates the contact Closum has: sending it again never creates a second
            title="Update existing contacts (V2)",
            description="Contacts (V2 lead/add): ask Closum to update the contact it already has (same email or "
            "mobile number) instead of refusing the add. On, sending a contact again never creates a second one "
            "(a replay, or a machine without the ledger); off, Closum refuses a contact that exists (a reject).",
        ),
        th.Property(
            "default_consent_email",
            th.BooleanType,
            title="Default email consent (V2)",
            description="Contacts (V2): the consent_email sent for a record that has none. Unset: such a record "
            "is rejected (Closum's V2 API requires it). Set it only to what the contacts really agreed to.",
        ),
        th.Property(
            "default_consent_sms",
            th.BooleanType,
            title="Default SMS consent (V2)",
            description="Contacts (V2): the consent_sms sent for a record that has none. Unset: such a record "
            "is rejected (Closum's V2 API requires it). Set it only to what the contacts really agreed to.",
        ),
        th.Property(
            "default_phone_region",
            th.StringType(min_length=2, max_length=3),
            default=DEFAULT_REGION,
            title="Default phone region",
            description="The region (two letters, such as PT or ES) of phone numbers written without a country "
            "code: +351 912 345 678, 00351912345678 and, with PT, 912 345 678 are one number. A contact's "
            "mobile_number is sent in E.164 (+351912345678); a lead's phone given as one string as "
            "extension 00351 and number 912345678. A number that cannot be one is rejected with the reason.",
        ),
        th.Property(
            "create_missing_references",
            th.BooleanType,
            default=False,
            title="Create missing references",
            description="Create the contact types (a record's contact_type) and audience lists (audience_lists, "
            "audience_list) that a record names and Closum does not have; otherwise such a record is rejected.",
        ),
        th.Property(
            "rejects_path",
            th.StringType(min_length=1),
            default=f"{OUTPUT_FOLDER}/closum-rejects.jsonl",
            title="Rejects file",
            description="JSON-lines file that receives every record set aside (failed validation or "
            "refused by Closum with 400/403/404/405), with stream, record, payload, status, message and "
            "time. Appended to; relative paths are from the working directory (in a Meltano project, from "
            "its root). It holds people's personal data (names, emails, phones): keep it out of version "
            "control and delete it once its records are fixed.",
        ),
        th.Property(
            "max_rejected_share",
            th.NumberType(minimum=0, maximum=1),
            default=0.5,  # more than half refused: almost always a mapping error upstream
            title="Max rejected share",
            description="The run fails (exit status 1, one line) when more than this share of its records is "
            "rejected, after writing the others and setting the rejected aside; its last STATE is then held back, "
            "so a rerun after the fix sends them again. 0: any reject fails the run; 1: never.",
        ),
        th.Property(
            "ledger_path",
            th.StringType(min_length=1),
            default=f"{OUTPUT_FOLDER}/closum-ledger.sqlite",
            title="Ledger file",
            description="SQLite file recording each write (stream + record key → Closum id, payload hash), "
            "so a rerun or a replay writes nothing twice. Keep it between runs of the same load. Relative "
            "paths are from the working directory (in a Meltano project, from its root).",
        ),
        th.Property(
            "dry_run",
            th.BooleanType,
            default=False,
            title="Dry run",
            description="Map and validate every record and report what would be written, without "
            "sending any POST/PUT and without writing the ledger or the rejects file.",
        ),
        th.Property(
            "load_method",
            th.StringType,
            allowed_values=list(LOAD_METHODS),
            default="append-only",
            title="Load method",
            description="SDK setting. append-only: streams default to action create. upsert: streams of "
            "resources that can be updated (email, phone, contact_type) default to action upsert. "
            "overwrite is refused at start (Closum cannot delete). An action in resource_map always wins.",
        ),
        th.Property(
            "batch_size_rows",
            th.IntegerType(minimum=1),
            default=1000,
            title="Batch size",
            description="Records held per stream before they are written; "
            "bounds memory. STATE is emitted only once the records before it are written.",
        ),
    ]


class TargetSettings(msgspec.Struct, frozen=True):
    """The target's settings, converted from its config with the schema's defaults.

    Attributes:
        shared: the settings the target shares with the tap (connection, parallelism, retries, pace).
        rejects_path: the JSON-lines file of records set aside.
        ledger_path: the SQLite ledger that makes writes exactly-once.
        dry_run: map and validate only; write nothing anywhere.
        load_method: ``append-only`` or ``upsert`` (``overwrite`` is refused).
        resource_map: input stream name → ``{"resource": ..., "action": ...}``.
        batch_size_rows: records held per stream before they are written.
        create_missing_references: create the contact types and audience lists a record names that do not exist.
        max_rejected_share: the run fails when a larger share of its records is rejected (0: any reject, 1: never).
        default_phone_region: the region of phone numbers written without a country code.
        update_enabled: a V2 add updates the contact that exists already.
        default_consent_email: a contact's ``consent_email`` when its record has none (None: rejected).
        default_consent_sms: the same for ``consent_sms``.
    """

    shared: SharedSettings
    rejects_path: str
    ledger_path: str
    dry_run: bool
    load_method: str
    batch_size_rows: int
    create_missing_references: bool
    max_rejected_share: float
    default_phone_region: str
    update_enabled: bool
    default_consent_email: bool | None = None
    default_consent_sms: bool | None = None
    resource_map: dict[str, dict[str, t.Any]] = msgspec.field(default_factory=dict)

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
        """Convert the target's settings; refuse, with one line, settings that can never work.

        Args:
            config: the target's config.

        Returns:
            The settings, the shared ones included, every stream of ``resource_map`` checked.

        Raises:
            ClosumSettingsError: ``load_method`` or ``resource_map`` cannot be loaded as asked.
        """
        values = schema_values(config, target_properties())
        values["shared"] = SharedSettings.from_config(config, user_agent=USER_AGENT)
        values["default_phone_region"] = str(values["default_phone_region"]).upper()
        check_load_method(str(values["load_method"]))
        if not isinstance(values.get("resource_map", {}), t.Mapping):
            msg = "resource_map must be an object: stream name → {resource, action}"
            raise ClosumSettingsError(msg)
        try:
            settings = msgspec.convert(values, cls)
        except msgspec.ValidationError as exc:
            msg = f"invalid settings: {exc}"
            raise ClosumSettingsError(msg) from None
        problem = check_region(settings.default_phone_region)
        if problem:
            msg = f"default_phone_region: {problem}"
            raise ClosumSettingsError(msg)
        for stream in settings.resource_map:
            settings.mapping_for(stream)
        return settings

    def mapping_for(self, stream: str) -> StreamMapping:
        """The resource and action for a stream, or a :class:`ClosumSettingsError` of one line."""
        return mapping_for(stream, self.resource_map, self.load_method)
