"""The `siyu` command: admin tasks with the same validation as the pages, and the process entry points."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click

import siyu  # noqa: F401  (sets PICCOLO_CONF)
from siyu.core.errors import ConfigurationError, InvalidInput, NotFound, SiyuError

T = TypeVar("T")
POSITIONAL = {"slug", "file"}  # fields given as arguments, not options


def run(coro_fn: Callable[[], Awaitable[T]]) -> T:
    """Run one async admin action; turn Siyu's errors into a message that names the field, exit 2."""
    try:
        return asyncio.run(coro_fn())  # type: ignore[arg-type]
    except InvalidInput as exc:
        for e in exc.errors:
            name = e.field.upper() if e.field in POSITIONAL else "--" + e.field.replace("_", "-")
            click.echo(f"error: {name}: {e.message.format(**e.params)}", err=True)
        sys.exit(2)
    except NotFound:
        click.echo("error: not found (check the tenant slug)", err=True)
        sys.exit(2)
    except (SiyuError, ConfigurationError) as exc:
        click.echo(f"error: {exc.message or exc}", err=True)
        sys.exit(2)


@click.group()
def main() -> None:
    """Siyu (私域): the WeChat CRM. Settings come from the environment and .env."""
    from siyu.core.settings import get_settings

    try:
        get_settings()
    except ConfigurationError as exc:
        click.echo(f"error: {exc.message}", err=True)
        sys.exit(2)
    from siyu.commerce import purchases as commerce_purchases

    commerce_purchases.install()  # merges made by a command carry purchases too


# --- tenants ---------------------------------------------------------------------------------------

@main.group()
def tenant() -> None:
    """Create tenants and link their WeChat accounts."""


@tenant.command("create")
@click.argument("slug")
@click.option("--name", required=True, help="The brand's display name.")
@click.option("--timezone", default="Asia/Shanghai", show_default=True)
@click.option("--locale", default="zh_CN", show_default=True, help="zh_CN or en")
@click.option("--open-platform-bound", is_flag=True, help="OA and MP are bound to one Open Platform account.")
def tenant_create(slug: str, name: str, timezone: str, locale: str, open_platform_bound: bool) -> None:
    from siyu.tenants import services as svc

    async def go() -> Any:
        return await svc.do_create_tenant(svc.Actor.cli(), {
            "slug": slug, "name": name, "timezone": timezone, "locale": locale,
            "open_platform_bound": open_platform_bound})

    t = run(go)
    click.echo(f"created tenant {t.slug} (id {t.id})")


@tenant.command("list")
def tenant_list() -> None:
    from siyu.tenants import services as svc

    rows = run(svc.list_tenants)
    if not rows:
        click.echo("no tenants")
        return
    click.echo(f"{'SLUG':<24} {'STATUS':<10} {'LINKED':<16} NAME")
    for r in rows:
        click.echo(f"{r['slug']:<24} {r['status']:<10} {','.join(r['linked']) or '-':<16} {r['name']}")


def _link(slug: str, kind: str, data: dict[str, Any]) -> None:
    from siyu.tenants import services as svc

    async def go() -> svc.ChannelView:
        t = await svc.get_tenant_by_slug(slug)
        return await svc.do_link_channel(svc.Actor.cli(), t.id, kind, data)

    view = run(go)
    from siyu.core.settings import get_settings

    click.echo(f"linked {kind} {view.app_id} to {slug}")
    click.echo(f"callback URL: {svc.callback_url(get_settings().public_base_url, slug, kind)}")
    click.echo(f"token:        {data['token']}")  # the operator's own input, echoed for the console


@tenant.command("link-oa")
@click.argument("slug")
@click.option("--app-id", required=True)
@click.option("--app-secret", required=True)
@click.option("--token", required=True)
@click.option("--aes-key", required=True, help="EncodingAESKey, 43 characters")
@click.option("--mode", default="safe", show_default=True, help="safe | compatible | plain")
@click.option("--kind", "oa_kind", default="service", show_default=True, help="service | subscription")
@click.option("--original-id", default="", help="gh_… original id")
def link_oa(slug: str, app_id: str, app_secret: str, token: str, aes_key: str, mode: str, oa_kind: str,
            original_id: str) -> None:
    """Link (or replace) the tenant's Official Account."""
    _link(slug, "oa", {"app_id": app_id, "app_secret": app_secret, "token": token, "aes_key": aes_key,
                       "mode": mode, "oa_kind": oa_kind, "original_id": original_id})


