"""Who paid: the person a purchase belongs to, from what its source says about them.

- (app id, openid): the identity on that app (the Mini Program, or the Official Account for JSAPI payments in
  its web pages) through the contacts domain's `resolve`, which creates the identity and a contact for an
  openid never seen (the unionid converges them later, as for every identity);
- unionid: the live contact that holds it;
- contact id: that contact, or the one it was merged into.

Runs outside any transaction (`resolve` retries its own).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from siyu.commerce import merchants
from siyu.contacts import services as contacts
from siyu.contacts.lookup import find_by_identity
from siyu.core import clock
from siyu.core.errors import InvalidInput, NotFound
from siyu.core.i18n import N_
from siyu.tenants import services as tenants


@dataclass(frozen=True)
class Buyer:
    contact_id: int
    identity_id: int | None  # when the source named them by openid: their purchases follow the identity
    channel: str  # mp | oa: where the purchase shows on the timeline
    named: dict[str, Any] = field(default_factory=dict)  # how the source named them


async def channel_of_app(tenant_id: int, app_id: str) -> str | None:
    """Which of the tenant's apps an app id is: its Mini Program ("mp"), its Official Account ("oa"), or the
    app its WeChat Pay merchant takes payments in (a Mini Program not linked yet: "mp"). None: not theirs."""
    channels = await tenants.list_channels(tenant_id)
    for kind in ("mp", "oa"):
        if kind in channels and channels[kind].app_id == app_id:
            return kind
    return "mp" if app_id in await merchants.app_ids(tenant_id) else None


async def by_openid(tenant_id: int, app_id: str, openid: str, seen_at: datetime, unionid: str | None = None,
                    field_prefix: str = "buyer", checked: bool = False) -> Buyer:
    """The identity of this openid on this app (created on first sight); a unionid given with it converges the
    identity with the person's others, as an inbound event's would. `checked`: the app was verified when the
    report came in (a WeChat Pay notification); an admin relinking accounts since does not lose the payment."""
    channel = await channel_of_app(tenant_id, app_id)
    if channel is None and checked:
        channel = "mp"
    if channel is None:
        raise InvalidInput.one(f"{field_prefix}.app_id", N_("This is not the app id of one of this brand's linked Mini Program, Official Account or WeChat Pay merchant."))
    # A payment is a sighting of the person in the app, but never one from the future.
    resolved = await contacts.resolve(tenant_id, channel, openid, unionid=unionid, at=min(seen_at, clock.now()))
    named = {"openid": openid, "app_id": app_id, **({"unionid": unionid} if unionid else {})}
    return Buyer(resolved.contact_id, resolved.identity_id, channel, named)


async def by_unionid(tenant_id: int, unionid: str, field_prefix: str = "buyer") -> Buyer:
    found = await find_by_identity(tenant_id, unionid)
    if not found:
        raise InvalidInput.one(f"{field_prefix}.unionid", N_("No contact has this unionid yet: send the buyer's openid with the app id instead."))
    return Buyer(found[0], None, "mp", {"unionid": unionid})


async def by_contact_id(tenant_id: int, contact_id: int, field_prefix: str = "buyer") -> Buyer:
    try:
        contact = await contacts.get_contact(tenant_id, contact_id)
    except NotFound:
        raise InvalidInput.one(f"{field_prefix}.contact_id", N_("There is no contact with this id.")) from None
    live = contact["merged_into"] or contact["id"]
    return Buyer(int(live), None, "mp", {"contact_id": contact_id})
