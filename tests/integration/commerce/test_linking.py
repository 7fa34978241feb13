"""Linking a WeChat Pay merchant: `siyu tenant link-pay` and the channels page. The APIv3 key is sealed at
rest and never shown; every mistake names its field; failures show on the channels page in words."""

from __future__ import annotations

from pathlib import Path

import pytest

from siyu.commerce import merchants
from siyu.core import db
from siyu.core.crypto import SecretBox
from tests.conftest import MP, Client, TenantFixture
from tests.integration.commerce.conftest import ACTOR, OTHER_KEY, PAY_KEY, PUB_KEY_ID, deliver, pay_form
from tests.integration.test_cli import NEW_SECRET_KEY, ok, refused, siyu
from tests.pay_payloads import APIV3_KEY, MCHID, PaySender, certificate_pem, public_pem

SERIAL = 0x3775B6A45ACD588826FF9BDC2AC13CCDA5D2C5D3


async def sealed_key() -> str:
    return str((await db.fetchrow("SELECT apiv3_key_sealed FROM commerce_pay_merchant"))["apiv3_key_sealed"])


# --- the command ---------------------------------------------------------------------------------------------

async def test_link_pay_from_the_command_line(subprocess_env: dict[str, str], acme: TenantFixture,
                                              tmp_path: Path) -> None:
    pem, cert = tmp_path / "pub_key.pem", tmp_path / "cert.pem"
    pem.write_text(public_pem(PAY_KEY))
    cert.write_text(certificate_pem(OTHER_KEY, SERIAL))
    out = ok(siyu(subprocess_env, "tenant", "link-pay", "acme", "--mch-id", MCHID, "--app-id", MP["app_id"],
                  "--api-v3-key", APIV3_KEY, "--public-key-file", str(pem), "--public-key-id", PUB_KEY_ID,
                  "--platform-cert-file", str(cert)))
    assert f"linked WeChat Pay merchant {MCHID}" in out
    assert PUB_KEY_ID in out and format(SERIAL, "X") in out  # the serial, read from the certificate
    assert "notify_url: https://siyu.test/wechat/acme/pay" in out
    assert APIV3_KEY not in out
    sealed = await sealed_key()
    assert APIV3_KEY not in sealed
    config = await merchants.config_for("acme")
    assert config is not None and config.apiv3_key == APIV3_KEY and set(config.keys) == {PUB_KEY_ID, format(SERIAL, "X")}
    assert APIV3_KEY not in repr(config)


@pytest.mark.parametrize(("args", "option"), [
    (["--mch-id", "12ab"], "--mch-id"),
    (["--app-id", "wxNOTHEX"], "--app-id"),
    (["--api-v3-key", "short"], "--api-v3-key"),
    (["--public-key-id", "KEY_1"], "--public-key-id"),
])
async def test_link_pay_names_the_option_to_fix_and_saves_nothing(subprocess_env: dict[str, str],
                                                                   acme: TenantFixture, tmp_path: Path,
                                                                   args: list[str], option: str) -> None:
    pem = tmp_path / "pub_key.pem"
    pem.write_text(public_pem(PAY_KEY))
    base = {"--mch-id": MCHID, "--app-id": MP["app_id"], "--api-v3-key": APIV3_KEY, "--public-key-id": PUB_KEY_ID}
    base.update(dict(zip(args[::2], args[1::2], strict=True)))
    flat = [x for kv in base.items() for x in kv]
    refused(siyu(subprocess_env, "tenant", "link-pay", "acme", *flat, "--public-key-file", str(pem)), option)
    assert await db.fetchrow("SELECT 1 FROM commerce_pay_merchant") is None


