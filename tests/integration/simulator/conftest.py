"""A fresh in-process simulator per test (httpx over ASGI, real HTTP for its pushes) and a real loopback
receiver for the pushes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from siyu.simulator.app import create_simulator
from tests.integration.simulator.receiver import Receiver

OA_ID, MP_ID, CORP_ID = "wx0a0000000000a001", "wx0b0000000000b002", "ww0c0000000000c003"
SECRET = "simSecret0123456789abcdef0123456"
TOKEN = "SimTestToken2026"
AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"


class Sim:
    """The simulator's two sides, spoken over HTTP."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http
        self._tokens: dict[str, str] = {}

    async def register(self, kind: str, app_id: str, **extra: Any) -> dict[str, Any]:
        body = {"kind": kind, "app_id": app_id, "secret": SECRET, "token": TOKEN, "aes_key": AES_KEY, **extra}
        r = await self.http.post("/_sim/apps", json=body)
        assert r.status_code == 200, r.text
        return dict(r.json())

    async def token(self, app_id: str, fresh: bool = False) -> str:
        if fresh or app_id not in self._tokens:
            if app_id.startswith("ww"):
                r = await self.http.get("/wecom-api/cgi-bin/gettoken", params={"corpid": app_id, "corpsecret": SECRET})
            else:
                r = await self.http.post("/wechat-api/cgi-bin/stable_token", json={
                    "grant_type": "client_credential", "appid": app_id, "secret": SECRET})
            self._tokens[app_id] = r.json()["access_token"]
        return self._tokens[app_id]

    async def call(self, app_id: str, path: str, body: dict[str, Any] | None = None,
                   **query: Any) -> dict[str, Any]:
        root = "/wecom-api" if app_id.startswith("ww") else "/wechat-api"
        params = {"access_token": await self.token(app_id), **query}
        if body is None:
            r = await self.http.get(f"{root}/{path}", params=params)
        else:
            r = await self.http.post(f"{root}/{path}", params=params, json=body)
        assert r.status_code == 200, r.text
        return dict(r.json())

    async def push(self, app_id: str, person: str, action: str, expect: int = 200, **fields: Any) -> dict[str, Any]:
        r = await self.http.post("/_sim/push", json={"app_id": app_id, "person": person, "action": action, **fields})
        assert r.status_code == expect, r.text
        return dict(r.json())

    async def advance(self, seconds: float, keep_tokens: bool = False) -> None:
        """Move WeChat's clock; afterwards fetch fresh access tokens (old ones may have expired)."""
        r = await self.http.post("/_sim/clock", json={"advance_seconds": seconds})
        assert r.status_code == 200, r.text
        if not keep_tokens:
            self._tokens.clear()

    async def get(self, path: str, **params: Any) -> Any:
        r = await self.http.get(path, params=params)
        assert r.status_code == 200, r.text
        return r.json()

    async def text(self, app_id: str, openid: str, content: str = "hi") -> int:
        """A customer-service text message; the errcode WeChat answered."""
        answer = await self.call(app_id, "cgi-bin/message/custom/send",
                                 {"touser": openid, "msgtype": "text", "text": {"content": content}})
        return int(answer["errcode"])


@pytest.fixture
async def simc() -> AsyncIterator[Sim]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_simulator()), base_url="http://sim",
                                 timeout=30) as http:
        yield Sim(http)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    await r.start()
    yield r
    await r.stop()
