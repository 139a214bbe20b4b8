"""What the target knows of each resource it writes: one entry per resource of the registry, in one table.

:data:`RULES` holds, for each resource of :mod:`closum_api.registry`, every rule
the target applies to its records: which fields make two records *the same
record* (one rule for both the reconciliation of a lost create and
``match_on``), which of them ``match_on`` may name and which are matched even
without it, the lookup fields that give a name instead of an id, the ids
translated through the ledger, the resources written before it, the lookup
fields it refuses (with what to do instead), and how its payload is shaped.
The modules that apply the rules (``lookups``, ``index``, ``payloads``,
``reconcile``, ``writer``, ``mapping``) read them here and hold none of their own;
a resource added to the registry without an entry here fails at import.
"""

from __future__ import annotations

import enum
import typing as t
from dataclasses import dataclass, field

from closum_api import registry

if t.TYPE_CHECKING:
    from closum_api.registry import Resource


@dataclass(frozen=True)
class Lookup:
    """One lookup field: a name given instead of an id.

    Attributes:
        field: the input field holding a name (``city``).
        target: the payload field it fills (``city_id``).
        reference: the resource the name is looked up in (``city``).
        key: the reference's field the name is compared with (``city_name``).
        creatable: whether ``create_missing_references`` may create a missing one.
        noun: what a reference is called in messages.
    """

    field: str
    target: str
    reference: str
    key: str
    creatable: bool
    noun: str

    @property
    def nouns(self) -> str:
        """The plural of :attr:`noun`."""
        return self.noun[:-1] + "ies" if self.noun.endswith("y") else self.noun + "s"


CITY = Lookup("city", "city_id", "city", "city_name", creatable=False, noun="city")
CONTACT_TYPE = Lookup("contact_type", "contact_type_id", "contact_type", "label", creatable=True, noun="contact type")
STAGE = Lookup(
    "contact_lifecycle_stage",
    "contact_lifecycle_stage_id",
    "contact_lifecycle_stage",
    "label",
    creatable=False,
    noun="contact lifecycle stage",
)
LEAD_EMAIL = Lookup("lead_email", "lead_id", "lead", "email", creatable=False, noun="lead")
AUDIENCE_LIST = Lookup(
    "audience_list", "audience_list_id", "audience_list", "name", creatable=True, noun="audience list"
)
#: The field of a lead whose names become memberships of audience lists.
MEMBERSHIPS = "audience_lists"
#: Every lookup field a contact may carry (a field given to a resource that lacks it is refused by name).
CONTACT_LOOKUP_FIELDS = (CITY.field, CONTACT_TYPE.field, STAGE.field, MEMBERSHIPS)


class Shape(enum.Enum):
    """How a record becomes a payload (see :func:`target_closum.payloads.build_payload`)."""

    PLAIN = "plain"  #: as it is
    CONTACT = "contact"  #: a lead: nested email and phone, custom_data as JSON text, its opt-in
    EMAIL = "email"  #: an address, trimmed, given plain or as ``{"email": ...}``
    PHONE = "phone"  #: extension and number as text
    CONTACT_V2 = "contact_v2"  #: a V2 contact: flat fields, email folded, mobile in E.164, consents, tags a list


@dataclass(frozen=True)
class Rules:
    """The target's rules for one resource.

    Attributes:
        resource: the resource's name.
        identity: the fields that make two records the same record, compared folded
            (:func:`target_closum.index.fold`): a lost create is looked for by them,
            and ``match_on`` names some of them.
        match_fields: the fields ``match_on`` may name.
        default_match_on: matched even when ``match_on`` is not set (a duplicate is never wanted).
        lookups: the lookup fields of its records.
        translated: id fields translated through the ledger → the resource whose loaded records they name.
        parents: resources whose streams are written before a batch of this one.
        refused: lookup fields it has no use for → what to do instead.
        shape: how its payload is shaped.
        helpers: the helper writers its writer may have (memberships, references it creates).
    """

    resource: str
    identity: tuple[str, ...] = ()
    match_fields: tuple[str, ...] = ()
    default_match_on: tuple[str, ...] = ()
    lookups: tuple[Lookup, ...] = ()
    translated: t.Mapping[str, str] = field(default_factory=dict)
    parents: tuple[str, ...] = ()
    refused: t.Mapping[str, str] = field(default_factory=dict)
    shape: Shape = Shape.PLAIN
    helpers: tuple[str, ...] = ()

    @property
    def contact(self) -> bool:
        """A lead or unqualified lead: nested email and phone, an opt-in."""
        return self.shape is Shape.CONTACT

    def lookup(self, field_name: str) -> Lookup:
        """The lookup of ``field_name`` in a record of this resource (``audience_lists``: the audience list lookup).

        Raises:
            KeyError: the resource has no such lookup field.
        """
        if field_name == MEMBERSHIPS:
            return AUDIENCE_LIST
        for lookup in self.lookups:
            if lookup.field == field_name:
                return lookup
        raise KeyError(field_name)


