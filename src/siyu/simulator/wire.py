"""WeChat's wire format for callbacks: the XML (or a Mini Program's JSON) of a push, signed and encrypted
with the app's Token and EncodingAESKey; delivery like WeChat (no answer within 5 s, a failed
connection or a 5xx: another attempt, 3 in all, the same request each time); passive replies; the
URL-verification handshake. Only loopback callback URLs are ever contacted (callers check).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any

import httpx
from wechatpy.crypto import WeChatCrypto
from wechatpy.work.crypto import WeChatCrypto as WorkCrypto

from siyu.simulator.state import SimApp

DEFAULT_TIMEOUT = 5.0
ATTEMPTS = 3
MAX_BACKEND_ANSWER = 64 * 1024  # the brand backend's answer to a reported login, kept in the push's answer


# --- WeChat's message formats ---------------------------------------------------------------------

def cdata(text: str) -> str:
    return "<![CDATA[" + text.replace("]]>", "]]]]><![CDATA[>") + "]]>"


def _node(tag: str, value: Any) -> str:
    if isinstance(value, dict):
        return f"<{tag}>" + "".join(_node(k, v) for k, v in value.items()) + f"</{tag}>"
    if isinstance(value, list):
        return "".join(_node(tag, v) for v in value)
    if isinstance(value, bool):
        return f"<{tag}>{int(value)}</{tag}>"
    if isinstance(value, int | float):
        return f"<{tag}>{value}</{tag}>"
    return f"<{tag}>{cdata(str(value))}</{tag}>"


def to_xml(message: dict[str, Any]) -> str:
    """WeChat's layout: text in CDATA, numbers bare, nested objects as elements, lists as repeats."""
    return "<xml>" + "".join(_node(k, v) for k, v in message.items()) + "</xml>"


def _element(el: ET.Element) -> Any:
    children = list(el)
    if not children:
        return el.text or ""
    out: dict[str, Any] = {}
    for child in children:
        value = _element(child)
        if child.tag in out:
            if not isinstance(out[child.tag], list):
                out[child.tag] = [out[child.tag]]
            out[child.tag].append(value)
        else:
            out[child.tag] = value
    return out


def xml_to_dict(text: str) -> dict[str, Any]:
    root = ET.fromstring(text)
    value = _element(root)
    return value if isinstance(value, dict) else {}


def json_shape(message: dict[str, Any]) -> dict[str, Any]:
    """A Mini Program's JSON push. The subscription popup carries `List` at the top, an object for one
    template and an array for several, with CreateTime and PopupScene as strings (WeChat's own sample)."""
    out = dict(message)
    popup = out.pop("SubscribeMsgPopupEvent", None)
    if popup is not None:
        items = [{k: str(v) for k, v in item.items()} for item in popup["List"]]
        out["CreateTime"] = str(out["CreateTime"])
        out["List"] = items[0] if len(items) == 1 else items
    return out


def plain_signature(token: str, timestamp: str, nonce: str) -> str:
    return hashlib.sha1("".join(sorted([token, timestamp, nonce])).encode()).hexdigest()


def _encrypt(crypto: WeChatCrypto | WorkCrypto, text: str, nonce: str, timestamp: str) -> tuple[str, str]:
    """(Encrypt, msg_signature) as WeChat computes them, via wechatpy's encrypt_message."""
    sealed = crypto.encrypt_message(text, nonce, timestamp)
    fields = xml_to_dict(sealed)
    return str(fields["Encrypt"]), str(fields["MsgSignature"])


def crypto_for(app: SimApp) -> WeChatCrypto | WorkCrypto:
    if app.kind == "wecom":
        return WorkCrypto(app.token, app.aes_key, app.app_id)
    return WeChatCrypto(app.token, app.aes_key, app.app_id)


@dataclass
class Outgoing:
    query: dict[str, str]
    body: str
    content_type: str


def _nonce() -> str:
    return str(1_000_000_000 + secrets.randbelow(9_000_000_000))