@tenant.command("link-mp")
@click.argument("slug")
@click.option("--app-id", required=True)
@click.option("--app-secret", required=True)
@click.option("--token", required=True)
@click.option("--aes-key", required=True)
@click.option("--format", "push_format", default="xml", show_default=True, help="xml | json")
@click.option("--original-id", default="")
def link_mp(slug: str, app_id: str, app_secret: str, token: str, aes_key: str, push_format: str,
            original_id: str) -> None:
    """Link (or replace) the tenant's Mini Program."""
    _link(slug, "mp", {"app_id": app_id, "app_secret": app_secret, "token": token, "aes_key": aes_key,
                       "push_format": push_format, "original_id": original_id})


@tenant.command("link-wecom")
@click.argument("slug")
@click.option("--corp-id", required=True)
@click.option("--agent-id", required=True)
@click.option("--secret", required=True)
@click.option("--token", required=True)
@click.option("--aes-key", required=True)
@click.option("--kf", is_flag=True, help="微信客服 is enabled for this app")
def link_wecom(slug: str, corp_id: str, agent_id: str, secret: str, token: str, aes_key: str, kf: bool) -> None:
    """Link (or replace) the tenant's WeCom corp."""
    _link(slug, "wecom", {"corp_id": corp_id, "agent_id": agent_id, "secret": secret, "token": token,
                          "aes_key": aes_key, "kf_enabled": "1" if kf else ""})


PAY_FIELD_OPTIONS = {"public_key": "public_key_file", "platform_cert": "platform_cert_file"}


@tenant.command("link-pay")
@click.argument("slug")
@click.option("--mch-id", required=True, help="WeChat Pay merchant number (mchid)")
@click.option("--app-id", required=True, help="The AppID the payments are made in (the Mini Program's)")
@click.option("--api-v3-key", default="", help="The merchant's APIv3 key (32 characters); omit to keep the saved one")
@click.option("--public-key-file", type=click.File("r"), default=None, help="WeChat Pay public key, pub_key.pem")
@click.option("--public-key-id", default="", help="Its id, PUB_KEY_ID_…")
@click.option("--platform-cert-file", type=click.File("r"), default=None,
              help="A WeChat Pay platform certificate (older merchants; its serial is read from it)")
def link_pay(slug: str, mch_id: str, app_id: str, api_v3_key: str, public_key_file: Any, public_key_id: str,
             platform_cert_file: Any) -> None:
    """Link (or change) the tenant's WeChat Pay merchant; the keys given are added to those already live."""
    from siyu.commerce import merchants
    from siyu.core.errors import FieldError
    from siyu.core.settings import get_settings
    from siyu.tenants import services as svc

    data = {"mch_id": mch_id, "app_id": app_id, "api_v3_key": api_v3_key, "public_key_id": public_key_id,
            "public_key": public_key_file.read() if public_key_file else "",
            "platform_cert": platform_cert_file.read() if platform_cert_file else ""}

    async def go() -> Any:
        t = await svc.get_tenant_by_slug(slug)
        try:
            return await merchants.do_link_pay(svc.Actor.cli(), t.id, data)
        except InvalidInput as exc:  # name the options the person typed
            raise InvalidInput([FieldError(PAY_FIELD_OPTIONS.get(e.field, e.field), e.message, e.params)
                                for e in exc.errors]) from None

    status = run(go)
    click.echo(f"linked WeChat Pay merchant {status.mchid} (app {status.app_id}) to {slug}")
    for k in status.keys:
        click.echo(f"key:        {k.key_id} ({k.kind.replace('_', ' ')})")
    click.echo(f"notify_url: {merchants.notify_url(get_settings().public_base_url, slug)}")


# --- users and API keys ------------------------------------------------------------------------------

@main.group()
def user() -> None:
    """Staff accounts."""


@user.command("create")
@click.option("--tenant", "slug", default="", help="Tenant slug (omit for --role platform_admin)")
@click.option("--email", required=True)
@click.option("--role", required=True, type=click.Choice(["agent", "tenant_admin", "platform_admin"]))
@click.option("--password", default="", help="Generated and printed when omitted")
@click.option("--name", default="")
def user_create(slug: str, email: str, role: str, password: str, name: str) -> None:
    import secrets as _secrets

    from siyu.tenants import services as svc
    from siyu.tenants import staff as staff_svc

    generated = not password
    password = password or _secrets.token_urlsafe(12)
    if role != "platform_admin" and not slug:
        click.echo("error: --tenant: required for agents and tenant admins", err=True)
        sys.exit(2)

    async def go() -> Any:
        tenant_id = (await svc.get_tenant_by_slug(slug)).id if slug else None
        return await staff_svc.do_create_staff(svc.Actor.cli(), tenant_id, email, role, password, name=name)

    s = run(go)
    click.echo(f"created {role} {s.email} (id {s.id})")
    if generated:
        click.echo(f"password: {password}")


