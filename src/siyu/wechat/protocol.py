"""WeChat's callback wire protocol, as pure functions: signatures, the encrypted envelope, safe parsing,
dedup keys, normalisation into Siyu's event kinds, and passive replies.

No I/O here, so the gateway and the tests use exactly the same code paths.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import Any
from xml.parsers import expat

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


# WeChat's pushes nest four levels at most and carry a few dozen fields; these bounds leave room and stop a
# hostile body early, whatever its size, before much is built from it.
MAX_DEPTH = 16
MAX_ELEMENTS = 2000


def _refuse_dtd_event(*_: Any) -> None:
    raise CallbackRejected(400, "XML with a DTD or entity declarations is refused")


def parse_xml(text: str) -> dict[str, Any]:
    """WeChat's XML as a dict of its fields (nested elements as dicts, repeated ones as lists).

    Built in one pass of expat with a frame per open element, so the work is linear in the body (repeats
    are appended, never copied) and stops at MAX_DEPTH levels or MAX_ELEMENTS elements. DTDs and entity
    declarations are refused as expat meets them; nothing is ever fetched."""
    _refuse_many_attributes(text)
    # frame: [tag, children (None while the element has none), text parts]
    stack: list[list[Any]] = [["", {}, []]]
    count = 0

    def start(tag: str, _attrs: Any) -> None:
        nonlocal count
        count += 1
        if count > MAX_ELEMENTS:
            raise CallbackRejected(400, f"XML with more than {MAX_ELEMENTS} elements is refused")
        if len(stack) > MAX_DEPTH:
            raise CallbackRejected(400, f"XML nested deeper than {MAX_DEPTH} levels is refused")
        parent = stack[-1]
        if parent[1] is None:
            parent[1] = {}
        stack.append([tag, None, []])

    def end(_tag: str) -> None:
        tag, children, parts = stack.pop()
        value = children if children is not None else ("".join(parts) if parts else None)
        siblings: dict[str, Any] = stack[-1][1]
        if tag in siblings:  # repeated elements become a list, as xmltodict does
            existing = siblings[tag]
            if isinstance(existing, list):  # a parsed value is otherwise a str, None or dict
                existing.append(value)
            else:
                siblings[tag] = [existing, value]
        else:
            siblings[tag] = value

    def chars(data: str) -> None:
        stack[-1][2].append(data)

    parser = expat.ParserCreate()
    parser.buffer_text = True
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = chars
    parser.StartDoctypeDeclHandler = _refuse_dtd_event
    parser.EntityDeclHandler = _refuse_dtd_event
    parser.ExternalEntityRefHandler = _refuse_dtd_event
    try:
        parser.Parse(text, True)
    except expat.ExpatError as exc:
        raise CallbackRejected(400, f"malformed XML: {expat.ErrorString(exc.code)} "
                               f"(line {exc.lineno}, column {exc.offset})") from None
    root = stack[0][1]
    if list(root) != ["xml"]:
        raise CallbackRejected(400, "malformed XML: the root element must be <xml>")
    value = root["xml"]
    return value if isinstance(value, dict) else {}


def _refuse_many_attributes(text: str) -> None:
    """WeChat's XML has no attributes, and expat spends ~0.1 s on a megabyte of them before any handler
    runs: past MAX_ELEMENTS `=` outside CDATA sections (where text is), the body is refused unparsed."""
    if text.count("=") <= MAX_ELEMENTS:
        return  # every real push
    if text.count("<![CDATA[") > MAX_ELEMENTS:
        raise CallbackRejected(400, f"XML with more than {MAX_ELEMENTS} elements is refused")
    outside = sum(part.rpartition("]]>")[2].count("=") for part in text.split("<![CDATA["))
    if outside > MAX_ELEMENTS:
        raise CallbackRejected(400, f"XML with more than {MAX_ELEMENTS} attributes is refused")


def _json_skeleton(text: str) -> str:
    """The text outside JSON strings. In valid JSON a backslash only occurs inside a string and always
    starts an escape, so after dropping escaped backslashes and escaped quotes every quote left is a
    string's edge (for invalid JSON the skeleton may be wrong, but then json.loads refuses it anyway)."""
    unescaped = text.replace("\\\\", "").replace('\\"', "")
    if unescaped.count('"') > 4 * MAX_ELEMENTS:
        raise CallbackRejected(400, f"JSON with more than {MAX_ELEMENTS} elements is refused")
    return "".join(unescaped.split('"')[0::2])


_NOT_BRACKETS = re.compile(r"[^\[\]{}]+")


def parse_json(text: str) -> dict[str, Any]:
    """A JSON object, refused (400) past MAX_ELEMENTS elements or MAX_DEPTH levels: both are counted on the
    text (linear, in C) before anything is built."""
    return _parse_json(text)[0]


