"""A batch whose resolution fails every arq try is parked in PostgreSQL and resolved by the sweeper once the
database takes it again: nothing an answer of `success` promised is lost."""

from __future__ import annotations

import pytest
from arq.worker import Retry

from siyu.contacts.jobs import resolve_inbound, sweep_parked
from siyu.core import db
from siyu.wechat.tables import InboundEvent
from tests.conftest import TenantFixture
from tests.integration.contacts.test_inbound import T0, Channels, channels  # noqa: F401 (fixture)
from tests.wechat_payloads import text

pytestmark = pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning")

REFUSE = ("CREATE FUNCTION refuse_timeline() RETURNS trigger LANGUAGE plpgsql AS "
          "$$ BEGIN RAISE EXCEPTION 'disk full (test)'; END $$; "
          "CREATE TRIGGER refuse_timeline BEFORE INSERT ON timeline_event FOR EACH ROW EXECUTE FUNCTION refuse_timeline()")
ALLOW = "DROP TRIGGER refuse_timeline ON timeline_event; DROP FUNCTION refuse_timeline()"


async def test_a_batch_that_fails_every_try_is_parked_and_swept_later(acme: TenantFixture,
                                                                      channels: Channels) -> None:  # noqa: F811
    await channels.post(channels.oa, text("oParked", "hello", 9501, at=T0))
    await channels.settle()
    ids = [r["id"] for r in await InboundEvent.select(InboundEvent.id)]
    await db.execute(REFUSE)
    try:
        with pytest.raises(Exception, match="disk full"):
            await resolve_inbound({}, ids)  # called directly: the real error
        with pytest.raises(Retry):
            await resolve_inbound({"job_try": 2}, ids)  # tries left: arq retries
        assert await resolve_inbound({"job_try": 5}, ids) == 0  # the last try parks the batch
        [parked] = await db.fetch("SELECT * FROM contacts_parked_batch")
        assert list(parked["event_ids"]) == ids and "disk full" in parked["error"]
        await db.execute("UPDATE contacts_parked_batch SET next_attempt_at = now()")
        assert await sweep_parked({}) == 0  # still refused: it stays, later
        [again] = await db.fetch("SELECT * FROM contacts_parked_batch")
        assert again["attempts"] == 1 and again["next_attempt_at"] > parked["next_attempt_at"]
    finally:
        await db.execute(ALLOW)
    assert await sweep_parked({}) == 0  # not due yet
    await db.execute("UPDATE contacts_parked_batch SET next_attempt_at = now()")
    assert await sweep_parked({}) == 1
    assert await db.fetch("SELECT id FROM contacts_parked_batch") == []
    events = await db.fetch("SELECT kind, source_key FROM timeline_event")
    assert [(e["kind"], e["source_key"]) for e in events] == [("message_in", f"wechat:{ids[0]}")]