_CONTACT_KEYS = ("email", "phone", "name")

RULES: dict[str, Rules] = {
    rule.resource: rule
    for rule in (
        Rules(
            "lead",
            identity=_CONTACT_KEYS,
            match_fields=("email", "phone"),
            lookups=(CITY, STAGE),
            parents=("audience_list",),
            refused={
                CONTACT_TYPE.field: "a lead has no contact type in Closum (only an unqualified lead has "
                "contact_type_id); drop the field, or use contact_lifecycle_stage",
            },
            shape=Shape.CONTACT,
            helpers=(MEMBERSHIPS, AUDIENCE_LIST.reference),
        ),
        Rules(
            "unqualified_lead",
            identity=_CONTACT_KEYS,
            match_fields=("email", "phone"),
            lookups=(CONTACT_TYPE,),
            translated={"contact_type_id": "contact_type"},
            parents=("contact_type",),
            refused={
                CITY.field: "Closum takes no city for an unqualified lead (its city_id is read-only); drop the field",
                STAGE.field: "an unqualified lead has no lifecycle stage in Closum; drop the field",
                MEMBERSHIPS: "only a lead can be a member of an audience list; drop the field",
            },
            shape=Shape.CONTACT,
            helpers=(CONTACT_TYPE.reference,),
        ),
        Rules("email", identity=("email",), match_fields=("email",), shape=Shape.EMAIL),
        Rules("phone", identity=("extension", "number"), match_fields=("number", "extension"), shape=Shape.PHONE),
        Rules("contact_type", identity=("label",), match_fields=("label",), default_match_on=("label",)),
        Rules("audience_list", identity=("name",), match_fields=("name",), default_match_on=("name",)),
        Rules(
            "lead_audience_list",
            identity=("lead_id", "audience_list_id"),
            match_fields=("lead_id", "audience_list_id"),
            default_match_on=("lead_id", "audience_list_id"),
            lookups=(LEAD_EMAIL, AUDIENCE_LIST),
            translated={"lead_id": "lead", "audience_list_id": "audience_list"},
            parents=("lead", "audience_list"),
        ),
        # The V2 API's contact: written through lead/add, where Closum itself finds the contact that exists
        # already (update_enabled); none of the target's matching applies, its stage is looked up by label.
        Rules(
            "contact",
            lookups=(STAGE,),
            refused={
                CITY.field: "Closum's V2 lead/add takes no city; drop the field",
                CONTACT_TYPE.field: "Closum's V2 lead/add takes no contact type; drop the field",
                MEMBERSHIPS: "Closum's V2 API has tags, not audience lists: give the names as tags",
            },
            shape=Shape.CONTACT_V2,
        ),
        # Read-only resources: nothing is written to them, but a name is looked up in them.
        Rules("city", identity=("city_name",)),
        Rules("contact_lifecycle_stage", identity=("label",)),
    )
}

_MISSING = {r.name for r in registry.ALL_RESOURCES} ^ set(RULES)
if _MISSING:  # pragma: no cover - a resource added to the registry without its rules
    msg = f"target_closum.rules: the registry and RULES disagree on {sorted(_MISSING)}"
    raise RuntimeError(msg)


#: Every helper writer any resource may have (a killed run's pending helper writes are looked for under each).
ALL_HELPERS: tuple[str, ...] = tuple(dict.fromkeys(h for rule in RULES.values() for h in rule.helpers))


def rules_for(resource: Resource | str) -> Rules:
    """The rules of ``resource`` (a registry entry or its name)."""
    return RULES[resource if isinstance(resource, str) else resource.name]
