"""The demo brand's WeChat Pay, as `make run` links it: the merchant the simulator plays, with the simulator's
public key and a generated APIv3 key kept (0600) under the data dir, and what Maison Lumière sells.

Linking is idempotent: a second `make run` changes nothing unless the simulator's key or the APIv3 key file
changed (a removed data dir), in which case the link is brought up to date like an admin would."""

from __future__ import annotations

import os
import secrets
import string
from pathlib import Path
from typing import Any

from siyu.commerce import merchants
from siyu.tenants.services import Actor

DEMO_MCHID = "1900012026"
APIV3_KEY_FILE = "demo-pay-apiv3-key"
ACTOR = Actor(None, "demo-seed")

# What the demo brand sells in its Mini Program: SKU, name, unit price in fen.
DEMO_CATALOG: list[dict[str, Any]] = [
    {"sku": "LUM-CANDLE-FIGUE", "name": "Bougie Figue Noire 黑无花果香薰蜡烛 190g", "unit_price_fen": 32000},
    {"sku": "LUM-CANDLE-AMBRE", "name": "Bougie Ambre Doré 琥珀香薰蜡烛 190g", "unit_price_fen": 32000},
    {"sku": "LUM-CANDLE-MINI", "name": "Mini bougie Rose 玫瑰迷你蜡烛 70g", "unit_price_fen": 14800},
    {"sku": "LUM-DIFF-CEDRE", "name": "Diffuseur Cèdre Blanc 白雪松扩香 200ml", "unit_price_fen": 48000},
    {"sku": "LUM-DIFF-REFILL", "name": "Recharge Cèdre Blanc 扩香补充装 200ml", "unit_price_fen": 26000},
    {"sku": "LUM-SPRAY-ROSE", "name": "Brume d'intérieur Rose 玫瑰室内喷雾 100ml", "unit_price_fen": 22000},
    {"sku": "LUM-GIFT-DUO", "name": "Coffret Duo 双烛礼盒", "unit_price_fen": 58000},
    {"sku": "LUM-SNUFFER", "name": "Éteignoir en laiton 黄铜灭烛器", "unit_price_fen": 16800},
]


def catalog_item(sku: str, quantity: int = 1) -> dict[str, Any]:
    item = next(i for i in DEMO_CATALOG if i["sku"] == sku)
    return {**item, "quantity": quantity}


def apiv3_key(data_dir: Path) -> str:
    """The demo merchant's APIv3 key (32 printable characters), made once and kept (0600) under the data dir:
    both Siyu (sealed) and the simulator (as WeChat Pay's console would) are given it."""
    path = Path(data_dir) / APIV3_KEY_FILE
    if path.exists():
        key = path.read_text().strip()
        if len(key) == 32:
            return key
    key = "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(32))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key + "\n")
    return key


async def link_demo_merchant(tenant_id: int, slug: str, app_id: str, public_key: str, public_key_id: str,
                             apiv3: str) -> bool:
    """Link the simulator's merchant to the demo tenant (`siyu tenant link-pay` with the simulator's key).
    Returns whether anything changed."""
    current = await merchants.config_for(slug)
    if (current is not None and current.mchid == DEMO_MCHID and current.app_id == app_id
            and public_key_id in current.keys and current.apiv3_key == apiv3):
        return False
    await merchants.do_link_pay(ACTOR, tenant_id, {"mch_id": DEMO_MCHID, "app_id": app_id, "api_v3_key": apiv3,
                                                   "public_key": public_key, "public_key_id": public_key_id})
    return True