def _parse_json(text: str) -> tuple[dict[str, Any], bool]:
    """The object, and whether characters PostgreSQL cannot store had to be replaced in it."""
    skeleton = _json_skeleton(text)
    containers = skeleton.count("{") + skeleton.count("[")
    if containers + skeleton.count(",") > MAX_ELEMENTS:
        raise CallbackRejected(400, f"JSON with more than {MAX_ELEMENTS} elements is refused")
    depth = deepest = 0
    for bracket in _NOT_BRACKETS.sub("", skeleton):
        depth += 1 if bracket in "[{" else -1
        deepest = max(deepest, depth)
    if deepest > MAX_DEPTH:
        raise CallbackRejected(400, f"JSON nested deeper than {MAX_DEPTH} levels is refused")
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        raise CallbackRejected(400, "malformed JSON") from None
    if not isinstance(data, dict):
        raise CallbackRejected(400, "malformed JSON: an object was expected")
    if not _UNSTORABLE_ESCAPE.search(text):
        return data, False
    clean = _replace_unstorable(data)
    return clean, clean != data


# Text PostgreSQL cannot store: NUL, and UTF-16 surrogates that pair with nothing. JSON can escape both
# (XML can carry neither). A customer's message with them is still a message: they become U+FFFD, and the
# gateway keeps the original text beside the fields.
_UNSTORABLE_ESCAPE = re.compile(r"\\u(?:0000|[dD][89a-fA-F][0-9a-fA-F]{2})")
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def replace_unstorable(value: Any) -> Any:
    """`value` (JSON-like) with NUL and unpaired surrogates replaced by U+FFFD, so PostgreSQL can store it."""
    return _replace_unstorable(value)


def _replace_unstorable(value: Any) -> Any:
    if isinstance(value, str):
        return _UNSTORABLE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {_replace_unstorable(k): _replace_unstorable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_replace_unstorable(v) for v in value]
    return value


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
        return plain.decode("utf-8") if isinstance(plain, bytes) else str(plain)
    except InvalidAppIdException:
        raise CallbackRejected(400, "the payload decrypts to another AppID/CorpID") from None
    except Exception as exc:  # bad base64, bad padding, wrong key, not UTF-8
        raise CallbackRejected(400, f"the payload does not decrypt with this account's key: {type(exc).__name__}") \
            from None


# --- the envelope of a POST ----------------------------------------------------------------------------

@dataclass
class Opened:
    text: str  # the plaintext message (XML or JSON)
    fmt: str  # xml | json
    encrypted: bool


# The ciphertext is base64; an encrypted push carries it as `<Encrypt><![CDATA[…]]></Encrypt>` (or without
# CDATA) in XML, `"Encrypt": "…"` in a Mini Program's JSON. Each pattern starts with a literal and its runs
# cannot overlap a following match, so a search is linear in the body.
_ENCRYPT_XML = re.compile(rb"<Encrypt>\s*(?:<!\[CDATA\[([A-Za-z0-9+/=]+)\]\]>|([A-Za-z0-9+/=]+))\s*</Encrypt>")
_ENCRYPT_JSON = re.compile(rb'"Encrypt"\s*:\s*"([A-Za-z0-9+/=]+)"')
MAX_ENCRYPT_CANDIDATES = 4


def _encrypt_candidates(body: bytes, fmt: str) -> list[str]:
    """The `Encrypt` values of an encrypted push, found without building anything from the body, last
    first: in compatible mode the plaintext fields come first, and a customer's text may look like one."""
    stripped = body.strip()
    if fmt == "json":
        if not (stripped.startswith(b"{") and stripped.endswith(b"}")):
            raise CallbackRejected(400, "malformed JSON: an object was expected")
        found = [m.group(1) for m in _ENCRYPT_JSON.finditer(stripped)]
    else:
        if not stripped.startswith((b"<xml", b"<?xml")) or not stripped.endswith(b"</xml>"):
            raise CallbackRejected(400, "malformed XML: the root element must be <xml>")
        found = [m.group(1) or m.group(2) for m in _ENCRYPT_XML.finditer(stripped)]
    if not found:
        raise CallbackRejected(400, "Encrypt missing from an encrypted-mode message")
    return [v.decode("ascii") for v in reversed(found[-MAX_ENCRYPT_CANDIDATES:])]


def _check_plain_signature(account: Account, query: dict[str, str]) -> None:
    signature = query.get("signature", "")
    if not signature or not _same(sha1_signature(account.token, query.get("timestamp", ""),
                                                 query.get("nonce", "")), signature):
        raise CallbackRejected(403, "bad signature")


def wants_encrypted(account: Account, query: dict[str, str]) -> bool:
    return account.channel == "wecom" or query.get("encrypt_type") == "aes" or account.mode == "safe"


def check_query_signature(account: Account, query: dict[str, str]) -> None:
    """What can be checked before the body is read: in plain mode the signature covers only the Token,
    timestamp and nonce, so an unsigned plain-mode request is refused here."""
    if not wants_encrypted(account, query):
        _check_plain_signature(account, query)
    elif account.mode == "plain" and account.channel != "wecom":
        raise CallbackRejected(400, "encrypted message for an account set to plain mode")


