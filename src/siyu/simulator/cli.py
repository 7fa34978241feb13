"""`siyu simulate …`: scripted customers, driven through the simulator's control API over HTTP.

    siyu simulate follow   --app wx… --count 200 [--scene spring]
    siyu simulate message  --app wx… --count 50 --text 你好
    siyu simulate scan     --app wx… --count 10 --scene spring
    siyu simulate click    --app wx… --count 10 --key MENU_CONTACT
    siyu simulate scenario --app wx… "200 customers follow, 50 write 你好"
    siyu simulate scenario --app wx… "30 customers buy, 5 refund"

Customers are named <prefix>00001, <prefix>00002, … so runs can build on each other. The verbs
adapt to the app: for a Mini Program "follow" is a wx.login; for WeCom "follow" adds the customer
as a sales rep's contact and "write" writes to the 微信客服 account. "buy" and "refund" happen in a Mini
Program with a WeChat Pay merchant (or a backend) registered: each buyer pays for an order (items from the
merchant's catalog, or the SKU given: "10 buy CANDLE-01"), the backend reports it and WeChat Pay notifies
it; "refund" refunds the customer's latest order in full.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import httpx

from siyu.simulator.persist import announced_url

VERBS = ("follow", "write", "scan", "click", "buy", "refund")
# verb → action per app kind (None: not possible for that kind)
ACTIONS: dict[str, dict[str, str | None]] = {
    "follow": {"oa": "follow", "mp": "mp_login", "wecom": "add_contact"},
    "write": {"oa": "text", "mp": "text", "wecom": "kf_text"},
    "scan": {"oa": "scan", "mp": None, "wecom": None},
    "click": {"oa": "click", "mp": None, "wecom": None},
    "buy": {"oa": None, "mp": "buy", "wecom": None},
    "refund": {"oa": None, "mp": "refund", "wecom": None},
}
ARG_FIELD = {"write": "text", "scan": "scene", "click": "key", "buy": "sku"}
OPTIONAL_ARG = ("follow", "buy")  # follow: a QR scene or a state; buy: a SKU
NO_ARG = ("refund",)
# WeChat Pay's side of the simulator (docs/simulator.md): a purchase, a refund.
PAY_PATHS = {"buy": "/_sim/pay/buy", "refund": "/_sim/pay/refund"}


@dataclass(frozen=True)
class Step:
    verb: str
    count: int
    arg: str = ""


_CLAUSE = re.compile(r"^\s*(\d+)\s+(?:(?:customers?|people|persons?|users?)\s+)?(follow|write|scan|click|buy|refund)\b"
                     r"\s*(.*?)\s*$",
                     re.IGNORECASE | re.DOTALL)


def _split_clauses(text: str) -> list[str]:
    """Split on commas (ASCII or Chinese) outside double quotes."""
    parts, current, quoted = [], [], False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        if ch in ",，" and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return [p for p in (p.strip() for p in parts) if p]


def parse_scenario(text: str) -> list[Step]:
    """ "200 customers follow, 50 write 你好, 10 scan spring, 5 click MENU_A" → steps.
    A text with commas goes in double quotes: 3 write "hi, there"."""
    clauses = _split_clauses(text)
    if not clauses:
        raise ValueError("the scenario is empty")
    steps = []
    for clause in clauses:
        m = _CLAUSE.match(clause)
        if m is None:
            raise ValueError(f"cannot read {clause!r}: expected '<N> customers follow', '<N> write <text>', "
                             "'<N> scan <scene>', '<N> click <key>', '<N> buy [<sku>]' or '<N> refund'")
        count, verb, arg = int(m.group(1)), m.group(2).lower(), m.group(3)
        if len(arg) >= 2 and arg[0] == arg[-1] == '"':
            arg = arg[1:-1]
        if count < 1:
            raise ValueError(f"{clause!r}: the number of customers must be at least 1")
        if verb == "follow" and arg:
            raise ValueError(f"{clause!r}: follow takes no argument (use scan <scene> for a QR code)")
        if verb in NO_ARG and arg:
            raise ValueError(f"{clause!r}: {verb} takes no argument")
        if verb not in OPTIONAL_ARG + NO_ARG and not arg:
            raise ValueError(f"{clause!r}: {verb} needs {'a text' if verb == 'write' else 'a ' + ARG_FIELD[verb]}")
        steps.append(Step(verb, count, arg))
    return steps


def default_simulator() -> str:
    """The simulator `make run` started (it announces itself under the data dir), else the port in
    SIYU_SIMULATOR_PORT (8900)."""
    # SIYU_DATA_DIR as Siyu's settings read it (the simulator imports nothing of Siyu; the `siyu` command
    # has loaded .env into the environment by now).
    data_dir = Path(os.environ.get("SIYU_DATA_DIR") or ".siyu").expanduser()
    return announced_url(data_dir / "simulator") or \
        f"http://127.0.0.1:{os.environ.get('SIYU_SIMULATOR_PORT', '8900')}"


def person_key(prefix: str, n: int) -> str:
    return f"{prefix}{n:05d}"


class Runner:
    def __init__(self, base: str, app_id: str, prefix: str, concurrency: int, timeout: float) -> None:
        self.base, self.app_id, self.prefix = base.rstrip("/"), app_id, prefix
        self.concurrency, self.timeout = concurrency, timeout
        self.kind = ""

    async def _post(self, http: httpx.AsyncClient, body: dict[str, Any]) -> httpx.Response:
        return await http.post(f"{self.base}/_sim/push", json=body, timeout=self.timeout * 3 + 10)

    async def _pay(self, http: httpx.AsyncClient, verb: str, n: int, arg: str) -> str:
        body: dict[str, Any] = {"app_id": self.app_id, "person": person_key(self.prefix, n),
                                "timeout_seconds": self.timeout}
        if arg:
            body[ARG_FIELD[verb]] = arg
        resp = await http.post(f"{self.base}{PAY_PATHS[verb]}", json=body, timeout=self.timeout * 3 + 10)
        code = resp.json().get("code") if resp.status_code != 200 else None
        if verb == "refund" and code in ("no_order", "bad_amount"):
            return "skipped (nothing to refund)"
        if code == "nobody_to_tell":
            raise click.ClickException(f"the Mini Program {self.app_id} has no WeChat Pay merchant or backend in the "
                                       "simulator: register one (docs/simulator.md, /_sim/pay/merchants)")
        if resp.status_code != 200:
            return "refused"
        data = resp.json()
        if data.get("delivered"):
            return "delivered"
        pay = data.get("pay") or {}
        return "failed (WeChat Pay retries)" if pay and not pay.get("gave_up") else "failed"

    async def _one(self, http: httpx.AsyncClient, verb: str, n: int, arg: str) -> str:
        if verb in PAY_PATHS:
            return await self._pay(http, verb, n, arg)
        action = ACTIONS[verb][self.kind]
        body: dict[str, Any] = {"app_id": self.app_id, "person": person_key(self.prefix, n), "action": action,
                                "timeout_seconds": self.timeout}
        if arg:  # follow's argument: the QR scene (OA) or the contact way's state (WeCom)
            body[ARG_FIELD.get(verb) or ("state" if self.kind == "wecom" else "scene")] = arg
        resp = await self._post(http, body)
        if resp.status_code == 409 and resp.json().get("code") == "not_following":
            # An OA only hears from followers: follow first, then act.
            first = await self._post(http, {**body, "action": "follow"})
            if first.status_code != 200:
                return "refused"
            resp = await self._post(http, body)
        if resp.status_code == 409 and resp.json().get("code") in ("already_following", "already_a_contact"):
            return "skipped (already done)"
        if resp.status_code != 200:
            return "refused"
        data = resp.json()
        if data.get("attempts", 0) == 0:  # no callback_url (or mp_login without a backend): still happened
            return "applied (no push)"
        return "delivered" if data.get("delivered") else "failed"

    async def run(self, steps: list[Step], echo: Any) -> dict[str, int]:
        totals: dict[str, int] = {}
        async with httpx.AsyncClient(trust_env=False) as http:
            try:
                app = await http.get(f"{self.base}/_sim/apps/{self.app_id}", timeout=5)
            except httpx.HTTPError as exc:
                raise click.ClickException(
                    f"cannot reach the simulator at {self.base} ({type(exc).__name__}); is `siyu simulator` "
                    "running? Use --simulator URL otherwise.") from None
            if app.status_code == 404:
                raise click.ClickException(f"the simulator at {self.base} has no app {self.app_id}")
            app.raise_for_status()
            self.kind = app.json()["kind"]
            for step in steps:
                if ACTIONS[step.verb][self.kind] is None:
                    hint = " (customers buy in a Mini Program: use its app id)" if step.verb in PAY_PATHS else ""
                    raise click.ClickException(f"{step.verb} is not possible for a {self.kind} app{hint}")
            for step in steps:
                label = f"{step.count} {step.verb}" + (f" {step.arg}" if step.arg else "")
                counts = await self._step(http, step, label, echo)
                echo(f"  {label}: {_summary(counts)}")
                for k, v in counts.items():
                    totals[k] = totals.get(k, 0) + v
        return totals

    async def _step(self, http: httpx.AsyncClient, step: Step, label: str, echo: Any) -> dict[str, int]:
        counts: dict[str, int] = {}
        done = 0
        every = max(1, step.count // 10)
        started = last = time.monotonic()
        gate = asyncio.Semaphore(self.concurrency)

        async def one(n: int) -> None:
            nonlocal done, last
            async with gate:
                try:
                    outcome = await self._one(http, step.verb, n, step.arg)
                except httpx.HTTPError:
                    outcome = "simulator unreachable"
            counts[outcome] = counts.get(outcome, 0) + 1
            done += 1
            now = time.monotonic()
            if step.count >= 20 and done < step.count and (done % every == 0 or now - last > 2):
                last = now
                echo(f"  {label}: {done}/{step.count} ({now - started:.1f} s)")

        await asyncio.gather(*(one(n) for n in range(1, step.count + 1)))
        return counts


def _summary(counts: dict[str, int]) -> str:
    return ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))


def _run(options: dict[str, Any], app_id: str, steps: list[Step]) -> None:
    runner = Runner(options["simulator_url"], app_id, options["prefix"], options["concurrency"],
                    options["timeout"])
    click.echo(f"simulating on {runner.base} for {app_id}: " + ", ".join(
        f"{s.count} {s.verb}" + (f" {s.arg}" if s.arg else "") for s in steps))
    totals = asyncio.run(runner.run(steps, click.echo))
    click.echo(f"done: {_summary(totals) or 'nothing to do'}")
    if any(k.startswith("failed") for k in totals) or totals.get("simulator unreachable"):
        raise SystemExit(1)


def common(fn: Callable[..., None]) -> Callable[..., None]:
    """--app, and how to reach and pace the simulator: the same on every command."""
    options = [
        click.option("--app", "app_id", required=True, help="AppID or CorpID registered with the simulator."),
        click.option("--simulator", "simulator_url", default=default_simulator,
                     show_default="the one `make run` started, else http://127.0.0.1:$SIYU_SIMULATOR_PORT",
                     help="The simulator's base URL."),
        click.option("--prefix", default="cust", show_default=True,
                     help="Customers are <prefix>00001, <prefix>00002, …"),
        click.option("--concurrency", default=8, show_default=True, type=click.IntRange(1, 100)),
        click.option("--timeout", default=5.0, show_default=True, type=click.FloatRange(0.1, 60),
                     help="Seconds WeChat waits for each callback answer."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


count_option = click.option("--count", default=1, show_default=True, type=click.IntRange(1, 100000))


@click.group()
def simulate() -> None:
    """Scripted customers acting on a simulated WeChat account (needs `siyu simulator` running)."""


@simulate.command()
@common
@count_option
@click.option("--scene", default="", help="OA: follow through a parametric QR code; WeCom: the state.")
def follow(app_id: str, count: int, scene: str, **options: Any) -> None:
    """Customers follow (MP: log in; WeCom: become a sales rep's contact)."""
    _run(options, app_id, [Step("follow", count, scene)])


@simulate.command()
@common
@count_option
@click.option("--text", default="你好", show_default=True)
def message(app_id: str, count: int, text: str, **options: Any) -> None:
    """Customers write a text (OA customers who do not follow yet follow first)."""
    _run(options, app_id, [Step("write", count, text)])


@simulate.command()
@common
@count_option
@click.option("--scene", required=True)
def scan(app_id: str, count: int, scene: str, **options: Any) -> None:
    """Customers scan a parametric QR code (non-followers follow through it)."""
    _run(options, app_id, [Step("scan", count, scene)])


@simulate.command("click")
@common
@count_option
@click.option("--key", required=True, help="The menu button's key.")
def click_(app_id: str, count: int, key: str, **options: Any) -> None:
    """Customers click a menu button."""
    _run(options, app_id, [Step("click", count, key)])


@simulate.command()
@common
@click.argument("text")
def scenario(app_id: str, text: str, **options: Any) -> None:
    """Run a scenario TEXT such as "200 customers follow, 50 write 你好, 10 scan spring, 5 click MENU_A"
    (or, on a Mini Program with WeChat Pay, "30 customers buy, 5 refund")."""
    try:
        steps = parse_scenario(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="TEXT") from None
    _run(options, app_id, steps)
