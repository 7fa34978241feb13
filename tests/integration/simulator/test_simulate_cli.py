"""`siyu simulate`, run for real: the command → the suite's simulator process → pushes to a receiver."""

from __future__ import annotations

import asyncio
import sys
from collections import Counter

import httpx

from tests.integration.simulator.conftest import AES_KEY, CORP_ID, OA_ID, SECRET, TOKEN
from tests.integration.simulator.receiver import AppKeys, Receiver, open_push


async def siyu(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    # Asynchronous, so the receiver in this event loop keeps answering while the command runs.
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "siyu", *args, env=env,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def register(base: str, kind: str, app_id: str, callback_url: str) -> None:
    async with httpx.AsyncClient(base_url=base) as http:
        r = await http.post("/_sim/apps", json={"kind": kind, "app_id": app_id, "secret": SECRET, "token": TOKEN,
                                                "aes_key": AES_KEY, "callback_url": callback_url})
        assert r.status_code == 200, r.text


async def test_scenario_drives_customers_through_the_simulator(
        simulator_base: str, subprocess_env: dict[str, str], receiver: Receiver) -> None:
    await register(simulator_base, "oa", OA_ID, receiver.url)
    code, out, err = await siyu(subprocess_env, "simulate", "scenario", "--app", OA_ID,
                                "--simulator", simulator_base,
                                "25 customers follow, 3 write \"你好, 在吗\", 2 click MENU_A, 2 scan spring")
    assert code == 0, out + err
    assert "25 follow: 25 delivered" in out and "3 write 你好, 在吗: 3 delivered" in out
    assert "/25" in out  # progress lines on the longer step
    assert "done: 32 delivered" in out
    events = Counter()
    for req in receiver.requests:
        fields, msg = open_push(AppKeys("oa", OA_ID, TOKEN, AES_KEY), req)
        events[fields.get("Event") or fields["MsgType"]] += 1
        if fields["MsgType"] == "text":
            assert msg.content == "你好, 在吗"
    assert events == {"subscribe": 25, "text": 3, "CLICK": 2, "SCAN": 2}


async def test_message_follows_first_when_needed_and_wecom_verbs(
        simulator_base: str, subprocess_env: dict[str, str], receiver: Receiver) -> None:
    await register(simulator_base, "oa", OA_ID, receiver.url)
    code, out, err = await siyu(subprocess_env, "simulate", "message", "--app", OA_ID, "--count", "2",
                                "--text", "hi", "--simulator", simulator_base, "--prefix", "m")
    assert code == 0, out + err
    assert [open_push(AppKeys("oa", OA_ID, TOKEN, AES_KEY), r)[0].get("Event", "text")
            for r in receiver.requests].count("subscribe") == 2
    assert len(receiver.requests) == 4

    await register(simulator_base, "wecom", CORP_ID, receiver.url)
    code, out, err = await siyu(subprocess_env, "simulate", "scenario", "--app", CORP_ID, "--simulator",
                                simulator_base, "2 customers follow, 1 write 客服在吗")
    assert code == 0, out + err
    changes = [open_push(AppKeys("wecom", CORP_ID, TOKEN, AES_KEY), r)[0] for r in receiver.requests[4:]]
    assert [c["Event"] for c in changes] == ["change_external_contact", "change_external_contact",
                                             "kf_msg_or_event"]


async def test_bad_scenarios_and_unreachable_simulators_are_explained(
        simulator_base: str, subprocess_env: dict[str, str]) -> None:
    code, out, err = await siyu(subprocess_env, "simulate", "scenario", "--app", OA_ID, "--simulator",
                                simulator_base, "200 customers dance")
    assert code == 2 and "cannot read '200 customers dance'" in err and "Traceback" not in err
    code, out, err = await siyu(subprocess_env, "simulate", "follow", "--app", OA_ID, "--simulator",
                                "http://127.0.0.1:9")
    assert code == 1 and "cannot reach the simulator" in err and "Traceback" not in err
    code, out, err = await siyu(subprocess_env, "simulate", "follow", "--app", "wxnotregistered",
                                "--simulator", simulator_base)
    assert code == 1 and "has no app wxnotregistered" in err
