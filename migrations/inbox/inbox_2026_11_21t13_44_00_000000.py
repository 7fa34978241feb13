"""Tenant-first keys of the inbox: one conversation per identity, one agent row per rep, messages once
per source key, the indexes the inbox lists and routing read, and CHECKs on every state column."""

from siyu.core.migrations import sql_migration

ID = "2026-11-21T13:44:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "inbox keys, indexes and checks"

FORWARDS = [
    "CREATE UNIQUE INDEX inbox_settings_tenant ON inbox_settings (tenant)",
    "CREATE UNIQUE INDEX inbox_team_route_team ON inbox_team_route (tenant, team)",
    "CREATE UNIQUE INDEX inbox_agent_staff ON inbox_agent (tenant, staff)",
    "ALTER TABLE inbox_agent ADD CONSTRAINT inbox_agent_presence_check "
    "CHECK (presence IN ('online', 'away', 'offline'))",
    "CREATE UNIQUE INDEX inbox_conversation_identity ON inbox_conversation (tenant, identity)",
    "CREATE INDEX inbox_conversation_tenant_id ON inbox_conversation (tenant, id)",
    # The lists: a rep's own, the queue (VIP first, then first come), everything by recency.
    "CREATE INDEX inbox_conversation_assignee ON inbox_conversation (tenant, assignee, status, last_message_at DESC)",
    "CREATE INDEX inbox_conversation_queue ON inbox_conversation (tenant, vip DESC, queued_at, id) "
    "WHERE status = 'queued'",
    "CREATE INDEX inbox_conversation_recent ON inbox_conversation (tenant, status, last_message_at DESC, id DESC)",
    "CREATE INDEX inbox_conversation_sla ON inbox_conversation (assigned_at) "
    "WHERE status = 'assigned' AND first_response_at IS NULL",
    "CREATE INDEX inbox_conversation_snoozed ON inbox_conversation (snoozed_until) WHERE status = 'snoozed'",
    "ALTER TABLE inbox_conversation ADD CONSTRAINT inbox_conversation_status_check "
    "CHECK (status IN ('bot', 'queued', 'assigned', 'snoozed', 'resolved'))",
    "ALTER TABLE inbox_conversation ADD CONSTRAINT inbox_conversation_assignee_check "
    "CHECK ((status IN ('assigned', 'snoozed')) = (assignee IS NOT NULL))",
    "ALTER TABLE inbox_conversation ADD CONSTRAINT inbox_conversation_channel_check "
    "CHECK (channel IN ('oa', 'mp', 'wecom'))",
    "CREATE UNIQUE INDEX inbox_message_source ON inbox_message (tenant, source_key)",
    "CREATE INDEX inbox_message_thread ON inbox_message (tenant, conversation, id DESC)",
    "ALTER TABLE inbox_message ADD CONSTRAINT inbox_message_direction_check "
    "CHECK (direction IN ('in', 'out', 'note', 'system'))",
    "ALTER TABLE inbox_message ADD CONSTRAINT inbox_message_status_check "
    "CHECK (status IN ('received', 'sending', 'sent', 'failed', 'noted'))",
    "CREATE INDEX inbox_assignment_conversation ON inbox_assignment (tenant, conversation, assigned_at DESC)",
    "CREATE INDEX inbox_assignment_contact ON inbox_assignment (tenant, contact, assigned_at DESC)",
    "CREATE INDEX inbox_assignment_day ON inbox_assignment (tenant, assigned_at)",
    "CREATE UNIQUE INDEX inbox_assignment_open ON inbox_assignment (tenant, conversation) WHERE ended_at IS NULL",
    "CREATE UNIQUE INDEX inbox_canned_shortcut ON inbox_canned_reply (tenant, COALESCE(owner, 0), lower(shortcut))",
]

BACKWARDS = [
    "DROP INDEX IF EXISTS inbox_canned_shortcut",
    "DROP INDEX IF EXISTS inbox_assignment_open",
    "DROP INDEX IF EXISTS inbox_assignment_day",
    "DROP INDEX IF EXISTS inbox_assignment_contact",
    "DROP INDEX IF EXISTS inbox_assignment_conversation",
    "ALTER TABLE inbox_message DROP CONSTRAINT IF EXISTS inbox_message_status_check",
    "ALTER TABLE inbox_message DROP CONSTRAINT IF EXISTS inbox_message_direction_check",
    "DROP INDEX IF EXISTS inbox_message_thread",
    "DROP INDEX IF EXISTS inbox_message_source",
    "ALTER TABLE inbox_conversation DROP CONSTRAINT IF EXISTS inbox_conversation_channel_check",
    "ALTER TABLE inbox_conversation DROP CONSTRAINT IF EXISTS inbox_conversation_assignee_check",
    "ALTER TABLE inbox_conversation DROP CONSTRAINT IF EXISTS inbox_conversation_status_check",
    "DROP INDEX IF EXISTS inbox_conversation_snoozed",
    "DROP INDEX IF EXISTS inbox_conversation_sla",
    "DROP INDEX IF EXISTS inbox_conversation_recent",
    "DROP INDEX IF EXISTS inbox_conversation_queue",
    "DROP INDEX IF EXISTS inbox_conversation_assignee",
    "DROP INDEX IF EXISTS inbox_conversation_tenant_id",
    "DROP INDEX IF EXISTS inbox_conversation_identity",
    "ALTER TABLE inbox_agent DROP CONSTRAINT IF EXISTS inbox_agent_presence_check",
    "DROP INDEX IF EXISTS inbox_agent_staff",
    "DROP INDEX IF EXISTS inbox_team_route_team",
    "DROP INDEX IF EXISTS inbox_settings_tenant",
]


forwards = sql_migration(ID, "inbox", DESCRIPTION, FORWARDS, BACKWARDS)
