"""The timeline learns the `refund` kind (commerce writes it next to `purchase`)."""

from siyu.core.migrations import sql_migration

ID = "2026-12-05T07:36:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "timeline kind refund"

OLD_KINDS = ("followed", "unfollowed", "message_in", "message_out", "menu_click", "scan", "mp_login", "purchase",
             "wecom_added", "wecom_removed", "handoff", "assignment", "resolution", "broadcast_sent",
             "broadcast_skipped", "broadcast_failed", "note", "merged", "unmerged")
KINDS = (*OLD_KINDS, "refund")


def _check(kinds: tuple[str, ...]) -> str:
    return f"ALTER TABLE timeline_event ADD CONSTRAINT timeline_event_kind_check CHECK (kind IN ({', '.join(repr(k) for k in kinds)}))"


FORWARDS = [
    "ALTER TABLE timeline_event DROP CONSTRAINT IF EXISTS timeline_event_kind_check",
    _check(KINDS),
]

BACKWARDS = [
    "ALTER TABLE timeline_event DROP CONSTRAINT IF EXISTS timeline_event_kind_check",
    _check(OLD_KINDS),
]


forwards = sql_migration(ID, "timeline", DESCRIPTION, FORWARDS, BACKWARDS)
