"""A real HTTP server on a loopback port that plays the CRM's callback endpoint: it records every request
and answers what the test tells it to. `open_push` checks a push the way a WeChat developer must (wechatpy's
signature check and decryption, wechatpy's parsers), which proves the pushes are WeChat's format."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import xmltodict
from wechatpy import parse_message
from wechatpy.crypto import WeChatCrypto
from wechatpy.utils import check_signature
from wechatpy.work import parse_message as parse_work_message
from wechatpy.work.crypto import WeChatCrypto as WorkCrypto


@dataclass
class Received:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def text(self) -> str:
        return self.body.decode()


Answer = Callable[[Received, int], Awaitable[tuple[int, str]]]


async def say_success(req: Received, n: int) -> tuple[int, str]:
    return 200, "success"


class Receiver:
    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.answer: Answer = say_success
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/wechat/acme/oa"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def wait_for(self, n: int, seconds: float = 10) -> None:
        deadline = time.monotonic() + seconds
        while len(self.requests) < n:
            assert time.monotonic() < deadline, f"{len(self.requests)} of {n} requests arrived"
            await asyncio.sleep(0.02)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            headers = {}
            for line in lines[1:]:
                if line:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            parts = urlsplit(target)
            req = Received(method, parts.path, dict(parse_qsl(parts.query, keep_blank_values=True)), headers, body,
                           time.monotonic())
            self.requests.append(req)
            status, text = await self.answer(req, len(self.requests))
            data = text.encode()
            writer.write(f"HTTP/1.1 {status} X\r\nContent-Type: text/plain; charset=utf-8\r\n"
                         f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode() + data)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()


@dataclass
class AppKeys:
    kind: str
    app_id: str
    token: str
    aes_key: str = ""
    mode: str = "safe"
    push_format: str = "xml"


def open_push(keys: AppKeys, req: Received) -> tuple[dict[str, Any], Any]:
    """(the plaintext fields as a dict, wechatpy's parsed message or None for JSON) — or an assertion
    error when the push is not exactly what WeChat sends."""
    q = req.query
    assert req.method == "POST"
    if keys.kind == "wecom":
        assert set(q) == {"msg_signature", "timestamp", "nonce"}, q
        envelope = xmltodict.parse(req.text)["xml"]
        assert set(envelope) == {"ToUserName", "AgentID", "Encrypt"}, envelope
        assert envelope["ToUserName"] == keys.app_id
        plain = WorkCrypto(keys.token, keys.aes_key, keys.app_id).decrypt_message(
            req.text, q["msg_signature"], q["timestamp"], q["nonce"])
        return xmltodict.parse(plain)["xml"], parse_work_message(plain)
    assert check_signature(keys.token, q["signature"], q["timestamp"], q["nonce"]) is None
    assert q["openid"].startswith("o") and len(q["openid"]) == 28
    as_json = keys.push_format == "json"
    outer: dict[str, Any] = json.loads(req.text) if as_json else xmltodict.parse(req.text)["xml"]
    if keys.mode == "plain":
        assert set(q) == {"signature", "timestamp", "nonce", "openid"}, q
        assert "Encrypt" not in outer
        plain = req.text
    else:
        assert set(q) == {"signature", "timestamp", "nonce", "openid", "encrypt_type", "msg_signature"}, q
        assert q["encrypt_type"] == "aes"
        if keys.mode == "safe":
            assert set(outer) == {"ToUserName", "Encrypt"}, outer
        plain = WeChatCrypto(keys.token, keys.aes_key, keys.app_id).decrypt_message(
            {"Encrypt": outer["Encrypt"]}, q["msg_signature"], q["timestamp"], q["nonce"])
    if as_json:
        fields = json.loads(plain)
        if keys.mode == "compatible":
            assert {k: v for k, v in outer.items() if k != "Encrypt"} == fields
        return fields, None
    fields = xmltodict.parse(plain)["xml"]
    if keys.mode == "compatible":
        assert {k: v for k, v in outer.items() if k != "Encrypt"} == fields
    assert fields["FromUserName"] == q["openid"]
    return fields, parse_message(plain)