def open_envelope(account: Account, query: dict[str, str], body: bytes) -> Opened:
    """Verify, then decrypt a POSTed callback; nothing is parsed before its signature holds. Raises
    CallbackRejected with WeChat-appropriate statuses."""
    if len(body) > MAX_BODY:
        raise CallbackRejected(413, "body over 1 MiB")
    check_query_signature(account, query)
    fmt = "json" if body.lstrip()[:1] == b"{" else "xml"
    if not wants_encrypted(account, query):
        try:
            return Opened(body.decode("utf-8"), fmt, False)
        except UnicodeDecodeError:
            raise CallbackRejected(400, "body is not UTF-8") from None

    timestamp, nonce, signature = query.get("timestamp", ""), query.get("nonce", ""), query.get("msg_signature", "")
    for encrypt in _encrypt_candidates(body, fmt):
        if signature and _same(sha1_signature(account.token, timestamp, nonce, encrypt), signature):
            plain = _decrypt(account, encrypt)
            return Opened(plain, "json" if plain.lstrip().startswith("{") else "xml", True)
    raise CallbackRejected(403, "bad msg_signature")


def fields_of(opened: Opened) -> tuple[dict[str, Any], str | None]:
    """The message's fields (bounded parse), and its original text in base64 when characters PostgreSQL
    cannot store had to be replaced (None otherwise)."""
    if opened.fmt == "json":
        data, replaced = _parse_json(opened.text)
    else:
        data, replaced = parse_xml(opened.text), False
    original = base64.b64encode(opened.text.encode("utf-8", "surrogatepass")).decode() if replaced else None
    return {k: v for k, v in data.items() if k != "Encrypt"}, original


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


# The last second a datetime (and so the stored event) can hold: 9999-12-31T23:59:59Z.
MAX_CREATE_TIME = 253_402_300_799


def _create_time(value: Any) -> int:
    """Seconds since the epoch (0 when absent: the event is dated on arrival); 400 for anything else."""
    raw = _s(value).strip()
    if not raw:
        return 0
    if len(raw) > 20 or not raw.isascii() or not raw.isdigit():
        raise CallbackRejected(400, "CreateTime is not a non-negative whole number of seconds")
    created = int(raw)
    if created > MAX_CREATE_TIME:
        raise CallbackRejected(400, "CreateTime is past the year 9999")
    return created


def normalize(channel: str, data: dict[str, Any]) -> Normalized:
    msg_type = _s(data.get("MsgType")).lower()
    event = _s(data.get("Event"))
    event_l = event.lower()
    created = _create_time(data.get("CreateTime"))
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
    for name, value, limit in (("MsgType", msg_type, 32), ("Event", event, 64), ("FromUserName / ExternalUserID / OpenKfId", external_id, 128)):
        if len(value) > limit:  # no real push comes near; the stored event's columns would refuse it
            raise CallbackRejected(400, f"{name} longer than {limit} characters")
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


def _small_int(value: Any) -> int:
    raw = _s(value).strip()
    return int(raw) if raw.isascii() and raw.isdigit() and len(raw) < 10 else 0


def normalize_kf(msg: dict[str, Any]) -> Normalized:
    """A message fetched with `kf/sync_msg`: origin 3 = the customer, 4 = a system event, 5 = a servicer
    writing from the WeCom client."""
    msgid = _s(msg.get("msgid"))
    origin = _small_int(msg.get("origin"))
    msgtype = _s(msg.get("msgtype"))
    try:
        at = datetime.fromtimestamp(_create_time(msg.get("send_time")) or time.time(), UTC)
    except CallbackRejected:
        at = datetime.now(UTC)
    details: dict[str, Any] = {"open_kfid": _s(msg.get("open_kfid")), "origin": origin}
    external_id = _s(msg.get("external_userid"))
    event_type = ""
    if msgtype == "event":
        ev = msg.get("event") if isinstance(msg.get("event"), dict) else {}
        event_type = _s(ev.get("event_type"))
        kind = "kf_event"
        external_id = external_id or _s(ev.get("external_userid"))
        details.update({"event_type": event_type, "scene": _s(ev.get("scene")),
                        "scene_param": _s(ev.get("scene_param")), "welcome_code": _s(ev.get("welcome_code"))})
    else:
        kind = "message" if origin == 3 else "kf_servicer_message"
        body = msg.get(msgtype) if isinstance(msg.get(msgtype), dict) else {}
        if msgtype == "text":
            details["Content"] = _s(body.get("content"))
        else:
            details.update({k: _s(v) for k, v in body.items() if isinstance(v, (str, int))})
    return Normalized(kind, msgtype, event_type, external_id, at, f"kf:{msgid}"[:255], details)
