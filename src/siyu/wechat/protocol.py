"""WeChat's callback wire protocol, as pure functions: signatures, the encrypted envelope, safe parsing,
dedup keys, normalisation into Siyu's event kinds, and passive replies.

No I/O here, so the gateway and the tests use exactly the same code paths.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import Any
from xml.etree import ElementTree

from wechatpy.crypto import PrpCrypto as MpPrp
from wechatpy.crypto import WeChatCrypto as MpCrypto
from wechatpy.exceptions import InvalidAppIdException
from wechatpy.replies import TextReply
from wechatpy.work.crypto import PrpCrypto as WorkPrp
from wechatpy.work.crypto import WeChatCrypto as WorkCrypto

MAX_BODY = 1024 * 1024


class CallbackRejected(Exception):
    """A callback Siyu refuses. `status` is the HTTP answer; `reason` goes to the log."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class Account:
    """What the gateway needs of a linked account; secrets decrypted, never logged."""

    tenant_id: int
    account_id: int
    channel: str  # oa | mp | wecom
    app_id: str  # AppID, or CorpID for WeCom
    token: str
    aes_key: str
    mode: str  # plain | compatible | safe
    push_format: str  # xml | json
    slug: str = ""

    def __repr__(self) -> str:
        return f"Account(tenant_id={self.tenant_id}, channel={self.channel!r}, app_id={self.app_id!r})"

    @cached_property
    def _crypto(self) -> MpCrypto | WorkCrypto:
        # Built once per kept account: decoding the EncodingAESKey on every callback is wasted work.
        cls = WorkCrypto if self.channel == "wecom" else MpCrypto
        return cls(self.token, self.aes_key, self.app_id)

    def crypto(self) -> MpCrypto | WorkCrypto:
        return self._crypto


def sha1_signature(*parts: str) -> str:
    return hashlib.sha1("".join(sorted(parts)).encode()).hexdigest()


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def check_timestamp(timestamp: str, max_skew: int, now: float | None = None) -> None:
    try:
        ts = int(timestamp)
    except (TypeError, ValueError):
        raise CallbackRejected(403, "timestamp missing or not a number") from None
    if max_skew > 0 and abs((now if now is not None else time.time()) - ts) > max_skew:
        raise CallbackRejected(403, f"timestamp {ts} is more than {max_skew} s from now (stale or replayed)")


def refuse_dtd(text: str | bytes) -> None:
    """No DTDs, no entities: nothing that could expand or reach out."""
    probe = text[:MAX_BODY].upper() if isinstance(text, bytes) else text[:MAX_BODY].upper().encode()
    if b"<!DOCTYPE" in probe or b"<!ENTITY" in probe:
        raise CallbackRejected(400, "XML with a DTD or entity declarations is refused")


def _element_value(el: ElementTree.Element) -> Any:
    if len(el) == 0:
        return el.text if el.text is not None else None
    out: dict[str, Any] = {}
    for child in el:
        value = _element_value(child)
        if child.tag in out:  # repeated elements become a list, as xmltodict does
            existing = out[child.tag]
            out[child.tag] = [*existing, value] if isinstance(existing, list) else [existing, value]
        else:
            out[child.tag] = value
    return out


def parse_xml(text: str) -> dict[str, Any]:
    """WeChat's XML as a dict of its fields (nested elements as dicts, repeated ones as lists).

    The stdlib's C parser (expat) is several times faster than a SAX-to-dict converter, which matters
    on the callback path; DTDs and entity declarations are refused before it runs."""
    refuse_dtd(text)
    try:
        root = ElementTree.fromstring(text)
    except ElementTree.ParseError as exc:
        raise CallbackRejected(400, f"malformed XML: {exc}") from None
    if root.tag != "xml":
        raise CallbackRejected(400, "malformed XML: the root element must be <xml>")
    value = _element_value(root)
    return value if isinstance(value, dict) else {}


