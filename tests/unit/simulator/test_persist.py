"""The simulator's memory on disk: what a snapshot holds comes back the same after a restart (people,
followers with their reply windows and consents, WeCom contacts and their reps, 微信客服 messages, tokens,
records, the clock); injected faults do not; the parts form a registry a new piece of state joins; a file
that cannot be read is set aside, never silently overwritten."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from siyu.simulator import persist, rules
from siyu.simulator.state import FollowInfo, QrCode, SimApp, State

T0 = 1_700_000_000.0


def populated() -> State:
    sim = State()
    sim.clock.offset = 3600.0
    oa = sim.apps["wxoa"] = SimApp(kind="oa", app_id="wxoa", secret="s" * 32, token="Tok", open_platform="brand",
                                   callback_url="http://127.0.0.1:9/wechat/demo/oa", faults=[45009, -1],
                                   latency_ms=250)
    alice = sim.member(oa, "alice")
    sim.follow(oa, alice, qr="spring")
    alice.window.open("message", T0, rules.MESSAGE_WINDOW)
    alice.window.consume(T0 + 1, 45015, 45047)
    alice.consents["TPL_ONE"] += 2
    alice.mass_by_month["2026-12"] = 3
    oa.qrcodes["gQticket"] = QrCode(ticket="gQticket", scene="spring", action_name="QR_STR_SCENE", created_at=T0,
                                    expires_at=T0 + 600)
    oa.client_msg_ids["cm-1"] = 1001
    mp = sim.apps["wxmp"] = SimApp(kind="mp", app_id="wxmp", secret="m" * 32, open_platform="brand",
                                   backend_login_url="http://127.0.0.1:9/api/v1/mp/login", backend_api_key="siyu_k")
    sim.member(mp, "alice").session_key = "sk"
    wc = sim.apps["wwcorp"] = SimApp(kind="wecom", app_id="wwcorp", secret="w" * 40, open_kfids=["wkA"],
                                     follow_users=["wangfang"])
    bob = sim.contact(wc, "bob")
    bob.follow["wangfang"] = FollowInfo(userid="wangfang", createtime=int(T0), state="fair",
                                        tags=[{"group_name": "VIP", "tag_name": "gold", "type": 1}])
    bob.kf_windows.setdefault("wkA", rules.Window()).open("message", T0, rules.KF_WINDOW)
    wc.kf_seq = 1
    wc.kf_log.append({"seq": 1, "msg": {"msgid": "m1", "text": {"content": "在吗？"}}})
    wc.kf_untokened_calls[28333333] = 4
    sim.issue_token(oa, "stable", force_new=False)
    sim.accept(oa, "cgi-bin/message/custom/send", alice.openid, {"touser": alice.openid, "text": {"content": "你好"}})
    sim.refuse("wwcorp", "cgi-bin/kf/send_msg", "wmX", {"touser": "wmX"}, 95018, "no window")
    return sim


def through_disk(sim: State) -> State:
    """A snapshot as the file holds it (JSON text), loaded into a new simulator."""
    again = State()
    persist.restore(again, json.loads(json.dumps(persist.snapshot(sim), ensure_ascii=False)))
    return again


def test_a_restored_simulator_remembers_its_customers() -> None:
    sim = populated()
    again = through_disk(sim)
    oa, wc, mp = again.apps["wxoa"], again.apps["wwcorp"], again.apps["wxmp"]
    alice = oa.members["alice"]
    assert alice == sim.apps["wxoa"].members["alice"]  # following, scene, window grants used, consents, mass counts
    assert isinstance(alice.consents, Counter) and alice.consents["TPL_ONE"] == 2
    assert isinstance(alice.window.grants["message"], rules.Grant) and alice.window.grants["message"].used == 1
    assert oa.member_by_openid(alice.openid) is alice  # the openid index is rebuilt
    assert oa.qrcodes == sim.apps["wxoa"].qrcodes and oa.client_msg_ids == {"cm-1": 1001}
    assert wc.contacts["bob"] == sim.apps["wwcorp"].contacts["bob"]
    assert wc.contact_by_external(wc.contacts["bob"].external_userid) is wc.contacts["bob"]
    assert wc.kf_log == sim.apps["wwcorp"].kf_log and wc.kf_seq == 1
    assert wc.kf_untokened_calls == {28333333: 4}  # integer keys survive JSON
    assert (mp.backend_login_url, mp.backend_api_key) == ("http://127.0.0.1:9/api/v1/mp/login", "siyu_k")
    assert again.people.keys() == {"alice", "bob"}
    assert again.tokens == sim.tokens and oa.token_slots == sim.apps["wxoa"].token_slots
    assert again.messages == sim.messages and again.refusals == sim.refusals
    assert again.clock.offset == 3600.0
    # Ids go on from where they were: no record id or msgid is handed out twice.
    assert again._record_id == sim._record_id and again.next_msgid() > sim._msgid


def test_injected_faults_are_behaviour_for_one_run_never_saved() -> None:
    again = through_disk(populated())
    assert again.apps["wxoa"].faults == [] and again.apps["wxoa"].latency_ms == 0
    assert again.apps["wxoa"].callback_url == "http://127.0.0.1:9/wechat/demo/oa"


def test_the_parts_are_a_registry_a_new_piece_of_state_joins(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a later piece of the simulator (say, WeChat Pay's orders) needs to do to be saved too."""
    orders: dict[str, Any] = {"saved": [], "loaded": None}
    monkeypatch.setitem(persist.PARTS, "pay", persist.Part(lambda sim: {"orders": ["o1"]},
                                                           lambda sim, data: orders.update(loaded=data)))
    sim = populated()
    saved = json.loads(json.dumps(persist.snapshot(sim)))
    assert saved["parts"]["pay"] == {"orders": ["o1"]}
    persist.restore(State(), saved)
    assert orders["loaded"] == {"orders": ["o1"]}
    # A file written before the part existed loads; the part stays empty.
    del saved["parts"]["pay"]
    orders["loaded"] = None
    persist.restore(State(), saved)
    assert orders["loaded"] is None


