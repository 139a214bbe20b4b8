"""The one registry of Closum resources.

Every resource of both revisions of Closum's V1 API (``/api``, a bearer token)
and of its V2 API (``/v2``, an api-key) is listed here once. The tap builds its
streams from it, the target its sinks, and the sandbox its routes, so the three
can never disagree about a path, a verb or a schema.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Verb(str, enum.Enum):
    """An operation the Closum API offers on a resource."""

    LIST = "list"
    CREATE = "create"
    RETRIEVE = "retrieve"
    UPDATE = "update"


class Api(str, enum.Enum):
    """Which of Closum's two APIs serves a resource: where it is, and how a request proves who sends it."""

    V1 = "v1"  #: ``api_url`` (``…/api``), a bearer token from ``POST /token`` (``api_username`` + ``api_pw``)
    V2 = "v2"  #: ``api_v2_url`` (``…/v2``), the ``api-key`` query parameter (``api_key``)


class Revision(str, enum.Enum):
    """A published revision of the Closum V1 API reference."""

    R2019 = "2019"
    R2021 = "2021"


class Replication(str, enum.Enum):
    """How the tap replicates a resource."""

    # New records get larger ids: read newest first down to the bookmark, and the tap's sweep
    # re-reads a slice of the history each run (records change and disappear: nothing is append-only).
    INCREMENTAL = "INCREMENTAL"
    FULL_TABLE = "FULL_TABLE"  # a small reference list, read whole each run
    NOT_READ = "NOT_READ"  # the tap has no stream for it (a V2 resource: its list is not documented)


BOTH = frozenset({Revision.R2019, Revision.R2021})
ONLY_2019 = frozenset({Revision.R2019})
ONLY_2021 = frozenset({Revision.R2021})


@dataclass(frozen=True)
class Resource:
    """One Closum resource.

    Attributes:
        name: singular snake_case name (``lead``), used in the target's
            ``resource_map`` and for the schema file names.
        path: URL path below the API base, without slashes (``lead``).
        stream_name: the Singer stream name (``leads``).
        verbs: operations the API has for this resource.
        revisions: API revisions that serve it; the other answers 404.
        replication: how the tap replicates it.
        read_only: fields the API serves but never accepts in a payload.
        list_path_suffix: appended to the list URL (the 2021 reference lists
            lifecycle stages at ``/contact-lifecycle-stage/``).
        api: the API that serves it (V1 unless said).
        create_suffix: appended to the create URL (V2 adds a lead at ``/lead/add/``).
    """

    name: str
    path: str
    stream_name: str
    verbs: frozenset[Verb]
    revisions: frozenset[Revision]
    replication: Replication
    read_only: tuple[str, ...] = ("id",)
    list_path_suffix: str = ""
    api: Api = Api.V1
    create_suffix: str = ""

    @property
    def record_schema_file(self) -> str:
        """Schema of a record as the API serves it, relative to ``schemas/``."""
        return f"records/{self.name}.json"

    @property
    def payload_schema_file(self) -> str | None:
        """Schema of a create/update body, relative to ``schemas/``."""
        return f"payloads/{self.name}.json" if self.writable else None

    @property
    def writable(self) -> bool:
        """Whether the target can write it (it can be created or updated)."""
        return Verb.CREATE in self.verbs or Verb.UPDATE in self.verbs

    def has(self, verb: Verb) -> bool:
        """Whether the API offers ``verb`` on this resource.

        Args:
            verb: the operation.

        Returns:
            True when the resource has it.
        """
        return verb in self.verbs

    @property
    def create_path(self) -> str:
        """The path a record is created at (``/lead``; ``/lead/add/`` in V2)."""
        return f"/{self.path}{self.create_suffix}"

    @property
    def list_path(self) -> str:
        """The path its list is served at (``/lead``)."""
        return f"/{self.path}{self.list_path_suffix}"

    def item_path(self, record_id: int | str) -> str:
        """The path of one record (``/lead/7``).

        Args:
            record_id: the record's id.

        Returns:
            The path below the API base.
        """
        return f"/{self.path}/{record_id}"


_READ = frozenset({Verb.LIST, Verb.RETRIEVE})
_CREATE = frozenset({Verb.LIST, Verb.CREATE, Verb.RETRIEVE})
_CRUD = frozenset({Verb.LIST, Verb.CREATE, Verb.RETRIEVE, Verb.UPDATE})