@main.group()
def purchases() -> None:
    """Purchases: import a brand's order history."""


@purchases.command("import")
@click.argument("slug")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--encoding", default="auto", show_default=True, type=click.Choice(["auto", "utf-8", "gb18030"]),
              help="The file's text encoding (auto: UTF-8 unless it cannot be, then GB18030).")
@click.option("--errors", "errors_file", type=click.Path(dir_okay=False, writable=True, path_type=Path), default=None,
              help="Write the problems found (line, column, problem) to this CSV file.")
def purchases_import(slug: str, file: Path, encoding: str, errors_file: Path | None) -> None:
    """Import orders from a CSV FILE, one line per order line (docs/purchase-import.md).

    Safe to run again: orders imported before change nothing, and an import that stopped (a crash, Ctrl-C)
    continues where it was. Exit code 1 when some orders were left out for errors."""
    from siyu.commerce import import_file, imports
    from siyu.tenants import services as svc

    bar: Any = None
    shown = {"status": ""}
    words = {"staging": "reading the file", "checking": "checking its lines", "importing": "importing orders",
             "merging": "merging orders other sources reported"}

    def progress(p: Any) -> None:
        nonlocal bar
        if p.status != shown["status"] and p.status in words:
            shown["status"] = p.status
            if p.status in ("importing", "merging") and bar is None and p.lines_total:
                click.echo(f"{p.lines_total:,} lines, {p.orders_total:,} orders")
                bar = click.progressbar(length=p.lines_total, label="importing", show_pos=True, show_percent=True)
                bar.__enter__()
            elif bar is None:
                click.echo(f"{words[p.status]}…")
        if bar is not None:
            bar.update(p.lines_done - bar.pos)

    async def go() -> Any:
        from siyu.core import db

        await db.start_pool(min_size=1, max_size=4)
        try:
            t = await svc.get_tenant_by_slug(slug)
            done = await imports.import_path(t.id, file, svc.Actor.cli(), encoding, progress)
            found = await imports.problems(t.id, done.id, limit=20)
            if errors_file is not None:
                with open(errors_file, "wb") as fh:
                    async for chunk in imports.report_csv(t.id, done.id):
                        fh.write(chunk)
            return done, found
        finally:
            await db.close_pool()

    click.echo(f"importing {file.name} into {slug}…")
    try:
        done, found = run(go)
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)
    if done.status == "failed":
        click.echo(f"error: {done.failure_message()}", err=True)
        sys.exit(2)
    click.echo(f"done: {done.orders_done:,} orders from {done.lines_total:,} lines: {done.created:,} new purchases, "
               f"{done.merged:,} added to orders Siyu knew, {done.unchanged:,} imported before (unchanged), "
               f"{done.failed_orders:,} left out")
    for r in found:
        column = f", {r['column_name']}" if r["column_name"] else ""
        click.echo(f"  line {r['line']}{column}: {import_file.message(r['code'], r['detail'])}")
    if done.error_lines > len(found):
        click.echo(f"  … {done.error_lines - len(found):,} more problem(s)"
                   + (f" in {errors_file}" if errors_file else " (use --errors FILE.csv for all of them)"))
    if done.failed_orders:
        sys.exit(1)


@main.group()
def apikey() -> None:
    """API keys for a tenant's JSON API."""


@apikey.command("create")
@click.argument("slug")
@click.option("--name", default="", help="What the key is for")
def apikey_create(slug: str, name: str) -> None:
    """Print a new key once (only its hash is stored)."""
    from siyu.tenants import services as svc

    async def go() -> tuple[int, str]:
        t = await svc.get_tenant_by_slug(slug)
        return await svc.do_create_api_key(svc.Actor.cli(), t.id, name)

    _, key = run(go)
    click.echo(key)


@main.group()
def secrets() -> None:
    """Secrets at rest."""


@secrets.command("rotate")
def secrets_rotate() -> None:
    """Re-encrypt every stored secret under the current SIYU_SECRET_KEY.

    Rotation: set the new key in SIYU_SECRET_KEY and the old one in SIYU_PREVIOUS_SECRET_KEYS, run this,
    then drop the old key. In development (no SIYU_SECRET_KEY set) a new key is generated under the
    data dir and the old one is kept as a previous key until this command has run.
    """
    from siyu.core.settings import get_settings, reset_settings
    from siyu.tenants import services as svc

    s = get_settings()
    if not os.environ.get("SIYU_SECRET_KEY") and s.is_development:
        _rotate_dev_key(s.data_dir)
        reset_settings()
    rotated, current = run(svc.do_rotate_secrets)
    click.echo(f"re-encrypted {rotated} account(s); {current} already under the current key")
    from siyu.commerce import merchants

    rotated, current = run(merchants.do_rotate_secrets)
    click.echo(f"re-encrypted {rotated} WeChat Pay APIv3 key(s); {current} already under the current key")


