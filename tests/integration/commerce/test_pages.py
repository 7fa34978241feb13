"""Commerce on the pages: the contact page's purchase summary and timeline entries."""

from __future__ import annotations

import pytest

from siyu.commerce import buyers, purchases
from siyu.contacts import services as contacts
from siyu.core import clock
from tests.conftest import Client, TenantFixture

pytestmark = pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning")


async def bought(tenant_id: int, contact_id: int, order_id: str, fen: int, sku: str = "TEA-01",
                 name: str = "Oolong") -> None:
    buyer = await buyers.by_contact_id(tenant_id, contact_id)
    await purchases.do_record_payment(tenant_id, purchases.Payment(
        source="api", order_id=order_id, amount_fen=fen, currency="CNY", paid_at=clock.now(),
        items=[{"sku": sku, "name": name, "quantity": 2, "unit_price_fen": fen // 2}]), buyer)


async def test_the_contact_page_shows_the_purchase_figures_and_the_timeline_entries(
        acme_agent: Client, acme: TenantFixture) -> None:
    cid = await contacts.resolve_identity(acme.id, "mp", "oPageBuyer000000000000000001")
    page = await acme_agent.get(f"/contacts/{cid}")
    assert 'id="contact-purchases"' in page.text and "No purchases yet." in page.text
    await bought(acme.id, cid, "P-1", 12000)
    await bought(acme.id, cid, "P-2", 3000, sku="CUP-1", name="Cup")
    page = await acme_agent.get(f"/contacts/{cid}")
    assert page.status_code == 200
    section = page.text.split('id="contact-purchases"', 1)[1].split("</section>", 1)[0]
    for shown in ("<dd>2</dd>", "¥150.00", "¥75.00", "Oolong", "Cup", "P-1", "P-2"):
        assert shown in section, shown
    assert "2 × Oolong" in page.text  # the purchase on the timeline, with its items
    # htmx asks for the timeline only: no summary is computed or sent.
    fragment = await acme_agent.hx_get(f"/contacts/{cid}?kind=purchase")
    assert fragment.status_code == 200 and "contact-purchases" not in fragment.text and "P-1" in fragment.text
