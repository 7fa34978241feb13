"""Pictures, voice and videos customers send are fetched from WeChat's media API by a job (never from a URL in
the message), checked, kept in the media store and shown in the thread and on the timeline to those who may see
them; reps send pictures through the send-once ledger (media/upload, then the image message). Against the
simulator, which issues its customers' media ids and answers media/get and media/upload as WeChat does."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from arq.worker import Retry

from siyu.core import db
from siyu.core.storage import media_store
from siyu.inbox import actions
from siyu.inbox.handoff import do_handoff
from siyu.simulator.media import sample
from siyu.wechat import media
from siyu.wechat.events import load_normalized
from tests.conftest import MP, OA, WECOM, Client, TenantFixture, signed_in
from tests.integration.contacts.test_enrich import World, ctx, runtime, world  # noqa: F401  (fixtures)
from tests.integration.contacts.test_inbound import run_worker
from tests.integration.inbox.conftest import MakeRep, signed_in_as, viewer
from tests.integration.simulator.receiver import Receiver

pytestmark = pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning")

GET = "cgi-bin/media/get"


def media_gets(world: World, root: str = "wechat-api") -> int:  # noqa: F811
    return int(world.sim.stats()["calls"].get(f"{root}/{GET}", 0))


async def rows() -> list[dict[str, Any]]:
    return [dict(r) for r in await db.fetch("SELECT * FROM wechat_media ORDER BY id")]


async def conversation_of(tenant_id: int, channel: str = "oa") -> dict[str, Any]:
    row = await db.fetchrow("SELECT c.* FROM inbox_conversation c WHERE c.tenant = $1 AND c.channel = $2",
                            tenant_id, channel)
    return dict(row)


async def message_of(conversation_id: int, msg_type: str) -> dict[str, Any]:
    row = await db.fetchrow("SELECT * FROM inbox_message WHERE conversation = $1 AND msg_type = $2 ORDER BY id DESC "
                            "LIMIT 1", conversation_id, msg_type)
    return dict(row)


async def held_by(acme: TenantFixture, make_rep: MakeRep, channel: str = "oa") -> tuple[int, dict[str, Any]]:
    rep = await make_rep("Li Na")
    identity = await db.fetchrow("SELECT id FROM identity WHERE tenant = $1 AND channel = $2", acme.id, channel)
    conv = await do_handoff(acme.id, identity["id"])
    await run_worker()
    assert conv["assignee"] == rep
    return rep, conv


# --- a customer's media ------------------------------------------------------------------------------------------

async def test_a_customers_picture_is_fetched_once_by_its_media_id_never_its_url(
        acme: TenantFixture, world: World) -> None:  # noqa: F811
    trap = Receiver()
    await trap.start()
    try:
        await world.oa_push("amy", "follow")
        pushed = await world.oa_push("amy", "image", pic_url=f"http://127.0.0.1:{trap.port}/picture.jpg")
        await run_worker()
        await world.deliver(world.oa, pushed)  # WeChat's retry of the same callback
        await run_worker()
    finally:
        await trap.stop()
    assert trap.requests == []  # PicUrl was never fetched
    [row] = await rows()
    assert (row["state"], row["kind"], row["content_type"], row["direction"]) == ("stored", "image", "image/jpeg", "in")
    assert row["media_id"] == pushed["message"]["MediaId"] and row["size"] == len(sample("photo.jpg"))
    stored = await media_store().get(row["storage_key"])
    assert stored == sample("photo.jpg") and row["sha256"] == hashlib.sha256(stored).hexdigest()
    assert media_gets(world) == 1  # once, though the callback came twice

    # The job again (a re-run): nothing asked, nothing changed.
    assert await media.fetch_media({"job_try": 1}, acme.id, row["id"]) == "stored"
    assert media_gets(world) == 1


async def test_voice_is_kept_with_a_playable_copy_and_its_transcription(
        acme: TenantFixture, world: World, make_rep: MakeRep, client_factory: Any) -> None:  # noqa: F811
    await world.oa_push("ben", "follow")
    await world.oa_push("ben", "voice", recognition="明天下午能送到吗")
    await run_worker()
    [row] = await rows()
    assert (row["state"], row["content_type"], row["recognition"]) == ("stored", "audio/amr", "明天下午能送到吗")
    assert row["playable_key"]
    mp3 = await media_store().get(row["playable_key"])
    assert mp3 and media.sniff(mp3) == "audio/mpeg"

    rep, conv = await held_by(acme, make_rep)
    page = await signed_in_as(client_factory, rep)
    shown = (await page.get(f"/inbox/conversations/{conv['id']}")).text
    message = await message_of(conv["id"], "voice")
    url = f"/inbox/conversations/{conv['id']}/messages/{message['id']}/media"
    assert f'<audio class="msg-voice" controls preload="metadata" src="{url}?play=1">' in shown
    assert "“明天下午能送到吗”" in shown and "WeChat's transcription" in shown
    played = await page.get(f"{url}?play=1")
    assert played.status_code == 200 and played.headers["content-type"] == "audio/mpeg"
    raw = await page.get(url)  # the AMR itself is no page content: a download
    assert raw.headers["content-type"] == "application/octet-stream"
    assert raw.headers["content-disposition"].startswith("attachment;") and raw.content.startswith(b"#!AMR")


async def test_videos_follow_wechats_own_link_and_files_download(
        acme: TenantFixture, world: World) -> None:  # noqa: F811
    await world.oa_push("cat", "follow")
    await world.oa_push("cat", "video")  # OA: media/get answers {"video_url": …} on WeChat's (here: its API) host
    await world.wecom_push("cat", "kf_file", file_name="报价单.pdf")
    await world.wecom_push("cat", "kf_image", sample="photo.png")
    await run_worker()
    by_kind = {r["kind"]: r for r in await rows() if r["kind"] in ("video", "file", "image")}
    assert (by_kind["video"]["state"], by_kind["video"]["content_type"]) == ("stored", "video/mp4")
    assert (by_kind["file"]["state"], by_kind["file"]["content_type"]) == ("stored", "application/pdf")
    assert by_kind["file"]["channel"] == "wecom" and by_kind["file"]["filename"] == "报价单.pdf"
    assert (by_kind["image"]["content_type"], by_kind["image"]["channel"]) == ("image/png", "wecom")
    assert media_gets(world, "wecom-api") == 2


def test_only_wechats_own_addresses_are_followed() -> None:
    from siyu.wechat.client import is_wechat_url

    assert is_wechat_url("https://mmbiz.qpic.cn/mmbiz_jpg/abc/0")
    assert is_wechat_url("https://vweixinf.tc.qq.com/102/20202/snsvideodownload?filekey=x")
    for url in ("http://mmbiz.qpic.cn/x", "https://qq.com.evil.example/x", "https://evil.example/qq.com",
                "https://127.0.0.1:1/x", "file:///etc/passwd", "https://xqq.com/x"):
        assert not is_wechat_url(url), url


@pytest.mark.parametrize(("push", "error", "words"), [
    ({"size_bytes": 11 * 1024 * 1024}, "too_large", "larger than Siyu keeps"),
    ({"sample": "pricelist.pdf"}, "bad_type", "not a kind of media Siyu shows"),
    ({"media_id": "not-issued-by-wechat"}, "expired", "WeChat keeps a customer"),
])
async def test_media_that_cannot_be_kept_fail_in_words(
        acme: TenantFixture, world: World, make_rep: MakeRep, client_factory: Any,  # noqa: F811
        push: dict[str, Any], error: str, words: str) -> None:
    await world.oa_push("dan", "follow")
    await world.oa_push("dan", "image", **push)
    await run_worker()
    [row] = await rows()
    assert (row["state"], row["error"]) == ("failed", error)
    assert row["storage_key"] == ""
    rep, conv = await held_by(acme, make_rep)
    page = await signed_in_as(client_factory, rep)
    assert words in (await page.get(f"/inbox/conversations/{conv['id']}")).text.replace("&#39;", "'")


async def test_media_older_than_three_days_are_expired_and_busy_is_tried_again(
        acme: TenantFixture, world: World, ctx: dict[str, Any]) -> None:  # noqa: F811
    await world.oa_push("eve", "follow")
    await world.oa_push("eve", "image")
    await world.oa_push("eve", "image")
    # What processing the callbacks does (their rows, once each), without the worker's fetch jobs yet.
    stored = await load_normalized([r["id"] for r in await db.fetch("SELECT id FROM wechat_inbound_event")])
    assert len(await media.note_inbound(stored)) == 2
    assert len(await media.note_inbound(stored)) == 2  # again: the same two rows, still to fetch
    first, second = await rows()
    assert first["state"] == second["state"] == "pending"

    world.sim.faults(OA["app_id"], -1, -1, -1)  # busy through the client's own retries
    with pytest.raises(Retry):
        await media.fetch_media(ctx, acme.id, first["id"])
    assert (await rows())[0]["state"] == "pending"
    world.sim.faults(OA["app_id"], -1, -1, -1)
    assert await media.fetch_media({**ctx, "job_try": media.FETCH_TRIES}, acme.id, first["id"]) == "failed"
    assert (await rows())[0]["error"] == "busy"  # "WeChat was busy", after the last try

    world.sim.faults(OA["app_id"], clear=True)
    world.sim.clock(3 * 86400 + 60)  # WeChat keeps a customer's media 3 days
    try:
        assert await media.fetch_media(ctx, acme.id, second["id"]) == "failed"
    finally:
        world.sim._post("/_sim/clock", {"reset": True})
    assert (await rows())[1]["error"] == "expired"


# --- who may see them ----------------------------------------------------------------------------------------------

async def test_media_are_served_only_to_those_who_may_see_the_conversation(
        acme: TenantFixture, world: World, make_rep: MakeRep, client_factory: Any,  # noqa: F811
        globex_admin: Client) -> None:
    await world.oa_push("fay", "follow")
    await world.oa_push("fay", "image")
    await run_worker()
    rep, conv = await held_by(acme, make_rep)
    other = await make_rep("Wang Wu")
    message = await message_of(conv["id"], "image")
    url = f"/inbox/conversations/{conv['id']}/messages/{message['id']}/media"

    page = await signed_in_as(client_factory, rep)
    shown = (await page.get(f"/inbox/conversations/{conv['id']}")).text
    assert f'<img class="msg-image" src="{url}"' in shown
    got = await page.get(url)
    assert got.status_code == 200 and got.content == sample("photo.jpg")
    assert got.headers["content-type"] == "image/jpeg"
    assert got.headers["x-content-type-options"] == "nosniff"
    assert "sandbox" in got.headers["content-security-policy"]
    assert got.headers["content-disposition"].startswith("inline;")

    stranger = await signed_in_as(client_factory, other)  # a rep the conversation is not shown to
    assert (await stranger.get(url)).status_code == 404
    assert (await globex_admin.get(url)).status_code == 404  # another tenant
    assert (await page.get(f"/inbox/conversations/{conv['id']}/messages/{message['id'] + 999}/media")).status_code == 404

    # On the contact's timeline too, behind the contact's own check.
    event = await db.fetchrow("SELECT id, contact FROM timeline_event WHERE kind = 'message_in'")
    admin = await signed_in(client_factory, acme.admin_email)
    timeline_page = (await admin.get(f"/contacts/{event['contact']}")).text
    event_url = f"/contacts/{event['contact']}/events/{event['id']}/media"
    assert f'src="{event_url}"' in timeline_page
    assert (await admin.get(event_url)).content == sample("photo.jpg")
    assert (await globex_admin.get(event_url)).status_code == 404


async def test_an_unfollow_erases_the_persons_media(acme: TenantFixture, world: World) -> None:  # noqa: F811
    await world.oa_push("gus", "follow")
    await world.oa_push("gus", "image")
    await run_worker()
    [row] = await rows()
    assert await media_store().get(row["storage_key"]) is not None
    await world.oa_push("gus", "unfollow")
    await run_worker()
    assert await rows() == []
    assert await media_store().get(row["storage_key"]) is None


# --- a rep's picture -------------------------------------------------------------------------------------------------

async def test_a_rep_sends_a_picture_through_media_upload_and_the_ledger(
        acme: TenantFixture, world: World, make_rep: MakeRep, client_factory: Any) -> None:  # noqa: F811
    await world.oa_push("hal", "follow")
    await world.oa_push("hal", "text", text="有图片吗")
    await run_worker()
    rep, conv = await held_by(acme, make_rep)
    page = await signed_in_as(client_factory, rep)
    url = f"/inbox/conversations/{conv['id']}/image"
    png = sample("photo.png")

    # Checked before anything is kept: not a picture, too large for the Official Account, nothing chosen.
    for files, words in (({"image": ("x.jpg", sample("pricelist.pdf"), "image/jpeg")}, "Send a JPG or PNG picture"),
                         ({"image": ("big.jpg", sample("photo.jpg") + b"\0" * (2 * 1024 * 1024), "image/jpeg")},
                          "WeChat takes pictures up to 2 MB here"),
                         ({"image": ("empty.png", b"", "image/png")}, "Choose a picture to send")):
        bad = await page.form(url, files=files, htmx=True)
        assert bad.status_code == 400 and words in bad.text, bad.text
    assert await rows() == [] and await db.fetch("SELECT id FROM inbox_message WHERE msg_type = 'image'") == []

    sent = await page.form(url, files={"image": ("照片.png", png, "image/png")}, htmx=True)
    assert sent.status_code == 200, sent.text
    await run_worker()
    message = await message_of(conv["id"], "image")
    assert message["status"] == "sent"
    [upload] = [r for r in await rows() if r["direction"] == "out"]
    [accepted] = [m for m in world.sim.messages(app_id=OA["app_id"], endpoint="cgi-bin/message/custom/send")
                  if m["payload"]["msgtype"] == "image"]
    media_id = accepted["payload"]["image"]["media_id"]
    assert media_id == upload["wechat_media_id"]
    info = world.sim._get(f"/_sim/media/{media_id}/info", app_id=OA["app_id"])
    assert (info["origin"], info["sha256"], info["kind"]) == ("upload", hashlib.sha256(png).hexdigest(), "image")
    shown = (await page.get(f"/inbox/conversations/{conv['id']}")).text
    image_url = f"/inbox/conversations/{conv['id']}/messages/{message['id']}/media"
    assert f'<img class="msg-image" src="{image_url}"' in shown
    assert (await page.get(image_url)).content == png
    out = await db.fetch("SELECT payload FROM timeline_event WHERE kind = 'message_out'")
    assert any('"msg_type": "image"' in r["payload"] for r in out)


async def test_a_picture_to_a_conversation_one_may_not_see_answers_like_a_missing_one(
        acme: TenantFixture, world: World, make_rep: MakeRep, client_factory: Any,  # noqa: F811
        globex_admin: Client) -> None:
    await world.oa_push("kim", "follow")
    await world.oa_push("kim", "text", text="图片")
    await run_worker()
    rep, conv = await held_by(acme, make_rep)
    other = await signed_in_as(client_factory, await make_rep("Zhao Liu"))  # not shown this conversation
    files = {"image": ("p.jpg", sample("photo.jpg"), "image/jpeg")}
    missing = await other.form("/inbox/conversations/999999/image", files=files, htmx=True)
    assert missing.status_code == 404
    for client in (other, globex_admin):
        got = await client.form(f"/inbox/conversations/{conv['id']}/image", files=files, htmx=True)
        assert (got.status_code, got.text) == (missing.status_code, missing.text)
    assert await rows() == [] and await db.fetch("SELECT id FROM inbox_message WHERE msg_type = 'image'") == []


async def test_a_picture_waits_for_the_window_like_a_reply(
        acme: TenantFixture, world: World, make_rep: MakeRep, client_factory: Any) -> None:  # noqa: F811
    await world.oa_push("ida", "follow")
    await run_worker()
    rep, conv = await held_by(acme, make_rep)
    await db.execute("UPDATE wechat_reply_window SET event_at = now() - interval '2 hours', user_msg_at = NULL")
    page = await signed_in_as(client_factory, rep)
    refused = await page.form(f"/inbox/conversations/{conv['id']}/image",
                              files={"image": ("p.jpg", sample("photo.jpg"), "image/jpeg")}, htmx=True)
    assert refused.status_code == 409 and "reply window is closed" in refused.text
    assert await rows() == []


async def test_a_picture_to_a_wecom_customer_goes_as_a_kf_image(
        acme: TenantFixture, world: World, make_rep: MakeRep, client_factory: Any) -> None:  # noqa: F811
    await world.wecom_push("jo", "kf_text", text="在吗")
    await run_worker()
    rep, conv = await held_by(acme, make_rep, "wecom")
    message_id = await actions.do_send_image(acme.id, await viewer(acme.id, rep), conv["id"], sample("photo.jpg"),
                                             "p.jpg")
    await run_worker()
    assert (await db.fetchrow("SELECT status FROM inbox_message WHERE id = $1", message_id))["status"] == "sent"
    [sent] = [m for m in world.sim.messages(app_id=WECOM["corp_id"], endpoint="cgi-bin/kf/send_msg")
              if m["payload"]["msgtype"] == "image"]
    assert sent["payload"]["image"]["media_id"]
    assert MP  # the Mini Program takes pictures through the same path (customer-service image)
