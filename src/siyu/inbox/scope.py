"""The people a signed-in person may see outside the inbox (contact pages, segment members): the inbox's
own rule, lifted from conversations to the contacts they belong to.

- a rep (role agent): the contacts whose conversations the inbox shows them (`Viewer.where`: assigned to
  them, held last by them and now resolved or back with the bot, waiting for their teams or for anyone), and
  the customers they added on WeCom
  (an active `owner` row under the WeCom UserID on their inbox profile, `inbox_agent.wecom_userid`);
- a team manager (`inbox_team_route.managers`): also every conversation of the teams they manage and of
  those teams' reps (`Viewer.where` again);
- a tenant admin: everyone (no condition at all).

A contact in scope is seen whole: its identities, owners, tags, merges and its entire timeline, messages on
every channel included, even those of a conversation that another rep holds. The person is the unit a rep
serves, and the inbox's contact panel shows the same timeline; the thread itself (internal notes, the
composer) stays behind the inbox's per-conversation rule.

The ids are two indexed reads under one UNION ALL (the rep's owner rows by WeCom UserID; their conversations
through the inbox's own indexes, by `Viewer.where`, including the waiting ones by team or for anyone), not
correlated with the query, so PostgreSQL starts from those few people. A manager's condition asks the same two
questions of each contact instead (EXISTS), so a page of the list stops early however large their teams.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from siyu.contacts.scope import EVERYONE, Scope
from siyu.inbox.conversations import Viewer, viewer_for


@dataclass(frozen=True)
class ContactScope:
    """`siyu.contacts.scope.Scope` for one viewer of one tenant."""

    tenant_id: int
    viewer: Viewer

    @property
    def everyone(self) -> bool:
        return self.viewer.is_admin

    def ids(self, first_param: int) -> tuple[str, list[Any]]:
        p = first_param
        conversations, conversation_args = self.viewer.where("v", p + 2)
        sql = ("SELECT o.contact FROM inbox_agent a JOIN owner o ON o.tenant = a.tenant "
               "AND o.staff_userid = a.wecom_userid AND o.removed_at IS NULL "
               f"WHERE a.tenant = ${p} AND a.staff = ${p + 1} AND a.wecom_userid <> '' "
               # One probe of identity's key per conversation: the conversations in scope are few (a rep's
               # own and their teams' queue), and a hash join would read every identity of the brand.
               "UNION ALL SELECT (SELECT i.contact FROM identity i WHERE i.tenant = v.tenant AND i.id = v.identity) "
               f"FROM inbox_conversation v WHERE v.tenant = ${p} AND {conversations}")
        return sql, [self.tenant_id, self.viewer.staff_id, *conversation_args]

    def where(self, alias: str, first_param: int) -> tuple[str, list[Any]]:
        if not self.viewer.is_manager:  # a rep's people are few: start from them
            sql, args = self.ids(first_param)
            return f"{alias}.id IN ({sql})", args
        # A manager's are whole teams, often a large part of the brand: walking the list and asking for each
        # contact (its identities' conversations, its owner rows, all by key) stops after a page, where
        # collecting the whole scope first would read every conversation of their teams.
        p = first_param
        conversations, conversation_args = self.viewer.where("v", p + 2)
        # The tenant as a value, not through the outer row: PostgreSQL may turn these EXISTS into hashed
        # sets, and those must still read one brand only.
        sql = (f"(EXISTS (SELECT 1 FROM owner o JOIN inbox_agent a ON a.tenant = o.tenant "
               f"AND a.wecom_userid = o.staff_userid WHERE o.tenant = ${p} AND o.contact = {alias}.id "
               f"AND o.removed_at IS NULL AND a.staff = ${p + 1} AND a.wecom_userid <> '') "
               f"OR EXISTS (SELECT 1 FROM identity i JOIN inbox_conversation v ON v.tenant = i.tenant "
               f"AND v.identity = i.id WHERE i.tenant = ${p} AND i.contact = {alias}.id AND {conversations}))")
        return sql, [self.tenant_id, self.viewer.staff_id, *conversation_args]


async def contact_scope(tenant_id: int, staff_id: int, role: str) -> Scope:
    """The scope of a signed-in member of the tenant's staff. A tenant admin costs no query."""
    if role == "tenant_admin":
        return EVERYONE
    viewer = await viewer_for(tenant_id, staff_id)
    return EVERYONE if viewer.is_admin else ContactScope(tenant_id, viewer)
