"""Which arq queue re-engagement's own work goes to: its lane (`siyu worker --lane engagement`) when the
deployment runs one (SIYU_ENGAGEMENT_LANE=1), else the default queue. Jobs handed over by other domains by name
(`engagement.handle_inbound`, `engagement.on_purchase`) arrive on the default queue, which registers every
engagement job too; what they start is sent from the lane."""

from __future__ import annotations

from siyu.core.settings import get_settings

QUEUE = "arq:engagement"


def queue() -> str | None:
    return QUEUE if get_settings().engagement_lane else None
