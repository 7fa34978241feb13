"""Test servers and fixtures: real PostgreSQL and Redis (throwaway embedded ones unless DATABASE_URL /
REDIS_URL are set), the WeChat simulator as a real HTTP server, and two named tenants: acme and globex.

The environment is prepared in `pytest_configure`, before any Siyu module reads its settings.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]
T = TypeVar("T")
_state: dict[str, Any] = {}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_http(url: str, proc: subprocess.Popen[Any], seconds: float = 30) -> None:
    from siyu.core.processes import wait_http

    if not wait_http(url, seconds, [proc]):
        raise RuntimeError(f"{url} did not answer within {seconds} s (process exit code: {proc.poll()})")


def _admin_sql(server_url: str, statement: str) -> None:
    """One statement on a user-provided server's maintenance connection (CREATE/DROP DATABASE)."""
    import asyncpg

    async def go() -> None:
        conn = await asyncpg.connect(server_url)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    asyncio.run(go())


def _create_test_database(server_url: str) -> tuple[str, str]:
    """On a user-provided server, work in a fresh database that is dropped afterwards."""
    name = f"siyu_test_{secrets.token_hex(4)}"
    _admin_sql(server_url, f'CREATE DATABASE "{name}"')
    prefix, _, query = server_url.partition("?")
    base = prefix.rsplit("/", 1)[0]
    return f"{base}/{name}" + (f"?{query}" if query else ""), name


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get("PYTEST_XDIST_WORKER"):
        raise pytest.UsageError("this suite shares one database per run; run it without xdist")
    tmp = Path(tempfile.mkdtemp(prefix="siyu-test-"))
    _state["tmp"] = tmp
    os.environ["SIYU_ENV"] = "test"
    os.environ["SIYU_DATA_DIR"] = str(tmp / "data")
    os.environ["SIYU_SECRET_KEY"] = "test-secret-key-" + "x" * 40
    os.environ.pop("SIYU_PREVIOUS_SECRET_KEYS", None)
    os.environ.pop("SIYU_SIMULATOR_STATE_DIR", None)  # the suite's simulators keep their memory in memory
    os.environ["SIYU_PUBLIC_BASE_URL"] = "https://siyu.test"
    os.environ["SIYU_LOG_LEVEL"] = "WARNING"
    os.environ.setdefault("SIYU_LOGIN_MAX_FAILURES_ACCOUNT", "5")
    os.environ.setdefault("SIYU_LOGIN_MAX_FAILURES_IP", "30")
    os.environ["PICCOLO_CONF"] = "siyu.piccolo_conf"

    from siyu.core.embedded import start_postgres, start_redis

    if os.environ.get("DATABASE_URL"):
        url, name = _create_test_database(os.environ["DATABASE_URL"])
        _state["external_db"] = (os.environ["DATABASE_URL"], name)
        os.environ["DATABASE_URL"] = url
    else:
        os.environ["DATABASE_URL"] = start_postgres(tmp / "pg", cleanup_mode="delete")
    if os.environ.get("REDIS_URL"):
        # A server of the user's own: work in database 15, which the tests flush.
        from urllib.parse import urlsplit, urlunsplit

        parts = urlsplit(os.environ["REDIS_URL"])
        os.environ["REDIS_URL"] = urlunsplit(parts._replace(path="/15"))
    else:
        url, proc = start_redis(tmp / "valkey", persist=False)
        _state["valkey"] = proc
        os.environ["REDIS_URL"] = url

    port = _free_port()
    sim = subprocess.Popen(
        [sys.executable, "-m", "siyu", "simulator", "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ),
    )
    _state["simulator"] = sim
    _state["simulator_base"] = f"http://127.0.0.1:{port}"
    os.environ["WECHAT_API_BASE"] = f"http://127.0.0.1:{port}/wechat-api"
    os.environ["WECOM_API_BASE"] = f"http://127.0.0.1:{port}/wecom-api"
    _wait_http(f"http://127.0.0.1:{port}/_sim/health", sim)

    from siyu.core import db

    asyncio.run(db.migrate())


def pytest_unconfigure(config: pytest.Config) -> None:
    from siyu.core.processes import stop_processes

    stop_processes([p for p in (_state.get("valkey"), _state.get("simulator")) if p is not None])
    if "external_db" in _state:
        server_url, name = _state["external_db"]
        _admin_sql(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    from siyu.core.embedded import stop_postgres

    stop_postgres()  # before its data directory is removed, or the server outlives the run
    shutil.rmtree(_state.get("tmp", "/nonexistent"), ignore_errors=True)


# --- per-test isolation: empty tables, empty Redis, a fresh simulator -----------------------------

# Every table but Piccolo's migration record is emptied and every sequence restarted before each test. DELETE
# with the foreign-key triggers off (session_replication_role, which a superuser may set: the embedded server's
# user is one) costs a few milliseconds when the tables are small, as they are in tests; TRUNCATE costs 100-500 ms
# (a new file per table), which over two thousand tests added minutes to the suite.
WIPE = """
DO $wipe$
DECLARE name text;
BEGIN
    SET LOCAL session_replication_role = replica;
    FOR name IN SELECT c.oid::regclass::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE n.nspname = 'public' AND c.relkind = 'r' AND c.relname <> 'migration' LOOP
        EXECUTE 'DELETE FROM ' || name;
    END LOOP;
    FOR name IN SELECT c.oid::regclass::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE n.nspname = 'public' AND c.relkind = 'S' LOOP
        PERFORM setval(name, 1, false);
    END LOOP;
END $wipe$
"""

# A user-provided server whose user may not turn the triggers off: TRUNCATE, slower but the same result.
TRUNCATE_ALL = """
DO $wipe$
BEGIN
    EXECUTE (SELECT 'TRUNCATE ' || string_agg(c.oid::regclass::text, ', ') || ' RESTART IDENTITY CASCADE'
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = 'public' AND c.relkind = 'r' AND c.relname <> 'migration');
END $wipe$
"""


# --- built once, restored after: the rich worlds of the route matrices -----------------------------------

_SNAPSHOTS: dict[str, Any] = {}

async def _public_tables() -> list[str]:
    from siyu.core import db

    if "tables" not in _state:
        _state["tables"] = [r["name"] for r in await db.fetch(
            "SELECT c.relname AS name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND c.relkind = 'r' AND c.relname <> 'migration' "
            "AND c.relname !~ '^commerce_import_[0-9]' ORDER BY 1")]  # (not an import's staging)
    return list(_state["tables"])


async def _fingerprint() -> str:
    """A digest of every row of every table and every sequence's position."""
    from siyu.core import db

    digests = " UNION ALL ".join(
        f"SELECT {i} AS i, md5(coalesce(string_agg(t::text, ',' ORDER BY t::text), '')) AS h FROM public.\"{name}\" t"
        for i, name in enumerate(await _public_tables()))
    row = await db.fetchrow(f"SELECT (SELECT md5(string_agg(h, ',' ORDER BY i)) FROM ({digests}) d) AS rows, "
                            "(SELECT string_agg(format('%s=%s', sequencename, last_value), ',' ORDER BY sequencename) "
                            "FROM pg_sequences WHERE schemaname = 'public') AS sequences")
    return f"{row['rows']}|{row['sequences']}"


async def built_once(name: str, build: Callable[[], Awaitable[T]]) -> T:
    """What `build` makes in the database, made for real by the first test that asks and restored (rows and
    sequences) for the next tests that ask after the same steps: deterministic fixtures that need a rich world
    (the route matrices: hundreds of tests on two seeded brands) then cost milliseconds instead of half a second.

    A test's steps form a chain from the empty database (the `clean` fixture): "tenant acme, then tenant globex,
    then the seeded acme". A snapshot is used only while the database is exactly as the previous step left it
    (same digest of every row): anything the test wrote in between (an API key, a setting) makes this and its
    later steps build for real. Only PostgreSQL is restored: a build whose tests need what it put in Redis or
    the simulator must not use this."""
    from siyu.core import db

    chain, left = _state["chain"]
    if chain is None or await _fingerprint() != left:
        _state["chain"] = (None, "")  # the test wrote something of its own: no snapshot fits from here on
        return await build()
    key = f"{chain}/{name}"
    if key not in _SNAPSHOTS:
        value = await build()
        schema = f"snap_{len(_SNAPSHOTS)}"
        await db.execute(f"CREATE SCHEMA {schema}")
        tables = await _public_tables()
        for table in tables:
            await db.execute(f'CREATE UNLOGGED TABLE {schema}."{table}" AS SELECT * FROM public."{table}"')
        sequences = [(r["name"], int(r["last"]), bool(r["called"])) for r in await db.fetch(
            "SELECT format('%I.%I', schemaname, sequencename) AS name, coalesce(last_value, start_value) AS last, "
            "last_value IS NOT NULL AS called FROM pg_sequences WHERE schemaname = 'public'")]
        _SNAPSHOTS[key] = (value, schema, tables, sequences, await _fingerprint())
    else:
        value, schema, tables, sequences, _ = _SNAPSHOTS[key]
        restore = [f'DELETE FROM public."{t}";' for t in tables]
        restore += [f'INSERT INTO public."{t}" SELECT * FROM {schema}."{t}";' for t in tables]
        restore += [f"PERFORM setval('{seq}', {last}, {str(called).lower()});" for seq, last, called in sequences]
        await db.execute("DO $restore$ BEGIN SET LOCAL session_replication_role = replica; "
                         f"{' '.join(restore)} END $restore$")
    _state["chain"] = (key, _SNAPSHOTS[key][4])
    return value  # type: ignore[no-any-return]


@pytest.fixture(scope="session")
async def pool() -> AsyncIterator[None]:
    from siyu.core import db

    await db.start_pool(min_size=1, max_size=10)
    yield
    await db.close_pool()


@pytest.fixture(scope="session")
async def redis() -> AsyncIterator[Any]:
    from siyu.core.redis import connect

    client = connect()
    yield client
    await client.aclose()


@pytest.fixture(autouse=True)
async def clean(pool: None, redis: Any) -> AsyncIterator[None]:
    import asyncpg

    from siyu.commerce.merchants import forget_configs
    from siyu.commerce.notify import forget_fresh_looks
    from siyu.core import db
    from siyu.wechat.services import forget_cached

    try:
        await db.execute(_state.setdefault("wipe", WIPE))
    except asyncpg.InsufficientPrivilegeError:
        _state["wipe"] = TRUNCATE_ALL
        await db.execute(TRUNCATE_ALL)
    if "empty" not in _state:
        _state["empty"] = await _fingerprint()
    _state["chain"] = ("", _state["empty"])  # built_once's steps start from the empty database
    forget_cached()
    forget_configs()
    forget_fresh_looks()
    await redis.flushdb()
    httpx.post(f"{_state['simulator_base']}/_sim/reset", timeout=5).raise_for_status()
    yield


@pytest.fixture(autouse=True)
def quick_password_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Real argon2id with small costs: the production costs take a quarter second per hash, and most
    fixtures create or sign in people. tests/unit/tenants checks the production parameters."""
    from argon2 import PasswordHasher

    from siyu.tenants import staff as staff_svc

    monkeypatch.setattr(staff_svc, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))


@pytest.fixture(scope="session")
def simulator_base() -> str:
    return str(_state["simulator_base"])


@pytest.fixture
def sim(simulator_base: str) -> Simulator:
    return Simulator(simulator_base)


class Simulator:
    """Drives the WeChat simulator's control API (docs/simulator.md)."""

    def __init__(self, base: str) -> None:
        self.base = base

    def _post(self, path: str, body: dict[str, Any]) -> Any:
        r = httpx.post(f"{self.base}{path}", json=body, timeout=30)
        r.raise_for_status()
        return r.json()

    def _get(self, path: str, **params: Any) -> Any:
        r = httpx.get(f"{self.base}{path}", params={k: v for k, v in params.items() if v is not None}, timeout=30)
        r.raise_for_status()
        return r.json()

    def register(self, kind: str, app_id: str, secret: str, ip_whitelisted: bool = True, **extra: Any) -> None:
        self._post("/_sim/apps", {"kind": kind, "app_id": app_id, "secret": secret,
                                  "ip_whitelisted": ip_whitelisted, **extra})

    def faults(self, app_id: str, *errcodes: int, **extra: Any) -> None:
        self._post(f"/_sim/apps/{app_id}/faults", {"errcodes": list(errcodes), **extra})

    def tokens(self, app_id: str, action: str) -> Any:
        return self._post(f"/_sim/apps/{app_id}/tokens", {"action": action})

    def push(self, app_id: str, person: str, action: str, **fields: Any) -> Any:
        return self._post("/_sim/push", {"app_id": app_id, "person": person, "action": action, **fields})

    def messages(self, **filters: Any) -> list[dict[str, Any]]:
        return list(self._get("/_sim/messages", **filters))

    def refusals(self, **filters: Any) -> list[dict[str, Any]]:
        return list(self._get("/_sim/refusals", **filters))

    def stats(self) -> dict[str, Any]:
        return dict(self._get("/_sim/stats"))

    def clock(self, advance_seconds: int) -> Any:
        return self._post("/_sim/clock", {"advance_seconds": advance_seconds})


@dataclass(frozen=True)
class WebServer:
    base_url: str
    port: int
    log: Path


@pytest.fixture(scope="session")
def web_server() -> Iterator[WebServer]:
    """`python -m siyu web` on a free port, against the suite's database and Redis."""
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    env = dict(os.environ)
    env["SIYU_PUBLIC_BASE_URL"] = base
    log_fd, log_name = tempfile.mkstemp(prefix="siyu-e2e-web-", suffix=".log")
    log = Path(log_name)
    proc = subprocess.Popen(
        [sys.executable, "-m", "siyu", "web", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        stdout=log_fd, stderr=subprocess.STDOUT, env=env,
    )
    os.close(log_fd)
    try:
        try:
            _wait_http(f"{base}/healthz", proc, seconds=60)
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}; server output:\n{log.read_text(errors='replace')}") from exc
        yield WebServer(base, port, log)
    finally:
        from siyu.core.processes import stop_processes

        stop_processes([proc], timeout=15)
        log.unlink(missing_ok=True)


# --- the app and clients ----------------------------------------------------------------------------

@pytest.fixture(scope="session")
async def app(pool: None) -> AsyncIterator[Any]:
    from asgi_lifespan import LifespanManager

    from siyu.app import create_app

    application = create_app()
    async with LifespanManager(application):
        yield application


class Client(httpx.AsyncClient):
    """An httpx client for the app that keeps the CSRF token of the pages it has seen."""

    csrf: str = ""

    async def prime(self) -> None:
        if not self.csrf:
            await self.get("/login")
            self.csrf = self.cookies.get("siyu_csrf") or ""

    async def form(self, url: str, data: dict[str, Any] | None = None, htmx: bool = False,
                   **kw: Any) -> httpx.Response:
        await self.prime()
        headers = {"x-csrftoken": self.csrf, **kw.pop("headers", {})}
        if htmx:
            headers["HX-Request"] = "true"
        return await self.post(url, data=data or {}, headers=headers, **kw)

    async def hx_get(self, url: str, **kw: Any) -> httpx.Response:
        return await self.get(url, headers={"HX-Request": "true", **kw.pop("headers", {})}, **kw)

    async def login(self, email: str, password: str) -> httpx.Response:
        await self.prime()
        return await self.post("/login", data={"email": email, "password": password, "_csrf_token": self.csrf})


@pytest.fixture
async def client_factory(app: Any) -> AsyncIterator[Any]:
    clients: list[Client] = []

    def make() -> Client:
        c = Client(transport=httpx.ASGITransport(app=app, client=("10.9.8.7", 40000)), base_url="https://siyu.test",
                   follow_redirects=False, headers={"Accept-Language": "en"})
        clients.append(c)
        return c

    yield make
    for c in clients:
        await c.aclose()


@pytest.fixture
async def client(client_factory: Any) -> Client:
    return client_factory()


# --- two named tenants --------------------------------------------------------------------------------

PASSWORD = "correct horse battery"


@dataclass
class TenantFixture:
    id: int
    slug: str
    admin_email: str
    agent_email: str
    admin_id: int
    agent_id: int


async def make_tenant(slug: str, name: str) -> TenantFixture:
    return await built_once(f"tenant:{slug}:{name}", lambda: _make_tenant(slug, name))


async def _make_tenant(slug: str, name: str) -> TenantFixture:
    from siyu.tenants import services as svc
    from siyu.tenants import staff as staff_svc

    actor = svc.Actor.cli()
    t = await svc.do_create_tenant(actor, {"slug": slug, "name": name})
    admin = await staff_svc.do_create_staff(actor, t.id, f"admin@{slug}.test", "tenant_admin", PASSWORD,
                                            name=f"{name} Admin")
    agent = await staff_svc.do_create_staff(actor, t.id, f"agent@{slug}.test", "agent", PASSWORD,
                                            name=f"{name} Agent")
    return TenantFixture(t.id, slug, admin.email, agent.email, admin.id, agent.id)


@pytest.fixture
async def acme() -> TenantFixture:
    return await make_tenant("acme", "Acme")


@pytest.fixture
async def globex() -> TenantFixture:
    return await make_tenant("globex", "Globex")


@pytest.fixture
async def platform_admin_email() -> str:
    from siyu.tenants import services as svc
    from siyu.tenants import staff as staff_svc

    s = await staff_svc.do_create_staff(svc.Actor.cli(), None, "root@siyu.test", "platform_admin", PASSWORD)
    return s.email


async def signed_in(client_factory: Any, email: str) -> Client:
    c = client_factory()
    r = await c.login(email, PASSWORD)
    assert r.status_code == 302, r.text
    return c


@pytest.fixture
async def acme_admin(client_factory: Any, acme: TenantFixture) -> Client:
    return await signed_in(client_factory, acme.admin_email)


@pytest.fixture
async def acme_agent(client_factory: Any, acme: TenantFixture) -> Client:
    return await signed_in(client_factory, acme.agent_email)


@pytest.fixture
async def globex_admin(client_factory: Any, globex: TenantFixture) -> Client:
    return await signed_in(client_factory, globex.admin_email)


@pytest.fixture
async def root(client_factory: Any, platform_admin_email: str) -> Client:
    return await signed_in(client_factory, platform_admin_email)


# Valid credentials for linking accounts in tests.
OA = {"app_id": "wx0123456789abcdef", "app_secret": "oaSecret0123456789abcdef01234567", "token": "AcmeToken123",
      "aes_key": "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG", "mode": "safe", "oa_kind": "service"}
MP = {"app_id": "wxfedcba9876543210", "app_secret": "mpSecret0123456789abcdef01234567", "token": "AcmeMpToken1",
      "aes_key": "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdefg", "push_format": "json"}
WECOM = {"corp_id": "ww00112233445566aa", "agent_id": "1000002", "secret": "wecomSecret_0123456789abcdefABCDEF0123456",
         "token": "AcmeWecomToken", "aes_key": "0123456789abcdefghijABCDEFGHIJklmnopqrstUVW", "kf_enabled": "1"}


@pytest.fixture(scope="session")
def root_dir() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def subprocess_env() -> Iterator[dict[str, str]]:
    yield dict(os.environ)


def batch_sizes(monkeypatch: pytest.MonkeyPatch, writer: Any, max_wait: float = 0.05) -> list[int]:
    """The sizes of the batches a group-commit writer (siyu.core.groupcommit) writes from now on, waiting
    `max_wait` seconds for company so that what a test sends at once is written together."""
    sizes: list[int] = []
    real = writer._write

    async def counted(items: list[Any]) -> Any:
        sizes.append(len(items))
        return await real(items)

    monkeypatch.setattr(writer, "_write", counted)
    monkeypatch.setattr(writer, "max_wait", max_wait)
    return sizes
