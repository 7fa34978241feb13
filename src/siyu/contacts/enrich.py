"""Profile enrichment: ask WeChat what it knows about one identity and keep it.

- OA: `user/info` (language, subscribe scene and time, QR scene, the OA's remark and tag ids, unionid).
- WeCom: `externalcontact/get` (name, avatar, unionid) and its follow users: which reps added the customer,
  since when, with what remark, description and tags. Rep ownership drives routing later.
- MP has no user info API (its unionid comes with the login): nothing to ask.

A learned unionid converges identities through `resolve(…, at=None)` (an API's answer is not a sighting).
Everything else is written in ONE transaction, after the answer is complete: a refused or failed call
leaves nothing half-written. Running it twice changes nothing but `enriched_at` (when WeChat was last
asked); an answer older than the one already stored is dropped, so two overlapping runs cannot go back
in time.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from siyu.contacts.live import lock_identity_contact
from siyu.contacts.resolve import resolve
from siyu.core import clock, db
from siyu.wechat import profiles

log = logging.getLogger("siyu.contacts.enrich")

# An OA identity's profile is asked again on its next event once it is older than this.
REFRESH_AFTER = timedelta(hours=24)
ENRICHED_CHANNELS = ("oa", "wecom")


class TryLater(Exception):
    """WeChat is busy or rate-limited: the job should run again after `retry_after` seconds (None: the
    job's own backoff)."""

    def __init__(self, cause: profiles.WeChatError, retry_after: int | None = None) -> None:
        super().__init__(f"{type(cause).__name__} {cause.errcode}: {cause.errmsg}")
        self.cause, self.retry_after = cause, retry_after


async def enrich_identity(runtime: profiles.WeChatRuntime, tenant_id: int, identity_id: int) -> str:
    """Ask WeChat about the identity and store the answer. Returns the outcome: `enriched`, `missing`,
    `erased`, `not_enriched` (an MP identity), `not_linked`, `config_problem`, `refused:<errcode>` (WeChat
    does not know them or will not tell: recorded, never retried), `error:<errcode>`, `stale` (a newer
    answer was stored meanwhile). Raises TryLater when WeChat is busy or rate-limited."""
    identity = await db.fetchrow(
        "SELECT channel, external_id, erased_at FROM identity WHERE tenant = $1 AND id = $2", tenant_id, identity_id)
    if identity is None:
        return "missing"
    if identity["erased_at"] is not None:
        return "erased"  # unfollowed and erased: asking WeChat would bring back what was deleted
    channel, external_id = identity["channel"], identity["external_id"]
    if channel not in ENRICHED_CHANNELS:
        return "not_enriched"

    asked_at = clock.now()
    try:
        if channel == "oa":
            answer = await profiles.oa_user(runtime, tenant_id, external_id)
        else:
            answer = await profiles.wecom_contact(runtime, tenant_id, external_id)
    except profiles.NotFound:
        log.info("tenant %s has no %s account linked: identity %s not enriched", tenant_id, channel, identity_id)
        return "not_linked"
    except profiles.WeChatRateLimited as exc:
        raise TryLater(exc, exc.retry_after) from exc
    except profiles.WeChatBusy as exc:
        raise TryLater(exc) from exc
    except profiles.WeChatNotAllowed as exc:
        await _record_refusal(tenant_id, identity_id, exc, asked_at)
        return f"refused:{exc.errcode}"
    except profiles.WeChatConfigProblem as exc:
        log.warning("enriching identity %s of tenant %s: the %s account needs its admin (%s %s)",
                    identity_id, tenant_id, channel, exc.errcode, exc.errmsg)
        return "config_problem"
    except profiles.WeChatError as exc:
        log.warning("enriching identity %s of tenant %s failed: %s %s", identity_id, tenant_id, exc.errcode,
                    exc.errmsg)
        return f"error:{exc.errcode}"

    unionid = answer.get("unionid") or None
    if unionid:
        await resolve(tenant_id, channel, external_id, unionid=unionid, at=None)
    if channel == "oa":
        # A non-follower's answer says only that: what an earlier answer told stays.
        profile = _oa_profile(answer) if answer["subscribe"] else {"subscribe": False}
        stored = await _store(tenant_id, identity_id, asked_at, profile, language=answer["language"])
    else:
        stored = await _store(tenant_id, identity_id, asked_at, _wecom_profile(answer),
                              display_name=answer["name"], avatar_url=answer["avatar"],
                              follow_users=answer["follow_users"],
                              follow_users_complete=answer["follow_users_complete"])
    log.debug("identity %s of tenant %s: %s", identity_id, tenant_id, stored)
    return stored


def _oa_profile(answer: dict[str, Any]) -> dict[str, Any]:
    keys = ("language", "subscribe", "subscribe_scene", "subscribe_time", "qr_scene", "qr_scene_str", "remark",
            "tagid_list")
    return {k: answer[k] for k in keys}


def _wecom_profile(answer: dict[str, Any]) -> dict[str, Any]:
    return {k: answer[k] for k in ("name", "avatar", "type", "gender", "corp_name")}


async def _record_refusal(tenant_id: int, identity_id: int, exc: profiles.WeChatNotAllowed, asked_at: datetime) -> None:
    """WeChat will not tell (an unknown openid, a customer no rep has any more): note it and when, so the
    identity is not asked again on every event; the profile already stored stays as it was."""
    log.info("WeChat refused the profile of identity %s of tenant %s: %s %s", identity_id, tenant_id, exc.errcode,
             exc.errmsg)
    note = json.dumps({"enrich_error": {"errcode": exc.errcode, "reason": exc.reason}})
    await db.execute(
        "UPDATE identity SET profile = profile || $3::jsonb, enriched_at = $4 WHERE tenant = $1 AND id = $2 "
        "AND erased_at IS NULL AND (enriched_at IS NULL OR enriched_at <= $4)", tenant_id, identity_id, note, asked_at)


async def _store(tenant_id: int, identity_id: int, asked_at: datetime, profile: dict[str, Any], *,
                 display_name: str = "", avatar_url: str = "", language: str = "",
                 follow_users: list[dict[str, Any]] | None = None, follow_users_complete: bool = True) -> str:
    async with db.transaction():
        # The contact first, then the identity: the order of merges and the unfollow erasure.
        contact_id = await lock_identity_contact(tenant_id, identity_id)
        row = await db.fetchrow("SELECT erased_at, enriched_at FROM identity WHERE tenant = $1 AND id = $2 FOR NO KEY UPDATE",
                                tenant_id, identity_id)
        if row["erased_at"] is not None:
            return "erased"  # erased while WeChat was being asked
        if row["enriched_at"] is not None and row["enriched_at"] > asked_at:
            return "stale"
        await db.execute(
            "UPDATE identity SET profile = (profile - 'enrich_error') || $3::jsonb, enriched_at = $4 "
            "WHERE tenant = $1 AND id = $2", tenant_id, identity_id, json.dumps(profile, ensure_ascii=False), asked_at)
        # Only empty display fields are filled: what an agent typed or another channel told stays.
        await db.execute(
            "UPDATE contact SET display_name = CASE WHEN display_name = '' THEN $3 ELSE display_name END, "
            "avatar_url = CASE WHEN avatar_url = '' THEN $4 ELSE avatar_url END, "
            "language = CASE WHEN language = '' THEN $5 ELSE language END, updated_at = now() "
            "WHERE tenant = $1 AND id = $2 AND ((display_name = '' AND $3 <> '') OR (avatar_url = '' AND $4 <> '') "
            "OR (language = '' AND $5 <> ''))",
            tenant_id, contact_id, display_name[:120], avatar_url[:2000], language[:16])
        if follow_users is not None:
            await _store_owners(tenant_id, contact_id, identity_id, follow_users, follow_users_complete, asked_at)
    return "enriched"


def _when(unix: int, fallback: datetime) -> datetime:
    return datetime.fromtimestamp(unix, UTC) if unix > 0 else fallback


async def _store_owners(tenant_id: int, contact_id: int, identity_id: int, follow_users: list[dict[str, Any]],
                        complete: bool, asked_at: datetime) -> None:
    """The reps WeChat lists are owners now, with their remark, description, tags and add time. A removal
    Siyu recorded after the rep's add time stands (it came after this answer's view of the world); a rep
    Siyu has as an active owner whom WeChat no longer lists was removed, as of this answer."""
    for fu in follow_users:
        tags = [{"group": t["group_name"], "name": t["tag_name"], "type": t["type"],
                 **({"id": t["tag_id"]} if t.get("tag_id") else {})} for t in fu["tags"]]
        await db.execute(
            "INSERT INTO owner (tenant, contact, identity, staff_userid, state, remark, description, tags, added_at) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9) ON CONFLICT (tenant, identity, staff_userid) DO UPDATE SET "
            "state = CASE WHEN EXCLUDED.state <> '' THEN EXCLUDED.state ELSE owner.state END, "
            "remark = EXCLUDED.remark, description = EXCLUDED.description, tags = EXCLUDED.tags, "
            "added_at = EXCLUDED.added_at, removed_at = NULL "
            "WHERE owner.removed_at IS NULL OR owner.removed_at < EXCLUDED.added_at",
            tenant_id, contact_id, identity_id, fu["userid"][:64], fu["state"][:64], fu["remark"], fu["description"],
            json.dumps(tags, ensure_ascii=False), _when(fu["createtime"], asked_at))
    if not complete:
        return
    await db.execute(
        "UPDATE owner SET removed_at = $4 WHERE tenant = $1 AND identity = $2 AND removed_at IS NULL "
        "AND added_at <= $4 AND NOT (staff_userid = ANY($3::text[]))",
        tenant_id, identity_id, [fu["userid"][:64] for fu in follow_users], asked_at)
