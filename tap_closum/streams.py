"""One stream per Closum resource, and one per opt-in; everything else lives in the base streams."""

from __future__ import annotations

from closum_api import registry
from tap_closum.client import ClosumStream
from tap_closum.optins import OptInParent, OptInStream
from tap_closum.sweep import SweptStream


class LeadsStream(OptInParent):
    """Leads."""

    resource = registry.get("lead")
    created_field = "creation_date"


class UnqualifiedLeadsStream(OptInParent):
    """Unqualified leads."""

    resource = registry.get("unqualified_lead")
    created_field = "creation_date"


class CitiesStream(ClosumStream):
    """Cities."""

    resource = registry.get("city")


class EmailsStream(SweptStream):
    """Email addresses."""

    resource = registry.get("email")
    created_field = "register_date"


class PhonesStream(SweptStream):
    """Phone numbers."""

    resource = registry.get("phone")
    created_field = "date_add"


class ContactTypesStream(SweptStream):
    """Contact types."""

    resource = registry.get("contact_type")
    created_field = "creation_date"


class ContactLifecycleStagesStream(ClosumStream):
    """Contact lifecycle stages."""

    resource = registry.get("contact_lifecycle_stage")


class AudienceListsStream(SweptStream):
    """Audience lists."""

    resource = registry.get("audience_list")
    created_field = "creation_date"


class LeadAudienceListsStream(SweptStream):
    """Leads' memberships of audience lists."""

    resource = registry.get("lead_audience_list")
    created_field = "creation_date"


class LeadOptInsStream(OptInStream):
    """Leads' opt-ins, from each new lead's retrieve."""

    opt_in = registry.OPT_INS[0]
    parent_stream_type = LeadsStream


class UnqualifiedLeadOptInsStream(OptInStream):
    """Unqualified leads' opt-ins, from each new unqualified lead's retrieve."""

    opt_in = registry.OPT_INS[1]
    parent_stream_type = UnqualifiedLeadsStream


def _stream_classes(base: type[ClosumStream]) -> dict[str, type[ClosumStream]]:
    """The stream classes of this module below ``base``, by stream name."""
    found: dict[str, type[ClosumStream]] = {}
    for cls in base.__subclasses__():
        if cls.__module__ == __name__:
            found[cls.opt_in.stream_name if issubclass(cls, OptInStream) else cls.resource.stream_name] = cls
        found |= _stream_classes(cls)
    return found


_BY_NAME = _stream_classes(ClosumStream)

#: Every stream of the tap, in the order the catalog lists them: the registry's resources, then its opt-ins.
#: (A resource or opt-in without its class here fails at import, with its stream name.)
STREAM_TYPES: tuple[type[ClosumStream], ...] = tuple(
    _BY_NAME[name]
    for name in [*(r.stream_name for r in registry.RESOURCES), *(o.stream_name for o in registry.OPT_INS)]
)
