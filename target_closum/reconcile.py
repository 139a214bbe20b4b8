"""Find on the server a create whose answer was lost.

After a 500/502/504, a timeout or a connection dropped after sending (or a
``pending`` intent left by a killed run) the record may or may not exist. We
never resend blindly: we read the newest records of the resource
(``sort=id&direction=desc``, a few pages) and look for one carrying the
payload's identifying fields (the resource's :attr:`~target_closum.rules.Rules.identity`,
compared as ``match_on`` compares them: emails case-folded, phones on their
digits, names without case or accents); the writer takes the first whose id no
finished write in its ledger already owns.
"""

from __future__ import annotations

import typing as t

from closum_api.listing import Page
from target_closum.index import KeyRule
from target_closum.rules import rules_for

if t.TYPE_CHECKING:
    from closum_api.client import ClosumClient
    from closum_api.registry import Resource
    from closum_api.retry import Budget

PAGES = 5
PAGE_SIZE = 100


def candidates(
    client: ClosumClient,
    resource: Resource,
    payload: t.Mapping[str, t.Any],
    *,
    budget: Budget | None = None,
) -> t.Iterator[int]:
    """The ids of the newest records that are the same record as ``payload``, newest first.

    Pages are read as the ids are asked for (the caller stops at the first one no
    finished write of its ledger owns), at most :data:`PAGES`. They draw from
    ``budget``, the create's; whatever the client raises when the list cannot be
    read is raised at the id asked for (the caller then leaves the intent pending
    for the next run).
    """
    rule = KeyRule(resource.name, rules_for(resource).identity)
    wanted = rule.key(payload)
    if wanted is None:
        return
    for number in range(1, PAGES + 1):
        page = Page.of(
            number, client.list_page(resource, page=number, limit=PAGE_SIZE, direction="desc", budget=budget)
        )
        for item in page.records:
            found = item.get("id")
            if isinstance(found, int) and rule.same(wanted, rule.key(item)):
                yield found
        if not page.records or not page.has_next:
            break
