"""One stream per Closum resource; everything else lives in the base stream."""

from __future__ import annotations

from closum_api import registry
from tap_closum.client import ClosumStream


class LeadsStream(ClosumStream):
    resource = registry.get("lead")
    created_field = "creation_date"


class UnqualifiedLeadsStream(ClosumStream):
    resource = registry.get("unqualified_lead")
    created_field = "creation_date"


class CitiesStream(ClosumStream):
    resource = registry.get("city")


class EmailsStream(ClosumStream):
    resource = registry.get("email")
    created_field = "register_date"


class PhonesStream(ClosumStream):
    resource = registry.get("phone")
    created_field = "date_add"


class ContactTypesStream(ClosumStream):
    resource = registry.get("contact_type")
    created_field = "creation_date"


class ContactLifecycleStagesStream(ClosumStream):
    resource = registry.get("contact_lifecycle_stage")


class AudienceListsStream(ClosumStream):
    resource = registry.get("audience_list")
    created_field = "creation_date"


class LeadAudienceListsStream(ClosumStream):
    resource = registry.get("lead_audience_list")
    created_field = "creation_date"


STREAM_TYPES: tuple[type[ClosumStream], ...] = tuple(
    cls for cls in ClosumStream.__subclasses__() if cls.__module__ == __name__
)
assert {s.resource.name for s in STREAM_TYPES} == set(registry.BY_NAME), "a resource has no stream"  # noqa: S101
