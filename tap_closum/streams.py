"""One stream per Closum resource; everything else lives in the base stream."""

from __future__ import annotations

from closum_api import registry
from tap_closum.client import ClosumStream


class LeadsStream(ClosumStream):
    """Leads."""

    resource = registry.get("lead")
    created_field = "creation_date"


class UnqualifiedLeadsStream(ClosumStream):
    """Unqualified leads."""

    resource = registry.get("unqualified_lead")
    created_field = "creation_date"


class CitiesStream(ClosumStream):
    """Cities."""

    resource = registry.get("city")


class EmailsStream(ClosumStream):
    """Email addresses."""

    resource = registry.get("email")
    created_field = "register_date"


class PhonesStream(ClosumStream):
    """Phone numbers."""

    resource = registry.get("phone")
    created_field = "date_add"


class ContactTypesStream(ClosumStream):
    """Contact types."""

    resource = registry.get("contact_type")
    created_field = "creation_date"


class ContactLifecycleStagesStream(ClosumStream):
    """Contact lifecycle stages."""

    resource = registry.get("contact_lifecycle_stage")


class AudienceListsStream(ClosumStream):
    """Audience lists."""

    resource = registry.get("audience_list")
    created_field = "creation_date"


class LeadAudienceListsStream(ClosumStream):
    """Leads' memberships of audience lists."""

    resource = registry.get("lead_audience_list")
    created_field = "creation_date"


#: Every stream of the tap, in the order the catalog lists them.
STREAM_TYPES: tuple[type[ClosumStream], ...] = tuple(
    cls for cls in ClosumStream.__subclasses__() if cls.__module__ == __name__
)
