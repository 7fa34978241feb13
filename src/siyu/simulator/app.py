"""A local stand-in for WeChat's servers, like a payment provider's test mode.

Two API roots with WeChat's own paths: `/wechat-api` (api.weixin.qq.com: OA and Mini Program) and
`/wecom-api` (qyapi.weixin.qq.com). Point WECHAT_API_BASE / WECOM_API_BASE at them. Simulated customers
act through the control API (`/_sim/…`), and the simulator pushes their messages and events, signed and
encrypted like WeChat, to the registered callback URLs. Everything lives in memory in one process.

It knows nothing of Siyu: it speaks only WeChat's protocol (docs/simulator.md).
"""

from __future__ import annotations

from litestar import Litestar

from siyu.simulator.api import api_routes
from siyu.simulator.control import control_routes
from siyu.simulator.state import State


def create_simulator() -> Litestar:
    sim = State()
    app = Litestar(route_handlers=[*api_routes(sim), *control_routes(sim)], openapi_config=None)
    app.state["simulator"] = sim  # for in-process tests that want to look inside
    return app