def parse_json(text: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except ValueError:
        raise CallbackRejected(400, "malformed JSON") from None
    if not isinstance(data, dict):
        raise CallbackRejected(400, "malformed JSON: an object was expected")
    return data


# --- URL verification (GET) -------------------------------------------------------------------------

def verify_url(account: Account, query: dict[str, str]) -> str:
    """The body to answer WeChat's URL check with, or CallbackRejected."""
    timestamp, nonce = query.get("timestamp", ""), query.get("nonce", "")
    echostr = query.get("echostr", "")
    if not echostr:
        raise CallbackRejected(400, "echostr missing")
    if account.channel == "wecom":
        signature = query.get("msg_signature", "")
        if not signature or not _same(sha1_signature(account.token, timestamp, nonce, echostr), signature):
            raise CallbackRejected(403, "bad msg_signature on URL verification")
        return _decrypt(account, echostr)
    signature = query.get("signature", "")
    if not signature or not _same(sha1_signature(account.token, timestamp, nonce), signature):
        raise CallbackRejected(403, "bad signature on URL verification")
    return echostr


def _decrypt(account: Account, encrypt: str) -> str:
    """AES-256-CBC open of `Encrypt`; wechatpy checks the AppID/CorpID at the end of the plaintext."""
    prp = WorkPrp if account.channel == "wecom" else MpPrp
    try:
        plain = prp(account.crypto().key).decrypt(encrypt, account.app_id)
    except InvalidAppIdException:
        raise CallbackRejected(400, "the payload decrypts to another AppID/CorpID") from None
    except Exception as exc:  # bad base64, bad padding, wrong key
        raise CallbackRejected(400, f"the payload does not decrypt with this account's key: {type(exc).__name__}") \
            from None
    return plain.decode() if isinstance(plain, bytes) else str(plain)


# --- the envelope of a POST ----------------------------------------------------------------------------

@dataclass
class Opened:
    text: str  # the plaintext message (XML or JSON)
    fmt: str  # xml | json
    encrypted: bool


def open_envelope(account: Account, query: dict[str, str], body: bytes) -> Opened:
    """Verify and decrypt a POSTed callback. Raises CallbackRejected with WeChat-appropriate statuses."""
    if len(body) > MAX_BODY:
        raise CallbackRejected(413, "body over 1 MiB")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise CallbackRejected(400, "body is not UTF-8") from None
    stripped = text.lstrip()
    fmt = "json" if stripped.startswith("{") else "xml"
    if fmt == "xml":
        refuse_dtd(body)
    outer = parse_json(text) if fmt == "json" else parse_xml(text)
    timestamp, nonce = query.get("timestamp", ""), query.get("nonce", "")
    wants_encrypted = account.channel == "wecom" or query.get("encrypt_type") == "aes" or account.mode == "safe"

    if wants_encrypted:
        if account.mode == "plain" and account.channel != "wecom":
            raise CallbackRejected(400, "encrypted message for an account set to plain mode")
        encrypt = outer.get("Encrypt")
        signature = query.get("msg_signature", "")
        if not isinstance(encrypt, str) or not encrypt:
            raise CallbackRejected(400, "Encrypt missing from an encrypted-mode message")
        if not signature or not _same(sha1_signature(account.token, timestamp, nonce, encrypt), signature):
            raise CallbackRejected(403, "bad msg_signature")
        plain = _decrypt(account, encrypt)
        inner_fmt = "json" if plain.lstrip().startswith("{") else "xml"
        if inner_fmt == "xml":
            refuse_dtd(plain)
        return Opened(plain, inner_fmt, True)

    signature = query.get("signature", "")
    if not signature or not _same(sha1_signature(account.token, timestamp, nonce), signature):
        raise CallbackRejected(403, "bad signature")
    return Opened(text, fmt, False)


def fields_of(opened: Opened) -> dict[str, Any]:
    data = parse_json(opened.text) if opened.fmt == "json" else parse_xml(opened.text)
    return {k: v for k, v in data.items() if k != "Encrypt"}


# --- normalisation --------------------------------------------------------------------------------------

@dataclass
class Normalized:
    kind: str
    msg_type: str
    event: str
    external_id: str
    occurred_at: datetime
    dedup_key: str
    details: dict[str, Any] = field(default_factory=dict)


MESSAGE_TYPES = {"text", "image", "voice", "video", "shortvideo", "location", "link", "miniprogrampage", "file"}
OA_EVENTS = {
    "subscribe": "follow", "unsubscribe": "unfollow", "scan": "scan", "click": "menu_click", "view": "menu_view",
    "subscribe_msg_popup_event": "subscription_consent", "subscribe_msg_change_event": "subscription_consent",
    "subscribe_msg_sent_event": "subscription_sent", "user_enter_tempsession": "session_enter",
    "location": "location_report", "templatesendjobfinish": "template_sent",
    "masssendjobfinish": "mass_send_finished",
}
WECOM_CHANGES = {
    "add_external_contact": "wecom_contact_added", "add_half_external_contact": "wecom_contact_added",
    "edit_external_contact": "wecom_contact_edited", "del_external_contact": "wecom_contact_deleted",
    "del_follow_user": "wecom_follow_user_deleted", "transfer_fail": "wecom_transfer_failed",
}


def _s(value: Any) -> str:
    return "" if value is None else str(value)


def _consents(data: dict[str, Any]) -> list[dict[str, str]]:
    """`List` is an object for one template and an array for several (JSON pushes); XML nests it."""
    holder = data.get("SubscribeMsgPopupEvent") or data.get("SubscribeMsgChangeEvent") \
        or data.get("SubscribeMsgSentEvent") or data
    items = holder.get("List") if isinstance(holder, dict) else None
    if items is None:
        return []
    if isinstance(items, dict):
        items = [items]
    out = []
    for it in items:
        if isinstance(it, dict):
            out.append({"template_id": _s(it.get("TemplateId")),
                        "status": _s(it.get("SubscribeStatusString") or it.get("ErrorStatus")),
                        "scene": _s(it.get("PopupScene"))})
    return out


def normalize(channel: str, data: dict[str, Any]) -> Normalized:
    msg_type = _s(data.get("MsgType")).lower()
    event = _s(data.get("Event"))
    event_l = event.lower()
    try:
        created = int(_s(data.get("CreateTime")) or 0)
    except ValueError:
        raise CallbackRejected(400, "CreateTime is not a number") from None
    occurred = datetime.fromtimestamp(created or time.time(), UTC)
    sender = _s(data.get("FromUserName"))
    details: dict[str, Any] = {}
    external_id = sender

    if channel == "wecom" and event_l == "change_external_contact":
        change = _s(data.get("ChangeType"))
        kind = WECOM_CHANGES.get(change, "wecom_contact_other")
        external_id = _s(data.get("ExternalUserID"))
        details = {"change_type": change, "user_id": _s(data.get("UserID")), "state": _s(data.get("State")),
                   "welcome_code": _s(data.get("WelcomeCode")), "source": _s(data.get("Source")),
                   "fail_reason": _s(data.get("FailReason"))}
        dedup = f"evt:{change}:{details['user_id']}:{external_id}:{created}"
    elif channel == "wecom" and event_l == "kf_msg_or_event":
        kind = "kf_notification"
        external_id = _s(data.get("OpenKfId"))
        details = {"open_kfid": external_id, "sync_token": _s(data.get("Token"))}
        dedup = f"evt:kf:{external_id}:{details['sync_token'] or created}"
    elif msg_type == "event":
        kind = OA_EVENTS.get(event_l, "event_other")
        key = _s(data.get("EventKey"))
        if kind == "follow":
            scene = key[len("qrscene_"):] if key.startswith("qrscene_") else ""
            details = {"scene": scene, "ticket": _s(data.get("Ticket"))}
        elif kind == "scan":
            details = {"scene": key, "ticket": _s(data.get("Ticket"))}
        elif kind == "menu_click":
            details = {"key": key}
        elif kind == "menu_view":
            details = {"url": key}
        elif kind in ("subscription_consent", "subscription_sent"):
            details = {"templates": _consents(data)}
        elif kind == "session_enter":
            details = {"session_from": _s(data.get("SessionFrom"))}
        elif kind == "location_report":
            details = {"latitude": _s(data.get("Latitude")), "longitude": _s(data.get("Longitude"))}
        elif kind in ("mass_send_finished", "template_sent"):
            details = {"msg_id": _s(data.get("MsgID") or data.get("MsgId")), "status": _s(data.get("Status"))[:64],
                       **{k.lower(): _s(data.get(k))[:16] for k in ("TotalCount", "FilterCount", "SentCount",
                                                                     "ErrorCount") if data.get(k) is not None}}
        dedup = f"evt:{sender}:{created}:{event}"
        if details.get("msg_id"):  # job results come from one system sender: their MsgID tells them apart
            dedup += f":{details['msg_id']}"
    elif msg_type in MESSAGE_TYPES:
        kind = "message"
        details = _message_details(msg_type, data)
        msg_id = _s(data.get("MsgId") or data.get("MsgID"))
        dedup = f"msg:{msg_id}" if msg_id else f"evt:{sender}:{created}:{msg_type}"
    else:
        kind = "other"
        msg_id = _s(data.get("MsgId"))
        dedup = f"msg:{msg_id}" if msg_id else f"evt:{sender}:{created}:{msg_type}:{event}"
    if not sender and channel != "wecom":
        raise CallbackRejected(400, "FromUserName missing")
    return Normalized(kind, msg_type, event, external_id, occurred, dedup[:255], details)


def _message_details(msg_type: str, data: dict[str, Any]) -> dict[str, Any]:
    pick = {
        "text": ("Content",), "image": ("PicUrl", "MediaId"), "voice": ("MediaId", "Format", "Recognition"),
        "video": ("MediaId", "ThumbMediaId"), "shortvideo": ("MediaId", "ThumbMediaId"),
        "location": ("Location_X", "Location_Y", "Scale", "Label"), "link": ("Title", "Description", "Url"),
        "miniprogrampage": ("Title", "AppId", "PagePath", "ThumbUrl"), "file": ("Title", "FileKey"),
    }[msg_type]
    return {k: _s(data.get(k)) for k in pick if data.get(k) is not None}


# --- passive replies ------------------------------------------------------------------------------------

def passive_text_reply(account: Account, data: dict[str, Any], text: str, opened: Opened,
                       nonce: str, timestamp: str) -> str:
    """A text reply to the user who wrote; encrypted when the request was."""
    reply = TextReply(source=_s(data.get("ToUserName")), target=_s(data.get("FromUserName")), content=text,
                      time=int(time.time())).render()
    if opened.encrypted:
        return str(account.crypto().encrypt_message(reply, nonce, timestamp or str(int(time.time()))))
    return reply


def normalize_kf(msg: dict[str, Any]) -> Normalized:
    """A message fetched with `kf/sync_msg`: origin 3 = the customer, 4 = a system event, 5 = a servicer
    writing from the WeCom client."""
    msgid = _s(msg.get("msgid"))
    origin = int(msg.get("origin") or 0)
    msgtype = _s(msg.get("msgtype"))
    try:
        at = datetime.fromtimestamp(int(msg.get("send_time") or time.time()), UTC)
    except (TypeError, ValueError):
        at = datetime.now(UTC)
    details: dict[str, Any] = {"open_kfid": _s(msg.get("open_kfid")), "origin": origin}
    external_id = _s(msg.get("external_userid"))
    if msgtype == "event":
        ev = msg.get("event") if isinstance(msg.get("event"), dict) else {}
        kind = "kf_event"
        external_id = external_id or _s(ev.get("external_userid"))
        details.update({"event_type": _s(ev.get("event_type")), "scene": _s(ev.get("scene")),
                        "scene_param": _s(ev.get("scene_param")), "welcome_code": _s(ev.get("welcome_code"))})
    else:
        kind = "message" if origin == 3 else "kf_servicer_message"
        body = msg.get(msgtype) if isinstance(msg.get(msgtype), dict) else {}
        if msgtype == "text":
            details["Content"] = _s(body.get("content"))
        else:
            details.update({k: _s(v) for k, v in body.items() if isinstance(v, (str, int))})
    return Normalized(kind, msgtype, _s((msg.get("event") or {}).get("event_type")) if msgtype == "event" else "",
                      external_id, at, f"kf:{msgid}"[:255], details)
