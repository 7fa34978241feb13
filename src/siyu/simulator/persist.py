"""The simulator's memory on disk, so a restarted simulator still knows its customers (without it, Siyu's
replies to them would answer 40003 / 40096 after a second `make run`).

With a state directory (`siyu simulator --state-dir DIR`, or SIYU_SIMULATOR_STATE_DIR) the simulator
restores `DIR/state.json` when it starts and writes it again shortly after each change (debounced,
atomically: a temporary file, fsync, rename; mode 0600, for it holds the apps' secrets) and when it stops.
Without one, everything stays in memory, as the test suite wants.

The file is a set of named parts, each with its own dump and load (`register_part`). A new piece of the
simulator's memory (say, WeChat Pay's orders) registers its part next to its state; a file written before
the part existed simply lacks it. Injected faults and latency are behaviour for one run, never saved.

`DIR/simulator.json` tells `siyu simulate` where the running simulator listens (`announce`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any, TypeVar

from siyu.simulator import rules
from siyu.simulator.state import (
    APP_MEMORY,
    APP_SETTINGS,
    AccessToken,
    Contact,
    FollowInfo,
    Member,
    OneTimeCode,
    Person,
    QrCode,
    SimApp,
    State,
)

STATE_DIR_ENV = "SIYU_SIMULATOR_STATE_DIR"
STATE_FILE = "state.json"
ADDRESS_FILE = "simulator.json"
FORMAT = 1
SAVE_DELAY = 0.5  # seconds: a burst of calls becomes one write
# A snapshot is taken on the event loop; with a large memory (a load test under `make run`) the wait grows so
# that saving takes at most a tenth of the loop's time.
SAVE_LOAD_SHARE = 10
SAVE_DELAY_MAX = 30.0


# --- the registry of parts ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Part:
    dump: Callable[[State], Any]  # → JSON-ready data
    load: Callable[[State, Any], None]  # restores it into a fresh State


PARTS: dict[str, Part] = {}


def register_part(name: str, dump: Callable[[State], Any], load: Callable[[State, Any], None]) -> None:
    PARTS[name] = Part(dump, load)


_SCALARS = (str, int, float, bool, type(None))
_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def _names(cls: type) -> tuple[str, ...]:
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = tuple(f.name for f in fields(cls))  # type: ignore[arg-type]
    return names


def plain(value: Any) -> Any:
    """JSON-ready data from the simulator's dataclasses, dicts (Counters included) and lists.
    (`dataclasses.asdict` rebuilds a Counter from pairs, which counts the pairs.)"""
    cls = type(value)
    if cls in _SCALARS:
        return value
    if is_dataclass(value) and not isinstance(value, type):
        return {n: v if type(v) in _SCALARS else plain(v) for n in _names(cls) for v in (getattr(value, n),)}
    if isinstance(value, dict):
        return {k if type(k) is str else str(k): v if type(v) in _SCALARS else plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [v if type(v) in _SCALARS else plain(v) for v in value]
    return value


T = TypeVar("T")


def build(cls: type[T], data: dict[str, Any], **nested: Any) -> T:
    """`cls` from saved data: fields it no longer has are dropped, new ones take their defaults."""
    names = _names(cls)
    return cls(**{**{k: v for k, v in data.items() if k in names}, **nested})


def _window(data: dict[str, Any] | None) -> rules.Window:
    return rules.Window(grants={k: build(rules.Grant, g) for k, g in ((data or {}).get("grants") or {}).items()})


def _member(data: dict[str, Any]) -> Member:
    return build(Member, data, window=_window(data.get("window")), consents=Counter(data.get("consents") or {}))


def _contact(data: dict[str, Any]) -> Contact:
    return build(Contact, data, follow={u: build(FollowInfo, f) for u, f in (data.get("follow") or {}).items()},
                 kf_windows={k: _window(w) for k, w in (data.get("kf_windows") or {}).items()})


def dump_apps(sim: State) -> list[dict[str, Any]]:
    return [{name: plain(getattr(app, name)) for name in (*APP_SETTINGS, *APP_MEMORY)
             if name not in ("by_openid", "by_external")}  # rebuilt from members and contacts
            for app in sim.apps.values()]


def load_apps(sim: State, data: list[dict[str, Any]]) -> None:
    for saved in data:
        app = build(SimApp, {k: v for k, v in saved.items() if k in APP_SETTINGS or k in APP_MEMORY},
                    members={p: _member(m) for p, m in (saved.get("members") or {}).items()},
                    contacts={p: _contact(c) for p, c in (saved.get("contacts") or {}).items()},
                    qrcodes={t: build(QrCode, q) for t, q in (saved.get("qrcodes") or {}).items()},
                    js_codes={c: build(OneTimeCode, o) for c, o in (saved.get("js_codes") or {}).items()},
                    welcome_codes={c: build(OneTimeCode, o) for c, o in (saved.get("welcome_codes") or {}).items()},
                    kf_untokened_calls={int(k): int(v) for k, v in (saved.get("kf_untokened_calls") or {}).items()})
        app.by_openid = {m.openid: p for p, m in app.members.items()}
        app.by_external = {c.external_userid: p for p, c in app.contacts.items()}
        sim.apps[app.app_id] = app


def _load_people(sim: State, data: list[dict[str, Any]]) -> None:
    sim.people = {p.key: p for p in (build(Person, d) for d in data)}


def _load_tokens(sim: State, data: list[dict[str, Any]]) -> None:
    sim.tokens = {t.value: t for t in (build(AccessToken, d) for d in data)}


def _dump_records(sim: State) -> dict[str, Any]:
    return {"messages": plain(sim.messages), "refusals": plain(sim.refusals), "record_id": sim._record_id,
            "msgid": sim._msgid}


def _load_records(sim: State, data: dict[str, Any]) -> None:
    sim.messages, sim.refusals = list(data.get("messages") or []), list(data.get("refusals") or [])
    sim._record_id = int(data.get("record_id") or 0)
    sim._msgid = max(sim._msgid, int(data.get("msgid") or 0))


def _load_clock(sim: State, data: dict[str, Any]) -> None:
    sim.clock.offset = float(data.get("offset_seconds") or 0.0)


register_part("clock", lambda sim: {"offset_seconds": sim.clock.offset}, _load_clock)
register_part("people", lambda sim: plain(list(sim.people.values())), _load_people)
register_part("apps", dump_apps, load_apps)
register_part("tokens", lambda sim: plain(list(sim.tokens.values())), _load_tokens)
register_part("records", _dump_records, _load_records)


# --- the file ---------------------------------------------------------------------------------------------

def snapshot(sim: State) -> dict[str, Any]:
    """Everything to save, as plain data: taken on the event loop, so no request changes it halfway."""
    return {"format": FORMAT, "saved_at": time.time(), "parts": {name: p.dump(sim) for name, p in PARTS.items()}}


def restore(sim: State, saved: dict[str, Any]) -> None:
    """Load a snapshot into `sim` (which starts empty); parts the file lacks stay empty."""
    if saved.get("format") != FORMAT or not isinstance(saved.get("parts"), dict):
        raise ValueError(f"not a simulator state file of format {FORMAT}")
    sim.reset()
    for name, part in PARTS.items():
        if name in saved["parts"]:
            part.load(sim, saved["parts"][name])


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


class Saver:
    """Keeps `state_dir/state.json` in step with the simulator's memory."""

    def __init__(self, sim: State, state_dir: Path, delay: float = SAVE_DELAY) -> None:
        self.sim, self.path, self.delay = sim, Path(state_dir) / STATE_FILE, delay
        self._pending: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._dirty = False
        self._cost = 0.0  # seconds the last snapshot held the event loop

    def load(self) -> str:
        """Restore the saved state, if any. A file that cannot be read is moved aside (never overwritten
        unseen) and the simulator starts empty. Returns what happened, for the log."""
        if not self.path.exists():
            return "no saved state"
        try:
            restore(self.sim, json.loads(self.path.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
            self.sim.reset()
            aside = self.path.with_name(f"{self.path.name}.unreadable-{int(time.time())}")
            with contextlib.suppress(OSError):
                self.path.replace(aside)
            return f"the saved state could not be read ({type(exc).__name__}: {exc}); moved to {aside.name}"
        return f"restored {len(self.sim.apps)} apps and {len(self.sim.people)} people from {self.path}"

    def touch(self) -> None:
        """Something changed: save soon (one write for a burst of changes)."""
        self._dirty = True
        if self._pending is None or self._pending.done():
            self._pending = asyncio.get_running_loop().create_task(self._save_later())

    async def _save_later(self) -> None:
        await asyncio.sleep(min(max(self.delay, SAVE_LOAD_SHARE * self._cost), SAVE_DELAY_MAX))
        await self.flush()

    async def flush(self) -> None:
        async with self._lock:
            if not self._dirty:
                return
            self._dirty = False
            started = time.monotonic()
            data = snapshot(self.sim)
            self._cost = time.monotonic() - started
            try:
                await asyncio.to_thread(self._write, data)
            except (OSError, TypeError, ValueError) as exc:  # a full disk must not stop the simulator
                self._dirty = True  # the next change tries again
                print(f"[simulator] could not save its state to {self.path}: {exc}", file=sys.stderr, flush=True)

    def _write(self, data: dict[str, Any]) -> None:
        _write_atomically(self.path, json.dumps(data, ensure_ascii=False, separators=(",", ":")))


# --- where the running simulator listens ----------------------------------------------------------------

def announce(state_dir: Path, host: str, port: int) -> Path:
    """Write `state_dir/simulator.json` for `siyu simulate` to find this simulator."""
    reach = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host  # noqa: S104 (a wildcard is reached on loopback)
    path = Path(state_dir) / ADDRESS_FILE
    _write_atomically(path, json.dumps({"url": f"http://{reach}:{port}", "pid": os.getpid()}))
    return path


def retract(state_dir: Path) -> None:
    """Remove the address file when it is still this process's."""
    path = Path(state_dir) / ADDRESS_FILE
    with contextlib.suppress(OSError, ValueError):
        if json.loads(path.read_text(encoding="utf-8")).get("pid") == os.getpid():
            path.unlink()


def announced_url(state_dir: Path) -> str | None:
    """The URL a live simulator announced under `state_dir`, or None (no file, or its process is gone)."""
    try:
        data = json.loads((Path(state_dir) / ADDRESS_FILE).read_text(encoding="utf-8"))
        url, pid = str(data["url"]), int(data["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # alive, someone else's
    return url
