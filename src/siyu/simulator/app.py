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

from siyu.simulator.api import api_routes
from siyu.simulator.control import control_routes
from siyu.simulator.persist import STATE_DIR_ENV, Saver
from siyu.simulator.state import State


def create_simulator(state_dir: str | Path | None = None) -> Litestar:
    """The simulator; its memory is kept under `state_dir` (default: $SIYU_SIMULATOR_STATE_DIR), or only
    in memory when neither is given."""
    sim = State()
    state_dir = state_dir or os.environ.get(STATE_DIR_ENV) or None
    saver = Saver(sim, Path(state_dir)) if state_dir else None
    hooks: dict[str, Any] = {}
    if saver is not None:
        print(f"[simulator] {saver.load()}", file=sys.stderr, flush=True)

        async def saved_soon(request: Request[Any, Any, Any]) -> None:
            # Reading the control API changes nothing; anything else may (WeChat's GETs issue tokens).
            if not (request.method == "GET" and request.url.path.startswith("/_sim/")):
                saver.touch()

        hooks = {"after_response": saved_soon, "on_shutdown": [saver.flush]}
    app = Litestar(route_handlers=[*api_routes(sim), *control_routes(sim)], openapi_config=None, **hooks)
    app.state["simulator"] = sim  # for in-process tests that want to look inside
    app.state["simulator_saver"] = saver
    return app
