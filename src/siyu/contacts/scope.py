"""Which contacts a signed-in person may see: one SQL condition that every page showing a person adds.

The rule is not the contacts' to make. A rep sees the people the inbox shows them (their conversations,
those waiting for their teams) and the customers they added on WeCom; a manager their teams'; a tenant
admin everyone. Only the inbox knows its conversations, and this domain never names the inbox's tables,
so the pages take a `Scope` from the composition root (`siyu.app` injects `siyu.inbox.scope` as the
dependency `contact_scope`) and add its condition to the queries that read people: `where` (for a rep
`c.id IN (the ids the scope selects)`, so a plan starts from the few people they may see instead of reading
every contact; for a manager, whose teams may be most of the brand, a test per contact while the list's
index is walked), or, where several branches of one query need it, `ids` read once in a CTE. A tenant
admin's queries get no condition at all: they stay as they were.

Out of scope answers exactly like missing: `require` raises the same NotFound as an unknown id.
The JSON API is not here: an API key acts for the whole tenant.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from siyu.core import db
from siyu.core.errors import NotFound

INT_MAX = 2**31 - 1  # contact ids are 32-bit: a larger one names nothing (and must not reach asyncpg)
MAX_MERGE_HOPS = 100  # a merged-away contact points at its survivor, which may have been merged on since


@runtime_checkable  # Litestar checks injected values against the annotation
class Scope(Protocol):
    @property
    def everyone(self) -> bool:
        """True when the person may see every contact of the tenant (a tenant admin): callers add nothing."""

    def ids(self, first_param: int) -> tuple[str, list[Any]]:
        """A SELECT whose one column is the id of a contact the person may see (repeats allowed), with its
        parameters numbered from `first_param` (`$first_param`, …) and their values. Not correlated with
        the query it goes into, so a plan may start from it."""

    def where(self, alias: str, first_param: int) -> tuple[str, list[Any]]:
        """The condition on `contact {alias}` (of the tenant) that selects the same contacts, numbered the same
        way: `{alias}.id IN (ids)`, or a form the provider knows to suit its scopes better (a small scope is
        best read first, a large one asked about contact by contact while an index is walked)."""


@dataclass(frozen=True)
class Everyone:
    """The whole tenant: tenant admins on the pages (and anything that is not a person's view)."""

    @property
    def everyone(self) -> bool:
        return True

    def ids(self, first_param: int) -> tuple[str, list[Any]]:
        raise AssertionError("everyone's scope adds no condition: check `everyone` first")

    def where(self, alias: str, first_param: int) -> tuple[str, list[Any]]:
        raise AssertionError("everyone's scope adds no condition: check `everyone` first")


EVERYONE = Everyone()


def ids(scope: Scope, args: list[Any]) -> str | None:
    """The scope's SELECT of ids numbered after `args` (which it extends), or None when it is everyone."""
    if scope.everyone:
        return None
    sql, values = scope.ids(len(args) + 1)
    args += values
    return sql


def condition(scope: Scope, alias: str, args: list[Any]) -> str | None:
    """The scope's condition on `contact {alias}` numbered after `args` (which it extends), or None for
    everyone."""
    if scope.everyone:
        return None
    sql, values = scope.where(alias, len(args) + 1)
    args += values
    return sql


async def visible(tenant_id: int, scope: Scope, contact_id: int) -> bool:
    """Whether the person may see this contact. A merged-away contact is seen through its survivor (where
    its identities, owners and conversations are now): its page redirects there."""
    if not 0 < contact_id <= INT_MAX:
        return False
    if scope.everyone:
        return True
    args: list[Any] = [tenant_id, contact_id, MAX_MERGE_HOPS]
    where = condition(scope, "c", args)
    row = await db.fetchrow(
        "WITH RECURSIVE chain (id, merged_into, hops) AS ("
        "SELECT id, merged_into, 0 FROM contact WHERE tenant = $1 AND id = $2 "
        "UNION ALL SELECT c.id, c.merged_into, chain.hops + 1 FROM chain JOIN contact c "
        "ON c.tenant = $1 AND c.id = chain.merged_into WHERE chain.hops < $3) "
        f"SELECT 1 FROM contact c WHERE c.tenant = $1 AND c.merged_into IS NULL "
        f"AND c.id = (SELECT id FROM chain WHERE merged_into IS NULL LIMIT 1) AND {where}", *args)
    return row is not None


async def require(tenant_id: int, scope: Scope, contact_id: int) -> None:
    """NotFound, exactly as for a missing contact, unless the person may see this one. For everyone it
    checks only the id's range (the services answer for a missing row)."""
    if not await visible(tenant_id, scope, contact_id):
        raise NotFound()


async def require_merge(tenant_id: int, scope: Scope, merge_id: int) -> None:
    """NotFound unless the person may see this merge's survivor (the contact whose page lists it). For
    everyone it checks only the id's range (the merge's own lookup answers for a missing row)."""
    if not 0 < merge_id <= INT_MAX:
        raise NotFound()
    if scope.everyone:
        return
    row = await db.fetchrow("SELECT survivor FROM contact_merge WHERE tenant = $1 AND id = $2", tenant_id, merge_id)
    if row is None or not await visible(tenant_id, scope, int(row["survivor"])):
        raise NotFound()
