from pathlib import Path

from siyu.commerce import imports
from siyu.tenants import services as tenants
from tests.conftest import MP, TenantFixture
from tests.integration.commerce.conftest import ACTOR


async def test_smoke(acme: TenantFixture, tmp_path: Path) -> None:
    await tenants.do_link_channel(ACTOR, acme.id, "mp", MP)
    f = tmp_path / "orders.csv"
    f.write_text("order_id,paid_at,amount_fen,sku,name,quantity,unit_price_fen,openid,app_id,refund_id,refunded_fen,refunded_at\n"
                 f"A1,2024-01-02 10:00:00,5000,S1,Candle,1,3000,oBuyer000001,{MP['app_id']},,,\n"
                 f"A1,2024-01-02 10:00:00,5000,S2,Snuffer,1,2000,oBuyer000001,{MP['app_id']},R1,2000,2024-01-05 10:00:00\n"
                 f"A2,2024-02-02T10:00:00+08:00,3000,S1,Candle,1,3000,oBuyer000002,{MP['app_id']},,,\n"
                 f"A3,2024-02-02T10:00:00+08:00,x,S1,Candle,1,3000,oBuyer000002,{MP['app_id']},,,\n")
    seen = []
    p = await imports.import_path(acme.id, f, ACTOR, progress=seen.append)
    print(p, seen)
    print(await imports.problems(acme.id, p.id))
    p = await imports.import_path(acme.id, f, ACTOR, progress=seen.append)
    print(p)
    assert False
