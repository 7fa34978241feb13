"""A local stand-in for WeChat's servers, like a payment provider's test mode.

Two API roots with WeChat's own paths: `/wechat-api` (api.weixin.qq.com: OA and Mini Program) and
`/wecom-api` (qyapi.weixin.qq.com). Point WECHAT_API_BASE / WECOM_API_BASE at them. Simulated customers
act through the control API (`/_sim/…`), and the simulator pushes their messages and events, signed and
encrypted like WeChat, to the registered callback URLs. Everything lives in memory in one process, and
with a state directory also on disk, so a restart keeps the customers (persist.py).

It knows nothing of Siyu: it speaks only WeChat's protocol (docs/simulator.md).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from litestar import Litestar, Request

from siyu.simulator import pay
from siyu.simulator.api import api_routes
from siyu.simulator.control import control_routes
from siyu.simulator.pay_control import pay_routes
from siyu.simulator.persist import STATE_DIR_ENV, Saver
from siyu.simulator.state import State


def create_simulator(state_dir: str | Path | None = None) -> Litestar:
    """The simulator; its memory is kept under `state_dir` (default: $SIYU_SIMULATOR_STATE_DIR), or only
    in memory when neither is given."""
    sim = State()
    state_dir = state_dir or os.environ.get(STATE_DIR_ENV) or None
    saver = Saver(sim, Path(state_dir)) if state_dir else None
    desk = pay.desk(sim)

    def resume_pay() -> None:
        resumed = desk.resume()  # WeChat Pay's retries owed before a restart
        if resumed:
            print(f"[simulator] resuming {resumed} WeChat Pay notification(s)", file=sys.stderr, flush=True)

    hooks: dict[str, Any] = {"on_startup": [resume_pay]}
    if saver is not None:
        print(f"[simulator] {saver.load()}", file=sys.stderr, flush=True)
        desk.on_change = saver.touch  # WeChat Pay's retries change its memory between requests

        async def saved_soon(request: Request[Any, Any, Any]) -> None:
            # Reading the control API changes nothing; anything else may (WeChat's GETs issue tokens).
            if not (request.method == "GET" and request.url.path.startswith("/_sim/")):
                saver.touch()

        hooks = {"after_response": saved_soon, "on_startup": [resume_pay], "on_shutdown": [saver.flush]}
    app = Litestar(route_handlers=[*api_routes(sim), *control_routes(sim), *pay_routes(sim)], openapi_config=None,
                   **hooks)
    app.state["simulator"] = sim  # for in-process tests that want to look inside
    app.state["simulator_saver"] = saver
    return app
