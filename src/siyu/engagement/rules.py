"""The tenant's shared rules and the pure functions behind them: settings (frequency cap, quiet hours,
conversion window), when quiet hours end in the tenant's time zone, stable holdout buckets, and the calendar
month WeChat's mass-send cap counts in.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from siyu.core import clock, db
from siyu.core.errors import FieldError, InvalidInput
from siyu.core.i18n import N_
from siyu.tenants.services import Actor, get_tenant, record_audit

CHINA = ZoneInfo("Asia/Shanghai")  # WeChat counts mass sends per natural month in China
MASS_PER_MONTH = 4


@dataclass(frozen=True)
class Settings:
    cap_count: int = 2
    cap_days: int = 7
    quiet_start: int = 21 * 60  # minutes after midnight
    quiet_end: int = 9 * 60
    conversion_days: int = 7
    timezone: str = "Asia/Shanghai"

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def as_json(self) -> dict[str, object]:
        return {"cap_count": self.cap_count, "cap_days": self.cap_days, "quiet_start": hhmm(self.quiet_start),
                "quiet_end": hhmm(self.quiet_end), "conversion_days": self.conversion_days}


def hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def quiet_until(settings: Settings, at: datetime) -> datetime | None:
    """When the quiet hours around `at` end (the first instant a message may go), or None if `at` is not in
    them. Quiet hours are local wall-clock times in the tenant's zone and may wrap midnight (21:00–09:00);
    the end is found on the local calendar, so month ends and DST changes land on the right instant."""
    start, end = settings.quiet_start, settings.quiet_end
    if start == end:
        return None
    local = at.astimezone(settings.zone)
    minute = local.hour * 60 + local.minute
    wraps = start > end
    quiet = (minute >= start or minute < end) if wraps else (start <= minute < end)
    if not quiet:
        return None
    day = local.date()
    if wraps and minute >= start:
        day += timedelta(days=1)  # the evening part: quiet until tomorrow morning
    opening = datetime.combine(day, time(end // 60, end % 60), tzinfo=settings.zone)
    return opening.astimezone(at.tzinfo)


def bucket(*parts: object) -> int:
    """A stable number from 0 to 9999 for these parts: the same person is always in the same bucket of a
    journey, and buckets are spread evenly (SHA-256), so a holdout of n % holds out about n % of people."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") % 10_000


def held_out(percent: int, tenant_id: int, source: str, contact_id: int) -> bool:
    return bucket(tenant_id, source, contact_id) < percent * 100


def month_start(at: datetime) -> datetime:
    """The first instant of the natural month (China time) `at` falls in."""
    local = at.astimezone(CHINA)
    return datetime(local.year, local.month, 1, tzinfo=CHINA)


# --- the settings row ------------------------------------------------------------------------------------

async def get_settings(tenant_id: int) -> Settings:
    zone = (await get_tenant(tenant_id)).timezone or "Asia/Shanghai"  # NotFound for an unknown tenant
    row = await db.fetchrow("SELECT cap_count, cap_days, quiet_start, quiet_end, conversion_days "
                            "FROM engagement_settings WHERE tenant = $1", tenant_id)
    if row is None:
        return Settings(timezone=zone)
    return Settings(row["cap_count"], row["cap_days"], row["quiet_start"], row["quiet_end"], row["conversion_days"],
                    zone)


def _minutes(raw: object, name: str, errors: list[FieldError]) -> int:
    text = str(raw or "").strip()
    try:
        hours, minutes = text.split(":")
        value = int(hours) * 60 + int(minutes)
        if len(text) == 5 and 0 <= int(hours) < 24 and 0 <= int(minutes) < 60:
            return value
    except ValueError:
        pass
    errors.append(FieldError(name, N_("Enter a time as HH:MM.")))
    return 0


def _whole(raw: object, name: str, low: int, high: int, errors: list[FieldError]) -> int:
    text = str(raw if raw is not None else "").strip()
    if text.isdigit() and low <= int(text) <= high:
        return int(text)
    errors.append(FieldError(name, N_("Enter a whole number from {low} to {high}."), {"low": low, "high": high}))
    return low


async def do_update_settings(tenant_id: int, data: dict[str, object], actor: Actor) -> Settings:
    errors: list[FieldError] = []
    cap_count = _whole(data.get("cap_count"), "cap_count", 0, 100, errors)
    cap_days = _whole(data.get("cap_days"), "cap_days", 1, 90, errors)
    quiet_start = _minutes(data.get("quiet_start"), "quiet_start", errors)
    quiet_end = _minutes(data.get("quiet_end"), "quiet_end", errors)
    conversion_days = _whole(data.get("conversion_days"), "conversion_days", 1, 90, errors)
    if errors:
        raise InvalidInput(errors)
    async with db.transaction():
        before = await get_settings(tenant_id)
        await db.execute(
            "INSERT INTO engagement_settings (tenant, cap_count, cap_days, quiet_start, quiet_end, conversion_days, "
            "updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (tenant) DO UPDATE SET "
            "cap_count = EXCLUDED.cap_count, cap_days = EXCLUDED.cap_days, quiet_start = EXCLUDED.quiet_start, "
            "quiet_end = EXCLUDED.quiet_end, conversion_days = EXCLUDED.conversion_days, updated_at = EXCLUDED.updated_at",
            tenant_id, cap_count, cap_days, quiet_start, quiet_end, conversion_days, clock.now())
        after = await get_settings(tenant_id)
        changed = {k: [v, after.as_json()[k]] for k, v in before.as_json().items() if after.as_json()[k] != v}
        if changed:
            await record_audit(actor, tenant_id, "engagement.settings.updated", "tenant", tenant_id, changed)
    return after
