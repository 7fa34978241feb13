"""A rep's load (conversations they hold in `assigned` state) kept on their `inbox_agent` row by a trigger
on `inbox_conversation`, whatever path changes a conversation. Routing then reads and locks a seat with its
load in one statement instead of counting every candidate's conversations."""

from siyu.core.migrations import sql_migration

ID = "2026-11-21T16:07:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "rep load kept by a trigger"

FORWARDS = [
    """CREATE FUNCTION inbox_keep_load() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') AND OLD.status = 'assigned' AND OLD.assignee IS NOT NULL THEN
        UPDATE inbox_agent SET load = load - 1 WHERE tenant = OLD.tenant AND staff = OLD.assignee;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') AND NEW.status = 'assigned' AND NEW.assignee IS NOT NULL THEN
        INSERT INTO inbox_agent (tenant, staff, presence, presence_at, wecom_userid, load)
        VALUES (NEW.tenant, NEW.assignee, 'offline', now(), '', 1)
        ON CONFLICT (tenant, staff) DO UPDATE SET load = inbox_agent.load + 1;
    END IF;
    RETURN NULL;
END
$$""",
    "CREATE TRIGGER inbox_conversation_load_ins AFTER INSERT ON inbox_conversation FOR EACH ROW "
    "WHEN (NEW.status = 'assigned') EXECUTE FUNCTION inbox_keep_load()",
    "CREATE TRIGGER inbox_conversation_load_upd AFTER UPDATE OF status, assignee ON inbox_conversation FOR EACH ROW "
    "WHEN (OLD.status IS DISTINCT FROM NEW.status OR OLD.assignee IS DISTINCT FROM NEW.assignee) "
    "EXECUTE FUNCTION inbox_keep_load()",
    "CREATE TRIGGER inbox_conversation_load_del AFTER DELETE ON inbox_conversation FOR EACH ROW "
    "WHEN (OLD.status = 'assigned') EXECUTE FUNCTION inbox_keep_load()",
    "UPDATE inbox_agent a SET load = (SELECT count(*) FROM inbox_conversation c WHERE c.tenant = a.tenant "
    "AND c.assignee = a.staff AND c.status = 'assigned')",
]

BACKWARDS = [
    "DROP TRIGGER IF EXISTS inbox_conversation_load_del ON inbox_conversation",
    "DROP TRIGGER IF EXISTS inbox_conversation_load_upd ON inbox_conversation",
    "DROP TRIGGER IF EXISTS inbox_conversation_load_ins ON inbox_conversation",
    "DROP FUNCTION IF EXISTS inbox_keep_load()",
]


forwards = sql_migration(ID, "inbox", DESCRIPTION, FORWARDS, BACKWARDS)
