"""Conversations belong to identities, so merges and unmerges carry them: after a merge the conversation
shows the surviving contact; after the undo, the contact it came from."""

from __future__ import annotations

from siyu.contacts import services as contacts
from siyu.inbox.conversations import get_conversation
from siyu.inbox.handoff import do_handoff
from tests.conftest import TenantFixture
from tests.integration.inbox.conftest import ACTOR, MakePerson, MakeRep


async def test_a_merge_moves_the_conversation_and_an_undo_moves_it_back(acme: TenantFixture, make_rep: MakeRep,
                                                                        make_person: MakePerson) -> None:
    await make_rep()
    oa_identity, oa_contact = await make_person("oa")
    mp_identity, mp_contact = await make_person("mp")
    oa_conv = await do_handoff(acme.id, oa_identity)
    mp_conv = await do_handoff(acme.id, mp_identity)
    merge_id = await contacts.do_merge(acme.id, oa_contact, mp_contact, "manual", ACTOR)
    assert (await get_conversation(acme.id, None, mp_conv["id"]))["contact"] == oa_contact
    assert (await get_conversation(acme.id, None, oa_conv["id"]))["contact"] == oa_contact
    await contacts.do_unmerge(acme.id, merge_id, ACTOR)
    assert (await get_conversation(acme.id, None, mp_conv["id"]))["contact"] == mp_contact