async def test_link_pay_names_the_key_file_that_is_not_a_key(subprocess_env: dict[str, str], acme: TenantFixture,
                                                             tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("hello")
    refused(siyu(subprocess_env, "tenant", "link-pay", "acme", "--mch-id", MCHID, "--app-id", MP["app_id"],
                 "--api-v3-key", APIV3_KEY, "--public-key-file", str(junk), "--public-key-id", PUB_KEY_ID),
            "--public-key-file")
    refused(siyu(subprocess_env, "tenant", "link-pay", "acme", "--mch-id", MCHID, "--app-id", MP["app_id"],
                 "--api-v3-key", APIV3_KEY), "--public-key")  # no key at all
    assert await db.fetchrow("SELECT 1 FROM commerce_pay_merchant") is None


async def test_secrets_rotate_reseals_the_apiv3_key(subprocess_env: dict[str, str], acme: TenantFixture) -> None:
    await merchants.do_link_pay(ACTOR, acme.id, pay_form())
    old_key = subprocess_env["SIYU_SECRET_KEY"]
    before = await sealed_key()
    context = f"commerce_pay_merchant:{acme.id}:apiv3_key"
    assert SecretBox(old_key).open(before, context) == APIV3_KEY
    env = {**subprocess_env, "SIYU_SECRET_KEY": NEW_SECRET_KEY, "SIYU_PREVIOUS_SECRET_KEYS": old_key}
    out = ok(siyu(env, "secrets", "rotate"))
    assert "re-encrypted 1 WeChat Pay APIv3 key(s)" in out
    after = await sealed_key()
    assert after != before and SecretBox(NEW_SECRET_KEY).open(after, context) == APIV3_KEY


# --- the services --------------------------------------------------------------------------------------------

async def test_relinking_keeps_the_key_and_the_live_keys_unless_the_merchant_changes(acme: TenantFixture) -> None:
    await merchants.do_link_pay(ACTOR, acme.id, pay_form())
    sealed = await sealed_key()
    status = await merchants.do_link_pay(ACTOR, acme.id, pay_form(api_v3_key="", public_key="", public_key_id="",
                                                                   platform_cert=certificate_pem(OTHER_KEY, SERIAL)))
    assert await sealed_key() == sealed  # blank keeps the saved key
    assert {k.key_id for k in status.keys} == {PUB_KEY_ID, format(SERIAL, "X")}
    status = await merchants.do_link_pay(ACTOR, acme.id, pay_form(mch_id="1900000555"))
    assert [k.key_id for k in status.keys] == [PUB_KEY_ID]  # another merchant: only the keys given now


async def test_the_last_key_cannot_be_removed(acme: TenantFixture) -> None:
    from siyu.core.errors import InvalidInput

    await merchants.do_link_pay(ACTOR, acme.id, pay_form(platform_cert=certificate_pem(OTHER_KEY, SERIAL)))
    await merchants.do_remove_key(ACTOR, acme.id, format(SERIAL, "X"))
    with pytest.raises(InvalidInput) as err:
        await merchants.do_remove_key(ACTOR, acme.id, PUB_KEY_ID)
    assert err.value.errors[0].field == "key_id"
    assert [k.key_id for k in (await merchants.status(acme.id)).keys] == [PUB_KEY_ID]  # type: ignore[union-attr]


# --- the channels page --------------------------------------------------------------------------------------

async def test_the_channels_page_links_the_merchant_and_never_shows_the_key(acme_admin: Client,
                                                                            acme: TenantFixture) -> None:
    page = await acme_admin.get("/settings/channels")
    assert page.status_code == 200
    assert 'id="pay-merchant"' in page.text and "https://siyu.test/wechat/acme/pay" in page.text
    r = await acme_admin.form("/settings/pay", {k: v for k, v in pay_form().items()}, htmx=True)
    assert r.status_code == 200, r.text
    assert r.text.lstrip().startswith('<section class="card" id="pay-merchant">')  # the section only
    assert PUB_KEY_ID in r.text and "hx-trigger" in r.headers
    for shown in (r.text, (await acme_admin.get("/settings/channels")).text, (await acme_admin.get("/settings/pay")).text):
        assert APIV3_KEY not in shown
        assert APIV3_KEY[-4:] not in shown
    assert (await acme_admin.get("/settings/pay")).text.startswith("<!doctype html>")


async def test_the_form_names_each_wrong_field_and_keeps_what_was_typed_except_the_key(acme_admin: Client,
                                                                                      acme: TenantFixture) -> None:
    r = await acme_admin.form("/settings/pay", pay_form(mch_id="abc", api_v3_key="tooshort", public_key="nope"),
                              htmx=True)
    assert r.status_code == 400
    for message in ("6 to 32 digits", "exactly 32 characters", "not a PEM RSA public key"):
        assert message in r.text
    assert "tooshort" not in r.text and 'value="abc"' in r.text
    assert await db.fetchrow("SELECT 1 FROM commerce_pay_merchant") is None
    # Without htmx the form posts and gets the page back.
    r = await acme_admin.form("/settings/pay", pay_form(mch_id="abc"))
    assert r.status_code == 400 and r.text.startswith("<!doctype html>")


async def test_agents_cannot_see_or_change_the_merchant(acme_agent: Client, acme: TenantFixture) -> None:
    for r in (await acme_agent.get("/settings/pay"), await acme_agent.form("/settings/pay", pay_form())):
        assert r.status_code == 403
    assert await db.fetchrow("SELECT 1 FROM commerce_pay_merchant") is None


async def test_the_channels_page_says_in_words_why_notifications_fail(acme_admin: Client, client: Client,
                                                                      paying: PaySender) -> None:
    page = await acme_admin.get("/settings/channels")
    assert "Payment notifications are failing" not in page.text
    assert (await deliver(client, paying.transaction("O-1", 1, "oBuyer0001", apiv3_key="Q" * 32))).status_code == 500
    page = await acme_admin.get("/settings/channels")
    assert "Payment notifications are failing." in page.text
    assert "cannot be decrypted with the APIv3 key saved here" in page.text
    await acme_admin.form("/language", {"locale": "zh_CN"})
    zh = await acme_admin.get("/settings/channels")
    assert "支付通知" in zh.text
    # A key WeChat switched to that is not linked yet.
    other = PaySender(OTHER_KEY, key_id="PUB_KEY_ID_0119000001092099999999999999")
    await deliver(client, other.transaction("O-1", 1, "oBuyer0001"))
    await acme_admin.form("/language", {"locale": "en"})
    page = await acme_admin.get("/settings/channels")
    assert "signed with a key Siyu does not have" in page.text
    assert "PUB_KEY_ID_0119000001092099999999999999" in page.text
