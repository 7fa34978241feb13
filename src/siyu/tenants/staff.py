"""Staff accounts, teams, invitations and password checks."""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from siyu.core import db
from siyu.core.clock import now
from siyu.core.crypto import sha256_hex
from siyu.core.errors import Conflict, FieldError, Forbidden, InvalidInput, NotFound
from siyu.tenants import validation as v
from siyu.tenants.services import TENANT_FIELDS, Actor, do_create_tenant, get_tenant, record_audit
from siyu.tenants.tables import Invitation, Staff, Team, TeamMember, Tenant

_hasher = PasswordHasher()  # argon2id with the library's current recommended parameters
INVITATION_TTL = timedelta(days=7)
# Verified against when the email is unknown, so a wrong email costs as long as a wrong password.
_DUMMY_HASH = _hasher.hash("siyu-no-such-user")


async def hash_password(password: str) -> str:
    return await asyncio.to_thread(_hasher.hash, password)


async def verify_password(password_hash: str, password: str) -> bool:
    def check() -> bool:
        try:
            return _hasher.verify(password_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    return await asyncio.to_thread(check)


@dataclass(frozen=True)
class CurrentUser:
    """The signed-in person, as guards and views see them."""

    id: int
    tenant_id: int | None
    tenant_slug: str | None
    tenant_name: str | None
    email: str
    name: str
    role: str
    locale: str | None
    auth_epoch: int

    @property
    def is_platform_admin(self) -> bool:
        return self.role == "platform_admin"

    @property
    def is_tenant_admin(self) -> bool:
        return self.role == "tenant_admin"

    def actor(self, ip: str = "") -> Actor:
        return Actor(self.id, self.email, ip)


async def load_current_user(staff_id: int) -> CurrentUser | None:
    row = await Staff.select(
        Staff.id, Staff.tenant, Staff.email, Staff.name, Staff.role, Staff.locale, Staff.auth_epoch,
        Staff.is_active, Staff.tenant.slug.as_alias("tenant_slug"), Staff.tenant.name.as_alias("tenant_name"),
        Staff.tenant.status.as_alias("tenant_status"),
    ).where(Staff.id == staff_id).first()
    if row is None or not row["is_active"]:
        return None
    if row["tenant"] is not None and row["tenant_status"] != "active":
        return None  # a suspended tenant's staff cannot work
    return CurrentUser(
        id=row["id"], tenant_id=row["tenant"], tenant_slug=row["tenant_slug"], tenant_name=row["tenant_name"],
        email=row["email"], name=row["name"], role=row["role"], locale=row["locale"], auth_epoch=row["auth_epoch"],
    )


async def working_epochs(staff_ids: list[int]) -> dict[int, int]:
    """staff id → auth epoch, for those of `staff_ids` who may still work (active, their tenant not
    suspended): what an open session is checked against, for many sessions in one query."""
    if not staff_ids:
        return {}
    rows = await Staff.select(Staff.id, Staff.tenant, Staff.auth_epoch, Staff.is_active,
                              Staff.tenant.status.as_alias("tenant_status")).where(Staff.id.is_in(staff_ids))
    return {r["id"]: r["auth_epoch"] for r in rows
            if r["is_active"] and (r["tenant"] is None or r["tenant_status"] == "active")}


async def authenticate(email: str, password: str, ip: str = "") -> CurrentUser | None:
    email = email.strip().lower()
    row = await Staff.select(Staff.id, Staff.password_hash, Staff.is_active).where(Staff.email == email).first()
    if row is None:
        await verify_password(_DUMMY_HASH, password)
        return None
    if not await verify_password(row["password_hash"], password) or not row["is_active"]:
        return None
    if await Staff.exists().where((Staff.id == row["id"]) & (Staff.tenant.status == "suspended")):
        # The password was right, so saying why is no leak, and spares a support call.
        raise Forbidden(v.N_("Your brand's workspace is suspended. Contact your Siyu platform administrator."))
    user = await load_current_user(row["id"])
    if user is not None:
        async with db.transaction():
            await Staff.update({Staff.last_login_at: now()}).where(Staff.id == row["id"])
            await record_audit(user.actor(ip), user.tenant_id, "staff.signed_in", "staff", user.id)
    return user


async def password_matches(staff_id: int, password: str) -> bool:
    """Whether `password` is the signed-in person's own: asked again before secrets are shown."""
    row = await Staff.select(Staff.password_hash, Staff.is_active).where(Staff.id == staff_id).first()
    if row is None or not password:
        await verify_password(_DUMMY_HASH, password)  # the same cost either way
        return False
    return await verify_password(row["password_hash"], password) and bool(row["is_active"])


STAFF_FIELDS: dict[str, v.Checker] = {"email": v.check_email, "role": v.choice(*v.ROLES), "password": v.check_password}


async def do_create_staff(
    actor: Actor, tenant_id: int | None, email: str, role: str, password: str, name: str = "",
    max_concurrent: int = 10,
) -> Staff:
    clean = v.validate(STAFF_FIELDS, {"email": email.lower(), "role": role, "password": password})
    if (role == "platform_admin") != (tenant_id is None):
        raise InvalidInput.one("role", v.N_("Platform admins belong to no tenant; other roles need a tenant."))
    password_hash = await hash_password(password)
    async with db.transaction():
        if tenant_id is not None:
            await get_tenant(tenant_id)
        if await Staff.exists().where(Staff.email == clean["email"]):
            raise InvalidInput.one("email", v.N_("Someone already signs in with this email."))
        staff = Staff(tenant=tenant_id, email=clean["email"], name=name.strip()[:120], role=role,
                      password_hash=password_hash, max_concurrent=max_concurrent)
        await staff.save()
        await record_audit(actor, tenant_id, "staff.created", "staff", staff.id,
                           {"email": staff.email, "role": role})
    return staff


async def do_change_password(actor: Actor, staff_id: int, current: str, new: str, confirm: str) -> int:
    """Returns the new auth epoch; sessions from before it are signed out."""
    row = await Staff.select(Staff.password_hash, Staff.tenant).where(Staff.id == staff_id).first()
    if row is None:
        raise NotFound()
    errors: list[FieldError] = []
    if not await verify_password(row["password_hash"], current):
        errors.append(FieldError("current_password", v.N_("This is not your current password.")))
    if msg := v.check_password(new):
        errors.append(FieldError("new_password", msg, {"n": v.MIN_PASSWORD}))
    elif new != confirm:
        errors.append(FieldError("confirm_password", v.N_("The two new passwords differ.")))
    elif new == current:
        errors.append(FieldError("new_password", v.N_("Choose a password different from the current one.")))
    if errors:
        raise InvalidInput(errors)
    new_hash = await hash_password(new)
    async with db.transaction():
        await Staff.update({Staff.password_hash: new_hash, Staff.auth_epoch: Staff.auth_epoch + 1}).where(
            Staff.id == staff_id
        )
        epoch = await Staff.select(Staff.auth_epoch).where(Staff.id == staff_id).first()
        await record_audit(actor, row["tenant"], "staff.password_changed", "staff", staff_id)
    return int(epoch["auth_epoch"]) if epoch else 0


async def do_set_locale(staff_id: int, locale: str) -> None:
    if locale not in v.LOCALES:
        raise InvalidInput.one("locale", v.N_("Choose zh_CN or en."))
    await Staff.update({Staff.locale: locale}).where(Staff.id == staff_id)


async def list_staff(tenant_id: int) -> list[dict[str, Any]]:
    rows = await Staff.select(
        Staff.id, Staff.email, Staff.name, Staff.role, Staff.max_concurrent, Staff.is_active, Staff.last_login_at,
    ).where(Staff.tenant == tenant_id).order_by(Staff.role, ascending=False).order_by(Staff.email)
    memberships = await TeamMember.select(TeamMember.staff, TeamMember.team, TeamMember.team.name.as_alias("team_name")
                                          ).where(TeamMember.tenant == tenant_id)
    teams: dict[int, list[dict[str, Any]]] = {}
    for m in memberships:
        teams.setdefault(m["staff"], []).append({"id": m["team"], "name": m["team_name"]})
    for r in rows:
        r["teams"] = sorted(teams.get(r["id"], []), key=lambda t: t["name"])
    return rows


async def get_staff(tenant_id: int, staff_id: int) -> dict[str, Any]:
    row = await Staff.select(
        Staff.id, Staff.email, Staff.name, Staff.role, Staff.max_concurrent, Staff.is_active, Staff.last_login_at,
    ).where((Staff.id == staff_id) & (Staff.tenant == tenant_id)).first()
    if row is None:
        raise NotFound()
    row["team_ids"] = [m["team"] for m in await TeamMember.select(TeamMember.team).where(
        (TeamMember.tenant == tenant_id) & (TeamMember.staff == staff_id))]
    return row


async def _check_team_ids(tenant_id: int, team_ids: list[int]) -> list[int]:
    ids = sorted(set(team_ids))
    if not ids:
        return []
    found = await Team.select(Team.id).where((Team.tenant == tenant_id) & Team.id.is_in(ids))
    if len(found) != len(ids):
        raise InvalidInput.one("teams", v.N_("Unknown team."))
    return ids


async def set_teams(tenant_id: int, staff_id: int, team_ids: list[int]) -> None:
    await TeamMember.delete().where((TeamMember.tenant == tenant_id) & (TeamMember.staff == staff_id))
    if team_ids:
        await TeamMember.insert(*[TeamMember(tenant=tenant_id, team=t, staff=staff_id) for t in team_ids])


async def do_update_staff(actor: Actor, tenant_id: int, staff_id: int, data: dict[str, Any]) -> dict[str, Any]:
    rules = {"role": v.choice(*v.TENANT_ROLES), "max_concurrent": v.check_capacity, "name": v.check_name}
    clean = v.validate(rules, data)
    team_ids = [int(t) for t in data.get("team_ids", []) if str(t).isdigit()]
    is_active = bool(data.get("is_active"))
    async with db.transaction():
        before = await get_staff(tenant_id, staff_id)
        team_ids = await _check_team_ids(tenant_id, team_ids)
        if staff_id == actor.staff_id and (clean["role"] != "tenant_admin" or not is_active):
            raise InvalidInput.one("role", v.N_("You cannot remove your own admin rights or deactivate yourself."))
        await Staff.update({
            Staff.role: clean["role"], Staff.max_concurrent: int(clean["max_concurrent"]),
            Staff.name: clean["name"].strip(), Staff.is_active: is_active,
        }).where((Staff.id == staff_id) & (Staff.tenant == tenant_id))
        await set_teams(tenant_id, staff_id, team_ids)
        after = {"role": clean["role"], "max_concurrent": int(clean["max_concurrent"]), "name": clean["name"].strip(),
                 "is_active": is_active, "team_ids": team_ids}
        changed = {k: [before[k], after[k]] for k in after if before[k] != after[k]}
        if changed:
            await record_audit(actor, tenant_id, "staff.updated", "staff", staff_id, changed)
    return after


# --- teams ---------------------------------------------------------------------------------------

async def list_teams(tenant_id: int) -> list[dict[str, Any]]:
    teams = await Team.select(Team.id, Team.name).where(Team.tenant == tenant_id).order_by(Team.name)
    counts: dict[int, int] = {}
    for m in await TeamMember.select(TeamMember.team).where(TeamMember.tenant == tenant_id):
        counts[m["team"]] = counts.get(m["team"], 0) + 1
    for t in teams:
        t["members"] = counts.get(t["id"], 0)
    return teams


async def do_create_team(actor: Actor, tenant_id: int, name: str) -> int:
    name = name.strip()
    if not name:
        raise InvalidInput.one("name", v.N_("This field is required."))
    if len(name) > 60:
        raise InvalidInput.one("name", v.N_("Use at most 60 characters."))
    async with db.transaction():
        existing = await Team.raw(
            "SELECT id FROM team WHERE tenant = {} AND lower(name) = lower({})", tenant_id, name
        )
        if existing:
            raise InvalidInput.one("name", v.N_("A team with this name already exists."))
        team = Team(tenant=tenant_id, name=name)
        await team.save()
        await record_audit(actor, tenant_id, "team.created", "team", team.id, {"name": name})
    return team.id


async def do_delete_team(actor: Actor, tenant_id: int, team_id: int) -> None:
    async with db.transaction():
        team = await Team.select(Team.name).where((Team.id == team_id) & (Team.tenant == tenant_id)).first()
        if team is None:
            raise NotFound()
        await Team.delete().where((Team.id == team_id) & (Team.tenant == tenant_id))
        await record_audit(actor, tenant_id, "team.deleted", "team", team_id, {"name": team["name"]})


# --- invitations ---------------------------------------------------------------------------------

INVITE_FIELDS: dict[str, v.Checker] = {
    "email": v.check_email, "role": v.choice(*v.TENANT_ROLES), "max_concurrent": v.check_capacity,
}


async def do_invite(actor: Actor, tenant_id: int, data: dict[str, Any]) -> tuple[int, str]:
    """Create an invitation; returns (id, token). The token goes into the link and is stored hashed."""
    clean = v.validate(INVITE_FIELDS, {"max_concurrent": "10", **data})
    email = clean["email"].lower()
    team_ids = [int(t) for t in data.get("team_ids", []) if str(t).isdigit()]
    token = secrets.token_urlsafe(32)
    async with db.transaction():
        await get_tenant(tenant_id)
        team_ids = await _check_team_ids(tenant_id, team_ids)
        if await Staff.exists().where(Staff.email == email):
            raise InvalidInput.one("email", v.N_("Someone already signs in with this email."))
        pending = await Invitation.raw(
            "SELECT id FROM invitation WHERE tenant = {} AND lower(email) = {} AND accepted_at IS NULL "
            "AND revoked_at IS NULL AND expires_at > now()", tenant_id, email)
        if pending:
            raise InvalidInput.one("email", v.N_("This person already has a pending invitation."))
        # An expired, unused invitation for the same email makes way for the new one.
        await Invitation.update({Invitation.revoked_at: now()}).where(
            (Invitation.tenant == tenant_id) & (Invitation.email == email)
            & Invitation.accepted_at.is_null() & Invitation.revoked_at.is_null()
        )
        inv = Invitation(tenant=tenant_id, email=email, role=clean["role"], token_hash=sha256_hex(token),
                         team_ids=team_ids, max_concurrent=int(clean["max_concurrent"]),
                         invited_by=actor.staff_id, expires_at=now() + INVITATION_TTL)
        await inv.save()
        await record_audit(actor, tenant_id, "invitation.created", "invitation", inv.id,
                           {"email": email, "role": clean["role"]})
    return inv.id, token


async def list_invitations(tenant_id: int) -> list[dict[str, Any]]:
    return await Invitation.select(
        Invitation.id, Invitation.email, Invitation.role, Invitation.expires_at, Invitation.created_at,
    ).where(
        (Invitation.tenant == tenant_id) & Invitation.accepted_at.is_null() & Invitation.revoked_at.is_null()
        & (Invitation.expires_at > now())
    ).order_by(Invitation.created_at, ascending=False)


async def get_open_invitation(token: str) -> dict[str, Any]:
    row = await Invitation.select(
        Invitation.id, Invitation.tenant, Invitation.email, Invitation.role, Invitation.team_ids,
        Invitation.max_concurrent, Invitation.expires_at, Invitation.accepted_at, Invitation.revoked_at,
        Invitation.tenant.name.as_alias("tenant_name"), Invitation.tenant.status.as_alias("tenant_status"),
    ).where(Invitation.token_hash == sha256_hex(token)).output(load_json=True).first()
    if (row is None or row["accepted_at"] or row["revoked_at"] or row["expires_at"] <= now()
            or row["tenant_status"] != "active"):
        raise NotFound(v.N_("This invitation link is invalid, used or expired."))
    return row


async def do_accept_invitation(token: str, name: str, password: str, confirm: str) -> int:
    errors: list[FieldError] = []
    if msg := v.check_name(name):
        errors.append(FieldError("name", msg))
    if msg := v.check_password(password):
        errors.append(FieldError("password", msg, {"n": v.MIN_PASSWORD}))
    elif password != confirm:
        errors.append(FieldError("confirm_password", v.N_("The two passwords differ.")))
    if errors:
        raise InvalidInput(errors)
    password_hash = await hash_password(password)
    async with db.transaction():
        inv = await get_open_invitation(token)
        # Claim the invitation first: of two simultaneous submissions only one updates the row.
        claimed = await Invitation.update({Invitation.accepted_at: now()}, ).where(
            (Invitation.id == inv["id"]) & Invitation.accepted_at.is_null()
        ).returning(Invitation.id)
        if not claimed:
            raise Conflict(v.N_("This invitation was already used."))
        if await Staff.exists().where(Staff.email == inv["email"]):
            raise Conflict(v.N_("Someone already signs in with this email."))
        staff = Staff(tenant=inv["tenant"], email=inv["email"], name=name.strip(), role=inv["role"],
                      password_hash=password_hash, max_concurrent=inv["max_concurrent"])
        await staff.save()
        # Teams deleted since the invitation was sent are left out: the invitee could not fix that error.
        wanted = [int(t) for t in inv["team_ids"] or []]
        team_ids = [t["id"] for t in await Team.select(Team.id).where(
            (Team.tenant == inv["tenant"]) & Team.id.is_in(wanted))] if wanted else []
        await set_teams(inv["tenant"], staff.id, team_ids)
        await record_audit(Actor(staff.id, staff.email), inv["tenant"], "invitation.accepted", "staff", staff.id,
                           {"email": staff.email, "role": staff.role})
    return staff.id


async def do_revoke_invitation(actor: Actor, tenant_id: int, invitation_id: int) -> None:
    async with db.transaction():
        row = await Invitation.select(Invitation.email).where(
            (Invitation.id == invitation_id) & (Invitation.tenant == tenant_id)
            & Invitation.accepted_at.is_null() & Invitation.revoked_at.is_null()
        ).first()
        if row is None:
            raise NotFound()
        await Invitation.update({Invitation.revoked_at: now()}).where(Invitation.id == invitation_id)
        await record_audit(actor, tenant_id, "invitation.revoked", "invitation", invitation_id, {"email": row["email"]})


async def tenant_ids_with_admins() -> set[int]:
    rows = await Staff.select(Staff.tenant).where(Staff.role == "tenant_admin")
    return {r["tenant"] for r in rows}


async def tenant_for_slug(slug: str) -> dict[str, Any] | None:
    return await Tenant.select(Tenant.id, Tenant.slug, Tenant.name).where(Tenant.slug == slug).first()


async def do_onboard_tenant(actor: Actor, data: dict[str, Any]) -> tuple[Tenant, str]:
    """Create a tenant and invite its first tenant admin, in one transaction. Returns (tenant, token)."""
    errors: list[FieldError] = []
    try:
        v.validate(TENANT_FIELDS, {"timezone": "Asia/Shanghai", "locale": "zh_CN",
                                   **{k: val for k, val in data.items() if val}})
    except InvalidInput as exc:
        errors += exc.errors
    admin_email = str(data.get("admin_email") or "").strip()
    if msg := v.check_email(admin_email):
        errors.append(FieldError("admin_email", msg))
    if errors:
        raise InvalidInput(errors)
    async with db.transaction():
        tenant = await do_create_tenant(actor, data)
        try:
            _, token = await do_invite(actor, tenant.id, {"email": admin_email, "role": "tenant_admin"})
        except InvalidInput as exc:  # the form calls the invitation's email field `admin_email`
            raise InvalidInput([FieldError("admin_email" if e.field == "email" else e.field, e.message, e.params)
                                for e in exc.errors]) from exc
    return tenant, token
