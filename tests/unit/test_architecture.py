"""Imports flow one way: core ← domains ← composition roots (app, cli, worker, runner).

Every module under src/siyu is parsed with `ast` (nothing is imported), including imports inside
functions. HTTP clients and WeChat's SDK stay in the few places that talk to the outside world.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "siyu"

COMPOSITION_ROOTS = ("siyu.app", "siyu.cli", "siyu.worker", "siyu.runner", "siyu.__main__")
DOMAINS = ("siyu.tenants", "siyu.contacts", "siyu.timeline", "siyu.wechat", "siyu.web", "siyu.simulator",
           "siyu.segments", "siyu.inbox", "siyu.commerce", "siyu.engagement")
ABOVE_CORE = ("siyu.tenants", "siyu.contacts", "siyu.timeline", "siyu.web", "siyu.wechat", "siyu.simulator", "siyu.inbox",
              "siyu.segments", "siyu.inbox", "siyu.commerce", "siyu.engagement",
              *COMPOSITION_ROOTS)
# Only these may speak HTTP or use WeChat's SDK.
OUTSIDE_WORLD = {"httpx": ("siyu.wechat", "siyu.simulator", "siyu.runner"),
                 "wechatpy": ("siyu.wechat", "siyu.simulator", "siyu.runner")}


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_names(source: str, module: str, is_package: bool = False) -> set[str]:
    """Every module an import statement can load: `from a import b` yields both `a` and `a.b`."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                package = module.split(".") if is_package else module.split(".")[:-1]
                anchor = package[: len(package) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names if alias.name != "*"}
    return found


