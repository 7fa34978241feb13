"""The manager view (`/inbox/manager`): the queue now, the reps' load, first-response and resolution times
and handoffs per day, as inline SVG charts with the numbers on hover and in tables. Team managers see
their teams, tenant admins the whole brand; a rep gets a 403 that says who the page is for. htmx refreshes
the figures (the `figures` block) every minute."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get
from litestar.response import Template

from siyu.core import db, i18n
from siyu.core.i18n import N_
from siyu.inbox import charts
from siyu.inbox import manager as mgr
from siyu.inbox.conversations import viewer_for
from siyu.web.auth import require_tenant_id, tenant_staff
from siyu.web.render import current_user, render

LOAD_ROWS = 40  # the load chart shows the busiest reps; the table below it lists everyone
PRESENCE = {"online": N_("online"), "away": N_("away"), "offline": N_("offline")}


def _day(d: Any) -> str:
    return f"{d:%Y-%m-%d}"


def _charts(f: mgr.Figures) -> dict[str, charts.Chart]:
    t = i18n.gettext
    labels = [f"{d.day:%m-%d}" for d in f.days]

    def times(pick: str) -> charts.Chart:
        values = {name: [getattr(getattr(d, pick), name) for d in f.days] for name in ("median", "p90")}
        if pick == "first_response":
            title, med, p90 = (t(N_("First response time per day")), N_("{day}: median first response {value} "
                               "({n} answered)"), N_("{day}: p90 first response {value} ({n} answered)"))
        else:
            title, med, p90 = (t(N_("Resolution time per day (from the start of the wait)")),
                               N_("{day}: median resolution {value} ({n} resolved)"),
                               N_("{day}: p90 resolution {value} ({n} resolved)"))

        def words(template: str, name: str) -> list[str]:
            return [t(template).format(day=_day(d.day), value=charts.duration_text(v), n=getattr(d, pick).n)
                    if v is not None else "" for d, v in zip(f.days, values[name], strict=True)]

        return charts.line_chart(title, labels, [(t(N_("median")), "median", values["median"], words(med, "median")),
                                                 (t(N_("p90")), "p90", values["p90"], words(p90, "p90"))])

    handed = charts.bar_chart(t(N_("Conversations handed to a human per day")), labels,
                              [d.handed_off for d in f.days],
                              [t(N_("{day}: {n} handed off")).format(day=_day(d.day), n=d.handed_off) for d in f.days])
    busiest = sorted(f.reps, key=lambda r: (-r.share, -r.assigned, r.name))[:LOAD_ROWS]
    load = charts.load_chart(t(N_("Reps' load (assigned of capacity)")), [
        (r.name, r.assigned, r.capacity, t(N_("{name}: {assigned} of {capacity} ({presence})")).format(
            name=r.name, assigned=r.assigned, capacity=r.capacity, presence=t(PRESENCE.get(r.presence, r.presence))))
        for r in busiest])
    return {"load": load, "response": times("first_response"), "resolution": times("resolution"), "handed": handed}


async def _team_names(tenant_id: int, team_ids: tuple[int, ...]) -> list[str]:
    rows = await db.fetch("SELECT name FROM team WHERE tenant = $1 AND id = ANY($2::int[]) ORDER BY lower(name)",
                          tenant_id, list(team_ids))
    return [r["name"] for r in rows]


class InboxManagerController(Controller):
    path = "/inbox/manager"
    guards = [tenant_staff]
    include_in_schema = False

    @get("/")
    async def manager(self, request: Request[Any, Any, Any]) -> Template:
        user = current_user(request)
        assert user is not None
        tenant_id = require_tenant_id(user)
        viewer = await viewer_for(tenant_id, user.id)
        figures = await mgr.figures(tenant_id, viewer)  # Forbidden for reps who manage no team
        teams = [] if figures.scope.everything else await _team_names(tenant_id, figures.scope.team_ids)
        online = sum(1 for r in figures.reps if r.presence == "online")
        return render(request, "inbox/manager.html", {
            "f": figures, "charts": _charts(figures), "teams": teams, "online": online,
            "presence": {k: i18n.gettext(v) for k, v in PRESENCE.items()}, "oldest_wait": (charts.duration_text(figures.queue.oldest_wait_seconds)
                                                  if figures.queue.oldest_wait_seconds is not None else None),
            "duration": charts.duration_text, "held": sum(r.assigned + r.snoozed for r in figures.reps),
        }, block="figures")