def seal(app: SimApp, message: dict[str, Any], now: float, openid: str = "") -> Outgoing:
    """The request WeChat sends for `message`, per the app's message mode and data format."""
    timestamp, nonce = str(int(now)), _nonce()
    if app.kind == "wecom":
        encrypt, signature = _encrypt(crypto_for(app), to_xml(message), nonce, timestamp)
        envelope = {"ToUserName": app.app_id, "AgentID": app.agent_id, "Encrypt": encrypt}
        return Outgoing({"msg_signature": signature, "timestamp": timestamp, "nonce": nonce}, to_xml(envelope),
                        "text/xml")
    as_json = app.kind == "mp" and app.push_format == "json"
    shaped = json_shape(message) if as_json else message
    text = json.dumps(shaped, ensure_ascii=False) if as_json else to_xml(message)
    query = {"signature": plain_signature(app.token, timestamp, nonce), "timestamp": timestamp, "nonce": nonce,
             "openid": openid}
    content_type = "application/json" if as_json else "text/xml"
    if app.message_mode == "plain":
        return Outgoing(query, text, content_type)
    encrypt, msg_signature = _encrypt(crypto_for(app), text, nonce, timestamp)
    query.update({"encrypt_type": "aes", "msg_signature": msg_signature})
    if app.message_mode == "safe":
        outer: dict[str, Any] = {"ToUserName": app.original_id, "Encrypt": encrypt}
    else:  # compatible: the plaintext fields and the ciphertext
        outer = {**shaped, "Encrypt": encrypt}
    body = json.dumps(outer, ensure_ascii=False) if as_json else to_xml(outer)
    return Outgoing(query, body, content_type)


# --- delivery -------------------------------------------------------------------------------------

def _client() -> httpx.AsyncClient:
    # trust_env=False: a proxy from the environment must never carry loopback pushes elsewhere.
    return httpx.AsyncClient(follow_redirects=False, trust_env=False)


async def deliver(url: str, out: Outgoing, timeout: float, attempts: int = ATTEMPTS) -> dict[str, Any]:
    """POST like WeChat: a fresh try when no answer comes in `timeout` s, the connection fails or the
    answer is a 5xx; `attempts` in all, each with the same query and body."""
    log: list[dict[str, Any]] = []
    answer: httpx.Response | None = None
    started = time.monotonic()
    async with _client() as http:
        for _ in range(attempts):
            t0 = time.monotonic()
            entry: dict[str, Any] = {"status": None, "error": None}
            try:
                resp = await asyncio.wait_for(
                    http.post(url, params=out.query, content=out.body.encode(),
                              headers={"Content-Type": out.content_type, "User-Agent": "Mozilla/4.0"},
                              timeout=timeout + 1),
                    timeout)
            except TimeoutError:
                entry["error"] = "timeout"
            except httpx.HTTPError as exc:
                entry["error"] = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            else:
                entry["status"] = resp.status_code
                if resp.status_code >= 500:
                    entry["error"] = f"HTTP {resp.status_code}"
                else:
                    answer = resp
            entry["elapsed_ms"] = round((time.monotonic() - t0) * 1000)
            log.append(entry)
            if answer is not None:
                break
    result: dict[str, Any] = {"attempts": len(log), "status_codes": [e["status"] for e in log],
                              "attempt_log": log, "elapsed_ms": round((time.monotonic() - started) * 1000),
                              "answer": None, "answer_status": None}
    if answer is not None:
        result["answer"] = answer.text
        result["answer_status"] = answer.status_code
    return result


async def report_login(url: str, api_key: str, code: str, timeout: float) -> dict[str, Any]:
    """The Mini Program hands its wx.login code to the brand's backend, which the simulator plays: the
    backend reports the login to `url` as `POST {"code": …}` with its API key (`Authorization: Bearer`),
    once, and whoever answers exchanges the code through sns/jscode2session."""
    started = time.monotonic()
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    outcome: dict[str, Any] = {"url": url, "status": None, "answer": None, "error": None}
    try:
        async with _client() as http:
            resp = await asyncio.wait_for(http.post(url, json={"code": code}, headers=headers, timeout=timeout + 1),
                                          timeout)
    except TimeoutError:
        outcome["error"] = "timeout"
    except httpx.HTTPError as exc:
        outcome["error"] = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    else:
        outcome["status"] = resp.status_code
        body = resp.content[:MAX_BACKEND_ANSWER]
        try:
            outcome["answer"] = json.loads(body) if len(resp.content) <= MAX_BACKEND_ANSWER else None
        except ValueError:
            outcome["answer"] = body.decode(errors="replace")
        if not 200 <= resp.status_code < 300:
            outcome["error"] = f"HTTP {resp.status_code}"
    outcome["elapsed_ms"] = round((time.monotonic() - started) * 1000)
    return outcome