#: The resources of the V1 API (both revisions): the tap's streams, the sandbox's ``/api`` routes.
RESOURCES: tuple[Resource, ...] = (
    Resource(
        name="lead",
        path="lead",
        stream_name="leads",
        verbs=_CREATE,
        revisions=BOTH,
        replication=Replication.INCREMENTAL,
        read_only=("id", "creation_date"),
    ),
    Resource(
        name="unqualified_lead",
        path="unqualified-lead",
        stream_name="unqualified_leads",
        verbs=_CREATE,
        revisions=ONLY_2019,
        replication=Replication.INCREMENTAL,
        read_only=("id", "creation_date", "city_id"),
    ),
    Resource(
        name="city",
        path="city",
        stream_name="cities",
        verbs=frozenset({Verb.LIST}),
        revisions=ONLY_2019,
        replication=Replication.FULL_TABLE,
    ),
    Resource(
        name="email",
        path="email",
        stream_name="emails",
        verbs=_CRUD,
        revisions=BOTH,
        replication=Replication.INCREMENTAL,
        read_only=("id", "status", "register_date"),
    ),
    Resource(
        name="phone",
        path="phone",
        stream_name="phones",
        verbs=_CRUD,
        revisions=BOTH,
        replication=Replication.INCREMENTAL,
        read_only=("id", "is_valid", "date_add"),
    ),
    Resource(
        name="contact_type",
        path="contact-type",
        stream_name="contact_types",
        verbs=_CRUD,
        revisions=ONLY_2019,
        replication=Replication.INCREMENTAL,
        read_only=("id", "creation_date", "date_add"),
    ),
    Resource(
        name="contact_lifecycle_stage",
        path="contact-lifecycle-stage",
        stream_name="contact_lifecycle_stages",
        verbs=frozenset({Verb.LIST}),
        revisions=ONLY_2021,
        replication=Replication.FULL_TABLE,
        list_path_suffix="/",
    ),
    Resource(
        name="audience_list",
        path="audience-list",
        stream_name="audience_lists",
        verbs=_CREATE,
        revisions=ONLY_2021,
        replication=Replication.INCREMENTAL,
        read_only=("id", "creation_date"),
    ),
    Resource(
        name="lead_audience_list",
        path="lead-audience-list",
        stream_name="lead_audience_lists",
        verbs=_CREATE,
        revisions=ONLY_2021,
        replication=Replication.INCREMENTAL,
        read_only=("id", "creation_date"),
    ),
)


#: Resources of Closum's V2 API ("CLOSUM V2.0", 2022): only what its documentation shows. The target
#: writes them; the tap reads none (the V2 list's paging and record shape are not documented), and the
#: revisions of the V1 reference do not apply (none listed).
V2_RESOURCES: tuple[Resource, ...] = (
    Resource(
        name="contact",
        path="lead",
        stream_name="contacts",
        verbs=frozenset({Verb.LIST, Verb.CREATE}),
        revisions=frozenset(),
        replication=Replication.NOT_READ,
        read_only=("id", "creation_date"),
        list_path_suffix="/",
        api=Api.V2,
        create_suffix="/add/",
    ),
)

#: Every resource of both APIs.
ALL_RESOURCES: tuple[Resource, ...] = RESOURCES + V2_RESOURCES


@dataclass(frozen=True)
class OptIn:
    """A contact's marketing consent: a nested object of its parent's retrieve, not a resource.

    The API serves a lead's opt-in only inside ``GET /lead/ID`` (as
    ``lead_opt_in``; never in lists), so it has no path, no verb and no
    revision of its own: the tap reads it as a child stream of the parent's
    stream, the target never writes it on its own (it is part of the parent's
    payload) and the sandbox serves it only inside the parent's retrieve.

    Attributes:
        parent: the resource whose retrieve carries the opt-in.
    """

    parent: Resource

    @property
    def name(self) -> str:
        """The field of the parent's retrieve holding it (``lead_opt_in``), and its schema's name."""
        return f"{self.parent.name}_opt_in"

    @property
    def stream_name(self) -> str:
        """The Singer stream name (``lead_opt_ins``)."""
        return f"{self.name}s"

    @property
    def key(self) -> str:
        """The field holding the parent's id (``lead_id``): the record's key."""
        return f"{self.parent.name}_id"

    @property
    def record_schema_file(self) -> str:
        """Schema of a record of the stream, relative to ``schemas/``."""
        return f"records/{self.name}.json"


BY_NAME: dict[str, Resource] = {r.name: r for r in ALL_RESOURCES}
#: The V1 resources by the name of the tap stream that reads each (no tap stream reads a V2 resource).
BY_STREAM: dict[str, Resource] = {r.stream_name: r for r in RESOURCES}
#: V1 resources by path (V2's contact lives at ``lead`` too: it is found by its name).
BY_PATH: dict[str, Resource] = {r.path: r for r in RESOURCES}

#: The opt-ins, one per resource whose retrieve carries one.
OPT_INS: tuple[OptIn, ...] = (OptIn(BY_NAME["lead"]), OptIn(BY_NAME["unqualified_lead"]))


def get(name: str) -> Resource:
    """Look a resource up by its name (``lead``, ``contact``), or a V1 resource by its stream name or URL path.

    Args:
        name: a name, stream name or path.

    Returns:
        The resource.

    Raises:
        KeyError: no resource has that name; the message lists the known ones.
    """
    for table in (BY_NAME, BY_STREAM, BY_PATH):
        if name in table:
            return table[name]
    known = ", ".join(sorted(BY_NAME))
    msg = f"unknown Closum resource {name!r}; known resources: {known}"
    raise KeyError(msg)


def for_revision(revision: Revision | str) -> tuple[Resource, ...]:
    """The resources one revision of the V1 API serves.

    Args:
        revision: the revision, or its name (``2019``).

    Returns:
        Its resources, in registry order.
    """
    rev = Revision(revision)
    return tuple(r for r in RESOURCES if rev in r.revisions)
