"""The send ledger's states say what is known of each send: queued (held, WeChat not asked), sending (asked),
retry (certainly not taken), then sent / failed / unknown. Old rows move over: a `pending` row may have
been asked (it becomes `sending`, which the sweeper settles as unknown), `retryable` is `retry`, `refused`
is `failed`. An index finds the unsettled rows for the sweeper."""

from siyu.core.migrations import sql_migration

ID = "2026-12-05T07:36:40:000000"
VERSION = "1.38.0"
DESCRIPTION = "send ledger states"

FORWARDS = [
    "ALTER TABLE wechat_outbound DROP CONSTRAINT IF EXISTS wechat_outbound_state_check",
    "UPDATE wechat_outbound SET attempted_at = claimed_at WHERE state = 'pending'",
    "UPDATE wechat_outbound SET state = CASE state WHEN 'pending' THEN 'sending' WHEN 'retryable' THEN 'retry' "
    "WHEN 'refused' THEN 'failed' ELSE state END WHERE state IN ('pending', 'retryable', 'refused')",
    "ALTER TABLE wechat_outbound ADD CONSTRAINT wechat_outbound_state_check "
    "CHECK (state IN ('queued', 'sending', 'retry', 'sent', 'failed', 'unknown'))",
    "CREATE INDEX wechat_outbound_unsettled ON wechat_outbound (state, claimed_at) "
    "WHERE state IN ('queued', 'sending', 'retry')",
]
BACKWARDS = [
    "DROP INDEX IF EXISTS wechat_outbound_unsettled",
    "ALTER TABLE wechat_outbound DROP CONSTRAINT IF EXISTS wechat_outbound_state_check",
    "UPDATE wechat_outbound SET state = CASE state WHEN 'queued' THEN 'pending' WHEN 'sending' THEN 'pending' "
    "WHEN 'retry' THEN 'retryable' WHEN 'failed' THEN 'refused' ELSE state END",
    "ALTER TABLE wechat_outbound ADD CONSTRAINT wechat_outbound_state_check "
    "CHECK (state IN ('pending', 'sent', 'refused', 'retryable', 'unknown'))",
]


forwards = sql_migration(ID, "wechat", DESCRIPTION, FORWARDS, BACKWARDS)
