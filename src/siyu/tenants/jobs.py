"""Background jobs of the tenants domain. Jobs take ids, are idempotent and are registered by name."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from siyu.core.clock import now
from siyu.tenants.tables import Invitation


async def purge_expired_invitations(ctx: dict[str, Any]) -> int:
    """Delete invitations that expired over 30 days ago without being accepted (revoked ones included);
    running it twice is harmless."""
    cutoff = now() - timedelta(days=30)
    deleted = await Invitation.delete().where(
        (Invitation.expires_at < cutoff) & Invitation.accepted_at.is_null()
    ).returning(Invitation.id)
    return len(deleted)
