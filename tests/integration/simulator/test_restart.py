"""The simulator run for real with a state directory: stopped and started again (or killed), it still knows
its customers, so sends to them succeed; it tells `siyu simulate` where it listens; re-registering an app
with `keep_state` keeps its people. And the Mini Program backend it plays reports each login."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.simulator.conftest import CORP_ID, MP_ID, OA_ID, SECRET, Sim
from tests.integration.simulator.receiver import Received, Receiver
from tests.integration.simulator.test_simulate_cli import siyu


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class SimulatorProcess:
    """`siyu simulator --state-dir …` in its own process group (so a SIGKILL takes granian's worker too)."""

    def __init__(self, state_dir: Path, env: dict[str, str]) -> None:
        self.state_dir, self.env, self.port = state_dir, env, free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[Any] | None = None

    def start(self) -> None:
        from siyu.core.processes import wait_http

        self.proc = subprocess.Popen(
            [sys.executable, "-m", "siyu", "simulator", "--port", str(self.port), "--state-dir", str(self.state_dir)],
            env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        assert wait_http(f"{self.base}/_sim/health", 30, [self.proc]), f"exit code {self.proc.poll()}"

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(timeout=20)
        self.proc = None


@pytest.fixture
def simulator_process(tmp_path: Path, subprocess_env: dict[str, str]) -> Iterator[SimulatorProcess]:
    sp = SimulatorProcess(tmp_path / "data" / "simulator", subprocess_env)
    try:
        yield sp
    finally:
        sp.stop(signal.SIGKILL)


async def post(base: str, path: str, body: dict[str, Any], **params: Any) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=base, trust_env=False, timeout=30) as http:
        r = await http.post(path, json=body, params=params)
    assert r.status_code == 200, r.text
    return dict(r.json())


async def get(base: str, path: str, **params: Any) -> Any:
    async with httpx.AsyncClient(base_url=base, trust_env=False, timeout=30) as http:
        r = await http.get(path, params=params)
    assert r.status_code == 200, r.text
    return r.json()


async def test_a_restarted_simulator_still_knows_its_customers(simulator_process: SimulatorProcess) -> None:
    sp = simulator_process
    sp.start()
    assert json.loads((sp.state_dir / "simulator.json").read_text())["url"] == sp.base
    await post(sp.base, "/_sim/apps", {"kind": "oa", "app_id": OA_ID, "secret": SECRET, "open_platform": "brand"})
    await post(sp.base, "/_sim/apps", {"kind": "wecom", "app_id": CORP_ID, "secret": SECRET,
                                       "follow_users": ["wangfang"]})
    alice = await post(sp.base, "/_sim/push", {"app_id": OA_ID, "person": "alice", "action": "follow"})
    await post(sp.base, "/_sim/push", {"app_id": OA_ID, "person": "alice", "action": "text", "text": "你好"})
    bob = await post(sp.base, "/_sim/push", {"app_id": CORP_ID, "person": "bob", "action": "add_contact"})
    kf = await post(sp.base, "/_sim/push", {"app_id": CORP_ID, "person": "bob", "action": "kf_text", "text": "在吗？"})
    oa_token = (await post(sp.base, "/wechat-api/cgi-bin/stable_token", {
        "grant_type": "client_credential", "appid": OA_ID, "secret": SECRET}))["access_token"]
    wecom_token = (await get(sp.base, "/wecom-api/cgi-bin/gettoken", corpid=CORP_ID, corpsecret=SECRET))["access_token"]
    sp.stop()  # SIGTERM, as `make run` stops it
    assert not (sp.state_dir / "simulator.json").exists()

    sp.start()
    # The tokens Siyu cached still work; the customers and their reply windows are there.
    answer = await post(sp.base, "/wechat-api/cgi-bin/message/custom/send", {
        "touser": alice["openid"], "msgtype": "text", "text": {"content": "您好！"}}, access_token=oa_token)
    assert answer["errcode"] == 0, answer
    contact = await get(sp.base, "/wecom-api/cgi-bin/externalcontact/get", access_token=wecom_token,
                        external_userid=bob["external_userid"])
    assert contact["errcode"] == 0 and [f["userid"] for f in contact["follow_user"]] == ["wangfang"], contact
    answer = await post(sp.base, "/wecom-api/cgi-bin/kf/send_msg", {
        "touser": bob["external_userid"], "open_kfid": kf["open_kfid"], "msgtype": "text",
        "text": {"content": "在的"}}, access_token=wecom_token)
    assert answer["errcode"] == 0, answer
    synced = await post(sp.base, "/wecom-api/cgi-bin/kf/sync_msg", {"token": kf["kf_token"]},
                        access_token=wecom_token)
    assert [m["text"]["content"] for m in synced["msg_list"]] == ["在吗？"]
    sent = await get(sp.base, "/_sim/messages")
    assert [m["id"] for m in sent] == [1, 2]  # record ids go on, one list across the restart

    # Killed without warning: what changed a moment before was already on disk.
    carol = await post(sp.base, "/_sim/push", {"app_id": OA_ID, "person": "carol", "action": "follow"})
    await asyncio.sleep(1.5)
    sp.stop(signal.SIGKILL)
    sp.start()
    people = await get(sp.base, "/_sim/people", app_id=OA_ID)
    assert {p["person"]: p["following"] for p in people} == {"alice": True, "carol": True}
    answer = await post(sp.base, "/wechat-api/cgi-bin/message/custom/send", {
        "touser": carol["openid"], "msgtype": "text", "text": {"content": "欢迎"}}, access_token=oa_token)
    assert answer["errcode"] == 0, answer


async def test_siyu_simulate_finds_the_running_simulator_by_itself(
        simulator_process: SimulatorProcess, subprocess_env: dict[str, str], tmp_path: Path) -> None:
    sp = simulator_process
    sp.start()
    await post(sp.base, "/_sim/apps", {"kind": "oa", "app_id": OA_ID, "secret": SECRET})
    # No --simulator, and a port in the environment where nothing listens: the address file wins.
    env = {**subprocess_env, "SIYU_DATA_DIR": str(tmp_path / "data"), "SIYU_SIMULATOR_PORT": "9"}
    code, out, err = await siyu(env, "simulate", "follow", "--app", OA_ID, "--count", "3")
    assert code == 0, out + err
    assert f"simulating on {sp.base} for {OA_ID}" in out and "3 applied (no push)" in out
    assert len(await get(sp.base, "/_sim/people", app_id=OA_ID)) == 3
    sp.stop()  # gone: back to the port in the environment, and a message that says so
    code, out, err = await siyu(env, "simulate", "follow", "--app", OA_ID)
    assert code == 1 and "cannot reach the simulator at http://127.0.0.1:9" in err


async def test_registering_again_with_keep_state_keeps_the_people(simc: Sim) -> None:
    await simc.register("oa", OA_ID, callback_url="http://127.0.0.1:9/old")
    alice = await simc.push(OA_ID, "alice", "follow")
    token = await simc.token(OA_ID)
    app = await simc.register("oa", OA_ID, callback_url="http://127.0.0.1:9/new", keep_state=True)
    assert app["callback_url"] == "http://127.0.0.1:9/new"
    assert [p["person"] for p in await simc.get("/_sim/people", app_id=OA_ID)] == ["alice"]
    assert await simc.text(OA_ID, alice["openid"]) == 0  # same token, same window
    assert simc._tokens[OA_ID] == token
    await simc.register("oa", OA_ID)  # without keep_state: a new WeChat account
    assert await simc.get("/_sim/people", app_id=OA_ID) == []


async def test_the_simulated_mini_program_backend_reports_each_login(simc: Sim, receiver: Receiver) -> None:
    async def backend(req: Received, n: int) -> tuple[int, str]:
        return (200, json.dumps({"contact_id": 7})) if n == 1 else (401, '{"error": "bad key"}')

    receiver.answer = backend
    login_url = f"http://127.0.0.1:{receiver.port}/api/v1/mp/login"
    app = await simc.register("mp", MP_ID, open_platform="brand",
                              backend={"login_url": login_url, "api_key": "siyu_0123_secret"})
    assert app["backend"] == {"login_url": login_url, "api_key_set": True}
    assert "siyu_0123_secret" not in json.dumps(await simc.get(f"/_sim/apps/{MP_ID}"))
    pushed = await simc.push(MP_ID, "alice", "mp_login")
    assert pushed["delivered"] and pushed["attempts"] == 1
    assert pushed["backend"]["status"] == 200 and pushed["backend"]["answer"] == {"contact_id": 7}
    req = receiver.requests[0]
    assert (req.method, req.path) == ("POST", "/api/v1/mp/login")
    assert req.headers["authorization"] == "Bearer siyu_0123_secret"
    assert json.loads(req.body) == {"code": pushed["code"]}
    # The code the backend got is a live wx.login code: exchanging it answers alice's openid and unionid.
    r = await simc.http.get("/wechat-api/sns/jscode2session", params={
        "appid": MP_ID, "secret": SECRET, "js_code": pushed["code"], "grant_type": "authorization_code"})
    assert r.json()["openid"] == pushed["openid"] and r.json()["unionid"] == pushed["unionid"]
    # A backend that refuses: the login happened in WeChat, the report did not go through, and it says why.
    refused = await simc.push(MP_ID, "bob", "mp_login")
    assert refused["delivered"] is False and refused["backend"]["error"] == "HTTP 401" and refused["code"]


async def test_a_backend_is_a_loopback_url_for_a_mini_program(simc: Sim) -> None:
    for kind, app_id, backend in (("mp", MP_ID, {"login_url": "https://example.com/login", "api_key": "k"}),
                                  ("mp", MP_ID, "http://127.0.0.1:9/login"),
                                  ("oa", OA_ID, {"login_url": "http://127.0.0.1:9/login", "api_key": "k"}),
                                  ("mp", MP_ID, {"login_url": "http://127.0.0.1:9/login", "api_key": "a\nb"})):
        r = await simc.http.post("/_sim/apps", json={"kind": kind, "app_id": app_id, "secret": SECRET,
                                                     "backend": backend})
        assert r.status_code == 400 and "backend" in r.json()["error"], r.text
