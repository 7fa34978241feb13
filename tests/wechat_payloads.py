"""Builds callbacks the way WeChat does: XML (or MP JSON), signed and, in safe mode, AES-encrypted with
the account's Token and EncodingAESKey (through wechatpy's crypto, as WeChat's own SDK does)."""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from wechatpy.crypto import WeChatCrypto as MpCrypto
from wechatpy.work.crypto import WeChatCrypto as WorkCrypto


def xml_of(fields: dict[str, Any]) -> str:
    parts = []
    for k, v in fields.items():
        if isinstance(v, int):
            parts.append(f"<{k}>{v}</{k}>")
        elif isinstance(v, dict):
            parts.append(f"<{k}>{xml_of(v)[5:-6]}</{k}>")
        else:
            parts.append(f"<{k}><![CDATA[{v}]]></{k}>")
    return "<xml>" + "".join(parts) + "</xml>"


def sign(*parts: str) -> str:
    return hashlib.sha1("".join(sorted(parts)).encode()).hexdigest()


@dataclass
class Callback:
    path: str
    query: dict[str, str]
    body: bytes

    @property
    def url(self) -> str:
        return f"{self.path}?{urlencode(self.query)}"


@dataclass
class Sender:
    """One linked account, seen from WeChat's side."""

    slug: str
    channel: str  # oa | mp | wecom
    app_id: str
    token: str
    aes_key: str
    mode: str = "safe"  # plain | compatible | safe
    fmt: str = "xml"  # xml | json (MP)

    def callback(self, fields: dict[str, Any], timestamp: int | None = None, nonce: str | None = None,
                 app_id: str | None = None, raw: str | None = None) -> Callback:
        """`raw`: this exact plaintext instead of the one built from `fields` (hostile shapes)."""
        ts = str(timestamp if timestamp is not None else int(time.time()))
        nonce = nonce or str(secrets.randbelow(10**9))
        plain = json.dumps(fields, ensure_ascii=False) if self.fmt == "json" else xml_of(fields)
        if raw is not None:
            plain = raw
        path = f"/wechat/{self.slug}/{self.channel}"
        if self.mode == "plain" and self.channel != "wecom":
            return Callback(path, {"signature": sign(self.token, ts, nonce), "timestamp": ts, "nonce": nonce},
                            plain.encode())
        crypto_cls = WorkCrypto if self.channel == "wecom" else MpCrypto
        envelope = crypto_cls(self.token, self.aes_key, app_id or self.app_id).encrypt_message(plain, nonce, ts)
        encrypt = envelope.split("<Encrypt><![CDATA[")[1].split("]]></Encrypt>")[0]
        msg_signature = sign(self.token, ts, nonce, encrypt)
        if self.fmt == "json":
            body = json.dumps({"ToUserName": fields.get("ToUserName", ""), "Encrypt": encrypt}).encode()
        elif self.mode == "compatible":
            body = (plain[:-6] + f"<Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>").encode()
        else:
            to = fields.get("ToUserName", "")
            body = f"<xml><ToUserName><![CDATA[{to}]]></ToUserName><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>".encode()
        query = {"timestamp": ts, "nonce": nonce, "msg_signature": msg_signature}
        if self.channel != "wecom":
            query.update({"signature": sign(self.token, ts, nonce), "encrypt_type": "aes",
                          "openid": str(fields.get("FromUserName", ""))})
        return Callback(path, query, body)

    def decrypt_reply(self, body: str) -> str:
        """Open an encrypted passive reply as WeChat would."""
        crypto_cls = WorkCrypto if self.channel == "wecom" else MpCrypto
        sig = body.split("<MsgSignature><![CDATA[")[1].split("]]>")[0]
        ts = body.split("<TimeStamp>")[1].split("</TimeStamp>")[0]
        nonce = body.split("<Nonce><![CDATA[")[1].split("]]>")[0]
        return str(crypto_cls(self.token, self.aes_key, self.app_id).decrypt_message(body, sig, ts, nonce))


def text(openid: str, content: str, msg_id: int, to: str = "gh_0123456789ab", at: int | None = None) -> dict[str, Any]:
    return {"ToUserName": to, "FromUserName": openid, "CreateTime": at or int(time.time()), "MsgType": "text",
            "Content": content, "MsgId": msg_id}


def event(openid: str, name: str, to: str = "gh_0123456789ab", at: int | None = None, **extra: Any) -> dict[str, Any]:
    return {"ToUserName": to, "FromUserName": openid, "CreateTime": at or int(time.time()), "MsgType": "event",
            "Event": name, **extra}
