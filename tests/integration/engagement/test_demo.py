"""`make run`'s demo brand has its re-engagement: an active post-purchase journey (thanks at once, a care tip
minutes later, a reminder when the product runs out) and a win-back, both with a holdout; quiet hours are off
so the scene's messages go whatever the hour. Seeding again adds nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from siyu import runner
from siyu.engagement import journeys, rules
from siyu.tenants import services as tenants

pytestmark = pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning")


async def test_the_demo_brand_has_its_journeys(app: Any, tmp_path: Path) -> None:
    seeded = await runner.seed_demo_brand(tmp_path)
    tenant = await tenants.get_tenant_by_slug(seeded["tenant_slug"])
    found = {j.name: j for j in await journeys.list_journeys(tenant.id)}
    care, winback = found["下单后关怀"], found["老客唤回"]
    assert care.status == winback.status == "active"
    assert [s.id for s in care.definition.sends()] == ["thanks", "tip", "again"]
    assert care.definition.steps[3].until_replenishment and care.definition.holdout_percent == 10
    assert winback.definition.trigger.kind == "inactivity" and winback.definition.trigger.days == 60
    assert rules.quiet_until(await rules.get_settings(tenant.id), care.created_at) is None
    await runner.seed_demo_brand(tmp_path)
    assert len(await journeys.list_journeys(tenant.id)) == 2