def open_reply(app: SimApp, answer: str) -> tuple[bool, dict[str, Any] | None, str | None]:
    """(acknowledged, passive reply, problem). "success" and "" acknowledge; an XML (or MP JSON) reply
    acknowledges too and is decrypted when encrypted; anything else is not an acknowledgement."""
    text = answer.strip()
    if text in ("", "success"):
        return True, None, None
    try:
        if text.startswith("<"):
            raw: dict[str, Any] = xml_to_dict(text)
        elif text.startswith("{"):
            parsed = json.loads(text)
            raw = parsed if isinstance(parsed, dict) else {}
        else:
            return False, None, "the answer is neither success, empty nor a reply"
    except (ET.ParseError, ValueError):
        return False, None, "the answer is not well-formed XML or JSON"
    if "Encrypt" in raw and "MsgType" not in raw:
        if app.message_mode == "plain" and app.kind != "wecom":
            return True, None, "an encrypted reply from an app in plain mode"
        try:
            plain = crypto_for(app).decrypt_message(
                {"Encrypt": raw["Encrypt"]}, str(raw.get("MsgSignature", "")), str(raw.get("TimeStamp", "")),
                str(raw.get("Nonce", "")))
        except Exception as exc:  # wechatpy raises several kinds
            return True, None, f"the encrypted reply does not verify or decrypt ({type(exc).__name__})"
        try:
            reply = json.loads(plain) if plain.lstrip().startswith("{") else xml_to_dict(plain)
        except (ET.ParseError, ValueError):
            return True, None, "the decrypted reply is not well-formed"
        return True, reply, None
    if "MsgType" not in raw:
        return False, None, "the answer is not a passive reply"
    problem = "a plaintext reply from an app in safe mode" if app.message_mode == "safe" else None
    return True, raw, problem


async def verify(app: SimApp, now: float, timeout: float) -> dict[str, Any]:
    """WeChat's URL check: OA/MP send signature + echostr and expect echostr back; WeCom sends an
    encrypted echostr and expects its plaintext within 1 s."""
    timestamp, nonce = str(int(now)), _nonce()
    if app.kind == "wecom":
        expected = str(secrets.randbelow(10**19))
        echostr, signature = _encrypt(crypto_for(app), expected, nonce, timestamp)
        query = {"msg_signature": signature, "timestamp": timestamp, "nonce": nonce, "echostr": echostr}
        deadline = 1.0
    else:
        expected = str(secrets.randbelow(10**19))
        query = {"signature": plain_signature(app.token, timestamp, nonce), "timestamp": timestamp,
                 "nonce": nonce, "echostr": expected}
        deadline = 5.0
    result: dict[str, Any] = {"app_id": app.app_id, "url": app.callback_url, "query": query, "expected": expected,
                              "passed": False, "status": None, "answer": None, "error": None,
                              "deadline_ms": int(deadline * 1000)}
    t0 = time.monotonic()
    async with _client() as http:
        try:
            resp = await asyncio.wait_for(http.get(app.callback_url, params=query, timeout=timeout + 1), timeout)
        except TimeoutError:
            result["error"] = "timeout"
        except httpx.HTTPError as exc:
            result["error"] = type(exc).__name__
        else:
            result["status"], result["answer"] = resp.status_code, resp.text
    elapsed = (time.monotonic() - t0) * 1000
    result["elapsed_ms"] = round(elapsed)
    result["passed"] = (result["status"] == 200 and result["answer"] == expected and elapsed <= deadline * 1000)
    return result