def _rotate_dev_key(data_dir: Any) -> None:
    import secrets as _secrets

    key_file = data_dir / "secret_key"
    previous = data_dir / "secret_key.previous"
    old = key_file.read_text().strip()
    with open(previous, "a") as fh:
        fh.write(old + "\n")
    os.chmod(previous, 0o600)
    tmp = data_dir / "secret_key.new"
    tmp.write_text(_secrets.token_urlsafe(48) + "\n")
    os.chmod(tmp, 0o600)
    tmp.replace(key_file)
    click.echo(f"generated a new development key in {key_file}")


# --- processes ---------------------------------------------------------------------------------------

@main.command()
def migrate() -> None:
    """Apply pending database migrations."""
    from siyu.core import db

    run(lambda: db.migrate(click.echo))


@main.command()
@click.option("--host", default=None, help="Default SIYU_HOST")
@click.option("--port", default=None, type=int, help="Default SIYU_PORT")
@click.option("--workers", default=None, type=int, help="Default SIYU_WEB_WORKERS")
def web(host: str | None, port: int | None, workers: int | None) -> None:
    """Serve the web app with granian."""
    from granian import Granian
    from granian.constants import Interfaces

    from siyu.core.embedded import database_url, redis_url
    from siyu.core.settings import get_settings

    s = get_settings()
    database_url()
    redis_url()
    Granian("siyu.app:create_app", factory=True, interface=Interfaces.ASGI, address=host or s.host,
            port=port or s.port, workers=workers or s.web_workers, log_access=False,
            workers_kill_timeout=s.web_stop_seconds).serve()


@main.command()
@click.option("--burst", is_flag=True, help="Run queued jobs, then exit")
@click.option("--lane", type=click.Choice(["main", "engagement"]), default="main", show_default=True,
              help="engagement: re-engagement's sends only (with SIYU_ENGAGEMENT_LANE=1), niced further")
def worker(burst: bool, lane: str) -> None:
    """Run the arq worker (it rides out Redis outages: see siyu.worker.run)."""
    from siyu import worker as worker_root
    from siyu.core.embedded import database_url, redis_url
    from siyu.core.settings import get_settings

    database_url()
    redis_url()
    nice = get_settings().worker_nice + (5 if lane == "engagement" else 0)
    if nice:
        os.nice(nice)  # jobs yield the CPU to the web process (answers to WeChat and to reps come first)
    asyncio.run(worker_root.run(burst, lane))


@main.command()
@click.option("--host", default="127.0.0.1")
@click.option("--port", default=8900, type=int)
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path), envvar="SIYU_SIMULATOR_STATE_DIR",
              help="Keep the simulator's memory here across restarts (default: in memory only).")
def simulator(host: str, port: int, state_dir: Path | None) -> None:
    """Serve the WeChat simulator (API roots /wechat-api and /wecom-api)."""
    from granian import Granian
    from granian.constants import Interfaces

    from siyu.simulator import persist

    if state_dir is not None:
        state_dir = state_dir.expanduser().resolve()
        os.environ[persist.STATE_DIR_ENV] = str(state_dir)  # for the app factory in granian's worker
        persist.announce(state_dir, host, port)
    try:
        Granian("siyu.simulator.app:create_simulator", factory=True, interface=Interfaces.ASGI, address=host,
                port=port, workers=1, log_access=False).serve()
    finally:
        if state_dir is not None:
            persist.retract(state_dir)


main.add_command(__import__("siyu.simulator.cli", fromlist=["simulate"]).simulate)  # `siyu simulate …`


@main.command("seed-demo")
def seed_demo() -> None:
    """Create the demo brand (idempotent) and print its logins."""
    from siyu.core.settings import get_settings
    from siyu.tenants.demo import seed_demo as seed

    result = run(lambda: seed(get_settings().data_dir))
    for email, password in result["logins"].items():
        click.echo(f"  {email:<28} {password}")


@main.command("run")
def run_all() -> None:
    """Everything for development: embedded PostgreSQL + Redis, migrations, demo, web, worker, simulator."""
    from siyu.runner import main as runner_main

    runner_main()