def within(name: str, packages: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


MODULES: dict[str, set[str]] = {
    module_name(p): imported_names(p.read_text(encoding="utf-8"), module_name(p), p.name == "__init__.py")
    for p in sorted(SRC.rglob("*.py"))
}


def violations(importers: tuple[str, ...], forbidden: tuple[str, ...]) -> list[str]:
    return sorted(f"{mod} imports {name}" for mod, names in MODULES.items() if within(mod, importers)
                  for name in names if within(name, forbidden))


def test_the_parser_sees_the_source_tree() -> None:
    for expected in ("siyu.core.settings", "siyu.tenants.services", "siyu.web.auth", "siyu.app", "siyu.cli",
                     "siyu.contacts.services", "siyu.timeline.services", "siyu.wechat.events"):
        assert expected in MODULES
    assert "siyu.core.settings" in MODULES["siyu.core.crypto"]
    assert "siyu.tenants.services" in MODULES["siyu.web.auth"]  # `from siyu.tenants import services`


def test_the_parser_catches_every_import_form() -> None:
    src = ("import siyu.app\nfrom siyu import cli\nfrom ..web import auth\nfrom . import db\n"
           "def f():\n    import httpx\n")
    names = imported_names(src, "siyu.core.example")
    assert {"siyu.app", "siyu.cli", "siyu.web.auth", "siyu.core.db", "httpx"} <= names


def test_core_imports_nothing_above_it() -> None:
    assert violations(("siyu.core",), ABOVE_CORE) == []
    # Stronger, and true today: core imports nothing of Siyu but core.
    outside_core = sorted(f"{mod} imports {name}" for mod, names in MODULES.items() if within(mod, ("siyu.core",))
                          for name in names if within(name, ("siyu",)) and not within(name, ("siyu.core",)))
    assert outside_core == []


def test_domains_never_import_composition_roots() -> None:
    assert violations(DOMAINS + ("siyu.core",), COMPOSITION_ROOTS) == []


# A domain's HTTP edge (its pages and JSON API) sits on top of siyu.web; the rest of the domain below it.
DOMAIN_EDGES = ("siyu.tenants.views", "siyu.tenants.api", "siyu.contacts.views", "siyu.contacts.api",
                "siyu.contacts.schemas",
                "siyu.segments.views", "siyu.segments.api", "siyu.commerce.views", "siyu.commerce.api",
                "siyu.engagement.views", "siyu.engagement.api")


def test_domain_services_never_import_the_web_layer() -> None:
    """`core ← tenants ← web` (docs/architecture.md), at module level: web's guards and sessions use the
    tenants services; only the tenants' pages and API import web in turn."""
    below_web = sorted(f"{mod} imports {name}" for mod, names in MODULES.items()
                       if within(mod, ("siyu.tenants",)) and not within(mod, DOMAIN_EDGES)
                       for name in names if within(name, ("siyu.web",)))
    assert below_web == []
    assert violations(("siyu.web",), DOMAIN_EDGES) == []


# What contacts may use of wechat: the stored events (`events`), the profile read behind enrichment
# (`profiles`: user/info, externalcontact/get), each one narrow module of plain dicts and typed errors; the words
# for WeChat's errors (`errors`, pure data) and the stored media of a person's messages (`media`).
CONTACTS_READ_FROM_WECHAT = ("siyu.wechat.events", "siyu.wechat.profiles", "siyu.wechat.errors", "siyu.wechat.media")


def test_the_gateway_knows_nothing_of_contacts_and_the_timeline() -> None:
    """wechat hands its events over by job name ("contacts.resolve_inbound"), never by import; contacts
    reads them through the narrow module `siyu.wechat.events`, and asks WeChat about a person through
    `siyu.wechat.profiles` only; the timeline never touches wechat."""
    assert violations(("siyu.wechat",), ("siyu.contacts", "siyu.timeline")) == []
    from_wechat = sorted(f"{mod} imports {name}" for mod, names in MODULES.items() if within(mod, ("siyu.contacts",))
                         for name in names if within(name, ("siyu.wechat",))
                         and not within(name, CONTACTS_READ_FROM_WECHAT)
                         and name != "siyu.wechat")  # `from siyu.wechat import events` names the package too
    assert from_wechat == []
    assert "siyu.wechat.events" in MODULES["siyu.contacts.jobs"]
    assert "siyu.wechat.profiles" in MODULES["siyu.contacts.enrich"]
    assert violations(("siyu.timeline",), ("siyu.wechat",)) == []
    # The narrow modules stay narrow: events reads (and, for erasures, rewrites) the gateway's tables and
    # nothing else of Siyu; profiles uses the outbound client and its runtime (and core's errors), nothing
    # of the gateway.
    # (and, erasing a person, their stored media through `siyu.wechat.media`)
    assert all(within(n, ("siyu.wechat.tables", "siyu.core.db", "siyu.wechat.media")) or n in ("siyu.core", "siyu.wechat")
               for n in MODULES["siyu.wechat.events"] if within(n, ("siyu",)))
    assert all(within(n, ("siyu.wechat.client", "siyu.wechat.outbound", "siyu.core.errors"))
               for n in MODULES["siyu.wechat.profiles"] if within(n, ("siyu",)) and n != "siyu.core")


def test_contacts_and_the_timeline_layering() -> None:
    """The tables of both are the foundation (timeline_event points at contacts); above them the timeline's
    services, which know contacts only by their tables and the live-contact locks; above those the
    contacts' services, merges and jobs, which move and append events. Neither sits on the web layer, and
    tenants knows neither."""
    allowed = ("siyu.contacts.tables", "siyu.contacts.live")
    timeline_reach = sorted(f"{mod} imports {name}" for mod, names in MODULES.items() if within(mod, ("siyu.timeline",))
                            for name in names if within(name, ("siyu.contacts",)) and not within(name, allowed)
                            and name != "siyu.contacts")
    assert timeline_reach == []
    below_timeline = ("siyu.contacts.tables", "siyu.contacts.live")
    assert violations(below_timeline, ("siyu.timeline",)) == []
    on_web = [v for v in violations(("siyu.contacts", "siyu.timeline"), ("siyu.web",))
              if not within(v.split(" imports ")[0], DOMAIN_EDGES)]  # the contact pages are the edge
    assert on_web == []
    assert violations(("siyu.tenants",), ("siyu.contacts", "siyu.timeline")) == []


@pytest.mark.parametrize("library", sorted(OUTSIDE_WORLD))
def test_http_and_wechat_sdk_only_where_allowed(library: str) -> None:
    offenders = sorted(mod for mod, names in MODULES.items()
                       if within(mod, ("siyu",)) and not within(mod, OUTSIDE_WORLD[library])
                       and any(within(n, (library,)) for n in names))
    assert offenders == [], f"{library} is imported outside {OUTSIDE_WORLD[library]}"


def test_segments_sit_above_contacts_and_nothing_below_reads_them() -> None:
    """Segments read the contacts' tables (by SQL) and their tag list; the foundation (tenants, contacts, the
    timeline, wechat, web) never imports segments: the audiences are used from above (broadcasts). Segments
    never talk to WeChat, and only their pages and API sit on the web layer."""
    assert "siyu.segments.services" in MODULES and "siyu.contacts.services" in MODULES["siyu.segments.views"]
    below = ("siyu.tenants", "siyu.contacts", "siyu.timeline", "siyu.wechat", "siyu.web", "siyu.core")
    assert violations(below, ("siyu.segments",)) == []
    assert violations(("siyu.segments",), ("siyu.wechat",)) == []
    on_web = [v for v in violations(("siyu.segments",), ("siyu.web",))
              if not within(v.split(" imports ")[0], DOMAIN_EDGES)]
    assert on_web == []


# What the inbox may use of the WeChat package: stored events, reply windows, subscription consents, the
# send-once ledger (with its runtime), the auto-reply rules' answer and the hold on a suspended tenant's sends.
# Never the gateway, the client or wechatpy.
INBOX_USES_OF_WECHAT = ("siyu.wechat.events", "siyu.wechat.windows", "siyu.wechat.consents", "siyu.wechat.outbound",
                        "siyu.wechat.services", "siyu.wechat.holds", "siyu.wechat.errors", "siyu.wechat.media",
                        "siyu.wechat.owner_tasks")


def test_the_inbox_sits_above_contacts_and_talks_to_wechat_through_narrow_doors() -> None:
    assert violations(("siyu.contacts", "siyu.timeline", "siyu.wechat", "siyu.tenants", "siyu.segments"),
                      ("siyu.inbox",)) == []
    wide = sorted(f"{mod} imports {name}" for mod, names in MODULES.items() if within(mod, ("siyu.inbox",))
                  for name in names if within(name, ("siyu.wechat",)) and not within(name, INBOX_USES_OF_WECHAT)
                  and name != "siyu.wechat")
    assert wide == []
    assert "siyu.wechat.outbound" in MODULES["siyu.inbox.jobs"]  # the test can fail: the inbox does send


# What re-engagement may use of its siblings: the inbox tells who is talking with a person (`reach`); WeChat is
# reached through the send-once ledger and the window, consent and stored-event reads.
ENGAGEMENT_USES_OF_WECHAT = ("siyu.wechat.events", "siyu.wechat.windows", "siyu.wechat.consents",
                             "siyu.wechat.outbound", "siyu.wechat.owner_tasks")


def test_engagement_sits_on_top_and_reaches_its_siblings_through_narrow_doors() -> None:
    """Nothing below re-engagement imports it (contacts hands it events by job name); it reads the inbox only
    through `siyu.inbox.reach`, people through `siyu.contacts.reach`, and WeChat through the send-once ledger.
    Only its pages and API sit on the web layer."""
    below = ("siyu.tenants", "siyu.contacts", "siyu.timeline", "siyu.wechat", "siyu.web", "siyu.core", "siyu.inbox",
             "siyu.segments", "siyu.simulator")
    assert violations(below, ("siyu.engagement",)) == []
    into_inbox = sorted(f"{mod} imports {name}" for mod, names in MODULES.items() if within(mod, ("siyu.engagement",))
                        for name in names if within(name, ("siyu.inbox",)) and name != "siyu.inbox"
                        and not within(name, ("siyu.inbox.reach",)))
    assert into_inbox == []
    wide = sorted(f"{mod} imports {name}" for mod, names in MODULES.items() if within(mod, ("siyu.engagement",))
                  for name in names if within(name, ("siyu.wechat",)) and name != "siyu.wechat"
                  and not within(name, ENGAGEMENT_USES_OF_WECHAT))
    assert wide == []
    assert "siyu.wechat.outbound" in MODULES["siyu.engagement.sender"]  # the test can fail: it does send
    assert "siyu.contacts.reach" in MODULES["siyu.engagement.sender"]
    # Commerce is read in one module (`siyu.engagement.purchases`); purchases arrive by job name after commit.
    into_commerce = sorted(f"{mod} imports {name}" for mod, names in MODULES.items()
                           if within(mod, ("siyu.engagement",)) and mod != "siyu.engagement.purchases"
                           for name in names if within(name, ("siyu.commerce",)))
    assert into_commerce == []
    assert violations(("siyu.commerce",), ("siyu.engagement",)) == []
    # The doors stay narrow: they read their own domain's rows and nothing above core.
    for door in ("siyu.inbox.reach", "siyu.contacts.reach"):
        assert all(within(n, ("siyu.core",)) for n in MODULES[door] if within(n, ("siyu",)))
    on_web = [v for v in violations(("siyu.engagement",), ("siyu.web",))
              if not within(v.split(" imports ")[0], DOMAIN_EDGES)]
    assert on_web == []


# The narrow doors into commerce from below it: the channels page's WeChat Pay section (merchant status), the
# contact page's purchase summary and the segments' purchase filters (per-contact figures).
INTO_COMMERCE = {"siyu.tenants.views": ("siyu.commerce.merchants",), "siyu.contacts.views": ("siyu.commerce.stats",),
                 "siyu.segments.definition": ("siyu.commerce.stats",)}


def test_commerce_sits_above_contacts_and_the_timeline_and_is_reached_through_narrow_doors() -> None:
    """Commerce writes purchases onto contacts and the timeline (their services, `resolve`, the live-contact
    locks) and checks WeChat Pay's notifications with `siyu.wechat.pay` only. Below it, only the pages named
    in INTO_COMMERCE read it, each through one module; contacts' merges carry purchases through a registered
    `Carrier`, never by naming commerce. Commerce never uses the inbox or segments."""
    below = ("siyu.tenants", "siyu.contacts", "siyu.timeline", "siyu.wechat", "siyu.web", "siyu.core", "siyu.inbox",
             "siyu.segments")
    wide = [f"{mod} imports {name}" for mod, names in MODULES.items() if within(mod, below)
            for name in names if within(name, ("siyu.commerce",)) and name != "siyu.commerce"
            and not within(name, INTO_COMMERCE.get(mod, ()))]
    assert wide == []
    assert "siyu.commerce.stats" in MODULES["siyu.segments.definition"]  # the test can fail: the doors are used
    from_wechat = sorted(f"{mod} imports {name}" for mod, names in MODULES.items() if within(mod, ("siyu.commerce",))
                         for name in names if within(name, ("siyu.wechat",)) and name != "siyu.wechat"
                         and not within(name, ("siyu.wechat.pay",)))
    assert from_wechat == []
    assert violations(("siyu.commerce",), ("siyu.inbox", "siyu.segments")) == []
    # The doors stay narrow: what pages below commerce read imports nothing of Siyu above core and tenants.
    for door in ("siyu.commerce.stats",):
        assert all(within(n, ("siyu.core",)) for n in MODULES[door] if within(n, ("siyu",)))
    assert all(within(n, ("siyu.core", "siyu.tenants", "siyu.wechat.pay")) or n in ("siyu.wechat", "siyu.core")
               for n in MODULES["siyu.commerce.merchants"] if within(n, ("siyu",)))
    on_web = [v for v in violations(("siyu.commerce",), ("siyu.web",))
              if not within(v.split(" imports ")[0], DOMAIN_EDGES)]
    assert on_web == []