def test_saved_data_from_an_older_or_newer_simulator_loads() -> None:
    """Fields a dataclass no longer has are dropped; new fields take their defaults."""
    saved = json.loads(json.dumps(persist.snapshot(populated())))
    app = next(a for a in saved["parts"]["apps"] if a["app_id"] == "wxoa")
    app["members"]["alice"]["a_field_from_the_future"] = 1
    del app["members"]["alice"]["remark"]
    again = State()
    persist.restore(again, saved)
    assert again.apps["wxoa"].members["alice"].remark == ""


def test_an_unreadable_file_is_set_aside_and_the_simulator_starts_empty(tmp_path: Path) -> None:
    (tmp_path / persist.STATE_FILE).write_text('{"format": 1, "parts": {"apps": [{"kind": "oa"}]}}')
    sim = State()
    outcome = persist.Saver(sim, tmp_path).load()
    assert "could not be read" in outcome
    assert sim.apps == {} and not (tmp_path / persist.STATE_FILE).exists()
    assert len(list(tmp_path.glob("state.json.unreadable-*"))) == 1
    (tmp_path / persist.STATE_FILE).write_text('{"format": 99, "parts": {}}')
    assert "could not be read" in persist.Saver(State(), tmp_path).load()
    assert persist.Saver(State(), tmp_path / "nothing-here").load() == "no saved state"


async def test_a_burst_of_changes_is_one_atomic_private_write(tmp_path: Path) -> None:
    sim = populated()
    saver = persist.Saver(sim, tmp_path / "sim", delay=0.05)
    writes: list[int] = []
    original = saver._write
    saver._write = lambda data: (writes.append(1), original(data))[1]  # type: ignore[method-assign]
    for _ in range(20):
        saver.touch()
    await asyncio.sleep(0.3)
    assert len(writes) == 1
    path = tmp_path / "sim" / persist.STATE_FILE
    assert path.stat().st_mode & 0o777 == 0o600  # it holds the apps' secrets
    assert [p.name for p in path.parent.iterdir()] == [persist.STATE_FILE]  # no temporary file left behind
    again = State()
    assert "restored 3 apps" in persist.Saver(again, tmp_path / "sim").load()
    await saver.flush()  # nothing changed since: no write
    assert len(writes) == 1
    sim.member(sim.apps["wxoa"], "carol")
    saver.touch()
    await saver.flush()  # stopping writes at once what is pending
    assert len(writes) == 2
    assert "carol" in json.loads(path.read_text())["parts"]["apps"][0]["members"]


def test_the_address_file_names_a_live_simulator_only(tmp_path: Path) -> None:
    path = persist.announce(tmp_path, "0.0.0.0", 8911)  # noqa: S104
    assert persist.announced_url(tmp_path) == "http://127.0.0.1:8911"
    assert path.stat().st_mode & 0o777 == 0o600
    path.write_text(json.dumps({"url": "http://127.0.0.1:8912", "pid": 2**22 + 12345}))  # no such process
    assert persist.announced_url(tmp_path) is None
    persist.announce(tmp_path, "127.0.0.1", 8913)
    persist.retract(tmp_path)
    assert not path.exists() and persist.announced_url(tmp_path) is None
