"""Tenants, their linked WeChat accounts, staff, teams, invitations, API keys and the audit log.

Every tenant-owned table carries `tenant` and starts its unique keys with it (Citus-ready); the
composite unique indexes are created in the migrations.
"""

from __future__ import annotations

from piccolo.columns import (
    JSONB,
    Boolean,
    ForeignKey,
    Integer,
    OnDelete,
    Serial,
    Text,
    Timestamptz,
    Varchar,
)
from piccolo.table import Table


class Tenant(Table):
    id: Serial
    slug = Varchar(length=40, unique=True)
    name = Varchar(length=120)
    timezone = Varchar(length=64, default="Asia/Shanghai")
    locale = Varchar(length=8, default="zh_CN")
    status = Varchar(length=16, default="active")  # active | suspended
    # OA and MP bound to one WeChat Open Platform account: unionids are expected.
    open_platform_bound = Boolean(default=False)
    created_at = Timestamptz()


class ChannelAccount(Table):
    """One linked WeChat account of a tenant: kind is `oa`, `mp` or `wecom`, at most one of each."""

    id: Serial
    tenant = ForeignKey(Tenant, null=False, on_delete=OnDelete.cascade, index=True)
    kind = Varchar(length=8)  # oa | mp | wecom
    app_id = Varchar(length=32)  # AppID (wx…) or CorpID (ww…)
    oa_kind = Varchar(length=16, null=True)  # service | subscription (OA only)
    message_mode = Varchar(length=16, default="safe")  # plain | compatible | safe (OA/MP)
    push_format = Varchar(length=8, default="xml")  # xml | json (MP only)
    original_id = Varchar(length=32, null=True)  # gh_… (OA/MP)
    agent_id = Varchar(length=16, null=True)  # WeCom self-built app AgentID
    kf_enabled = Boolean(default=False)  # WeCom 微信客服
    # The callback Token signs WeChat's pushes: whoever knows it can forge plain-mode callbacks, so it is
    # sealed like the other secrets.
    token_encrypted = Text(default="")
    secret_encrypted = Text()  # AppSecret / app Secret, sealed by siyu.core.crypto
    aes_key_encrypted = Text()  # EncodingAESKey, sealed
    last_check_at = Timestamptz(null=True, default=None)
    last_check_ok = Boolean(null=True, default=None)
    last_check_code = Integer(null=True, default=None)
    # WeChat's last URL check (the GET with echostr when the admin submits the server configuration in the
    # console), written by the gateway: when it arrived and how it went (`siyu.tenants.linking.URL_CHECK`).
    # Cleared when the Token, key or AppID changes: WeChat must check the new ones.
    url_check_at = Timestamptz(null=True, default=None)
    url_check_outcome = Varchar(length=16, default="")
    created_at = Timestamptz()
    updated_at = Timestamptz()


class Staff(Table):
    """A person who signs in. Platform admins have no tenant."""

    id: Serial
    tenant = ForeignKey(Tenant, null=True, on_delete=OnDelete.cascade, index=True)
    email = Varchar(length=254, unique=True)  # stored lower-cased; the login name
    name = Varchar(length=120, default="")
    password_hash = Text()
    role = Varchar(length=16)  # platform_admin | tenant_admin | agent
    locale = Varchar(length=8, null=True, default=None)  # remembered language choice
    max_concurrent = Integer(default=10)  # capacity: conversations at once
    is_active = Boolean(default=True)
    # Bumped on password change: sessions created before it stop working.
    auth_epoch = Integer(default=0)
    last_login_at = Timestamptz(null=True, default=None)
    created_at = Timestamptz()


class Team(Table):
    id: Serial
    tenant = ForeignKey(Tenant, null=False, on_delete=OnDelete.cascade, index=True)
    name = Varchar(length=60)
    created_at = Timestamptz()


class TeamMember(Table):
    id: Serial
    tenant = ForeignKey(Tenant, null=False, on_delete=OnDelete.cascade, index=True)
    team = ForeignKey(Team, null=False, on_delete=OnDelete.cascade, index=True)
    staff = ForeignKey(Staff, null=False, on_delete=OnDelete.cascade, index=True)


class Invitation(Table):
    id: Serial
    tenant = ForeignKey(Tenant, null=False, on_delete=OnDelete.cascade, index=True)
    email = Varchar(length=254)
    role = Varchar(length=16)
    token_hash = Varchar(length=64, unique=True)  # sha256 of the token in the link
    team_ids = JSONB(default=[])
    max_concurrent = Integer(default=10)
    invited_by = ForeignKey(Staff, null=True, on_delete=OnDelete.set_null)
    expires_at = Timestamptz()
    accepted_at = Timestamptz(null=True, default=None)
    revoked_at = Timestamptz(null=True, default=None)
    created_at = Timestamptz()


class ApiKey(Table):
    id: Serial
    tenant = ForeignKey(Tenant, null=False, on_delete=OnDelete.cascade, index=True)
    name = Varchar(length=80, default="")
    prefix = Varchar(length=16, unique=True)  # shown in lists, used to find the row
    key_hash = Varchar(length=64)  # sha256 of the whole key
    created_by = ForeignKey(Staff, null=True, on_delete=OnDelete.set_null)
    last_used_at = Timestamptz(null=True, default=None)
    revoked_at = Timestamptz(null=True, default=None)
    created_at = Timestamptz()


class AuditLog(Table):
    """Who changed what and when. Secret values never enter `changes`."""

    id: Serial
    tenant = ForeignKey(Tenant, null=True, on_delete=OnDelete.cascade, index=True)
    actor = ForeignKey(Staff, null=True, on_delete=OnDelete.set_null)
    actor_label = Varchar(length=254, default="")  # email, "cli" or "api key …", kept if the actor goes
    action = Varchar(length=64)
    target_type = Varchar(length=32, default="")
    target_id = Varchar(length=64, default="")
    changes = JSONB(default={})
    ip = Varchar(length=64, default="")
    created_at = Timestamptz()
