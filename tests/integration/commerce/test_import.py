"""History import of past orders (docs/purchase-import.md): from the CLI and the upload page, the same file
twice changes nothing, an import that stopped carries on, problems are reported by line and column, orders
other sources reported are merged through the purchases' writer, and history never wakes re-engagement."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from arq.jobs import Job

from siyu.commerce import buyers, import_file, imports, purchases, stats
from siyu.core import db, effects
from siyu.core.errors import InvalidInput
from siyu.core.redis import JOB_SERIALIZATION
from siyu.tenants import services as tenants
from tests.conftest import MP, Client, TenantFixture
from tests.integration.commerce.conftest import ACTOR, run_jobs

pytestmark = pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning")
APP = MP["app_id"]
HEAD = "order_id,paid_at,amount_fen,sku,name,quantity,unit_price_fen,openid,app_id,refund_id,refunded_fen,refunded_at\n"
SH = ZoneInfo("Asia/Shanghai")

# Two good orders (A1 has two lines and a refund), one with an amount that is not fen (line 5).
GOOD = (HEAD
        + f"A1,2024-01-02 10:00:00,5000,S1,Candle,1,3000,oBuyer000001,{APP},,,\n"
        + f"A1,2024-01-02 10:00:00,5000,S2,Snuffer,1,2000,oBuyer000001,{APP},R1,2000,2024-01-05 10:00:00\n"
        + f"A2,2024-02-02T10:00:00+08:00,3000,S1,Candle,1,3000,oBuyer000002,{APP},,,\n"
        + f"A3,2024-02-02T10:00:00+08:00,12.50,S1,Candle,1,3000,oBuyer000002,{APP},,,\n")


@pytest.fixture
async def mp(acme: TenantFixture) -> TenantFixture:
    await tenants.do_link_channel(ACTOR, acme.id, "mp", MP)
    return acme


def write(tmp_path: Path, text: str | bytes, name: str = "orders.csv") -> Path:
    f = tmp_path / name
    f.write_bytes(text.encode() if isinstance(text, str) else text)
    return f


async def snapshot(tenant_id: int) -> str:
    """Everything an import writes, as text (ids and times included), to show a re-run changed nothing."""
    parts = []
    for table in ("commerce_purchase", "commerce_refund", "commerce_product", "commerce_contact_stats",
                  "timeline_event", "contact", "identity"):
        rows = await db.fetch(f"SELECT * FROM {table} WHERE tenant = $1 ORDER BY id", tenant_id) \
            if table not in ("commerce_product", "commerce_contact_stats") else \
            await db.fetch(f"SELECT * FROM {table} WHERE tenant = $1 ORDER BY 1, 2, 3", tenant_id)
        parts.append(json.dumps([dict(r) for r in rows], default=str, sort_keys=True))
    return "\n".join(parts)


async def queued_jobs(arq: Any) -> list[str]:
    """The names of the jobs waiting in arq's queue."""
    await effects.flush()
    names = []
    for job_id in await arq.zrange("arq:queue", 0, -1):
        info = await Job(job_id.decode(), arq, _deserializer=JOB_SERIALIZATION["job_deserializer"]).info()
        names.append(info.function if info else "?")
    return names


async def count(sql: str, *args: Any) -> int:
    return int((await db.fetchrow(f"SELECT count(*) AS n FROM {sql}", *args))["n"])


def said(problems: list[dict[str, Any]]) -> list[tuple[int, str, str]]:
    return [(p["line"], p["column_name"], p["code"]) for p in problems]


# --- the CLI's import ----------------------------------------------------------------------------------------

async def test_import_creates_purchases_refunds_timeline_and_figures_and_the_same_file_again_changes_nothing(
        mp: TenantFixture, tmp_path: Path, effects_pool: Any) -> None:
    f = write(tmp_path, GOOD)
    seen: list[imports.Progress] = []
    done = await imports.import_path(mp.id, f, ACTOR, progress=seen.append)
    assert (done.status, done.lines_total, done.orders_total) == ("done", 4, 3)
    assert (done.created, done.unchanged, done.failed_orders, done.refunds) == (2, 0, 1, 1)
    assert [s.status for s in seen][:2] == ["staging", "importing"] and seen[-1].lines_done == 4
    assert said(await imports.problems(mp.id, done.id)) == [(5, "amount_fen", "whole_fen")]

    a1 = await purchases.get_by_order(mp.id, "A1")
    assert (a1["amount_fen"], a1["refunded_fen"], a1["sources"]) == (5000, 2000, ["import"])
    assert [i["sku"] for i in a1["items"]] == ["S1", "S2"]
    assert a1["paid_at"] == datetime(2024, 1, 2, 10, tzinfo=SH)  # no offset: the brand's time zone
    with pytest.raises(Exception):  # noqa: B017 (NotFound: the order with a problem is left out whole)
        await purchases.get_by_order(mp.id, "A3")
    events = await db.fetch("SELECT kind, contact, payload::text AS p FROM timeline_event WHERE tenant = $1 "
                            "AND kind IN ('purchase', 'refund') ORDER BY occurred_at", mp.id)
    assert [e["kind"] for e in events] == ["purchase", "refund", "purchase"]
    assert '"source": "import"' in events[0]["p"]
    buyer1 = await buyers.by_openid(mp.id, APP, "oBuyer000001", datetime.now(SH))
    fig = await stats.figures(mp.id, buyer1.contact_id or 0)
    assert (fig.orders, fig.spent_fen, fig.skus) == (1, 3000, ["S1", "S2"])
    products = {r["sku"]: r["name"] for r in await db.fetch("SELECT sku, name FROM commerce_product WHERE tenant = $1",
                                                            mp.id)}
    assert products == {"S1": "Candle", "S2": "Snuffer"}

    before = await snapshot(mp.id)
    again = await imports.import_path(mp.id, f, ACTOR)
    assert (again.status, again.created, again.unchanged, again.merged, again.failed_orders) == ("done", 0, 2, 0, 1)
    assert await snapshot(mp.id) == before
    # History is not news: nothing was queued for re-engagement (or anything else).
    assert await queued_jobs(effects_pool) == []


async def test_problems_are_named_by_line_and_column_and_their_orders_are_left_out_whole(
        mp: TenantFixture, tmp_path: Path) -> None:
    f = write(tmp_path, HEAD
              + f"B1,yesterday,100,S1,,1,,oBuyer000001,{APP},,,\n"                     # 2: paid_at
              + "B2,2024-01-02 10:00:00,100,S1,,1,,oBuyer000001,wx0000000000000bad,,,\n"  # 3: app_id
              + f"B3,2024-01-02 10:00:00,100,S1,,0,,oBuyer000001,{APP},,,\n"           # 4: quantity
              + f"B4,2024-01-02 10:00:00,100,S1,,1,,oBuyer000001,{APP},,,\n"           # 5: fine, but line 6
              + f"B4,2024-01-02 10:00:00,900,S2,,1,,oBuyer000001,{APP},,,\n"           # 6: differs from 5
              + f"B5,2024-01-02 10:00:00,100,S1,,1,,oBuyer000001,{APP},,300,\n"         # 7: refund_id missing
              + f"B6,2024-01-02 10:00:00,100,S1,,1,,,{APP},,,\n"                       # 8: no openid
              + f"B7,2024-01-02 10:00:00,100,S1,,1,,oBuyer000001,{APP},R7,500,2024-01-03 10:00:00\n"  # 9: too much
              + f"B8,2024-01-02 10:00:00,100,S1,Fine,1,,oBuyer000001,{APP},,,\n")      # 10: imported
    done = await imports.import_path(mp.id, f, ACTOR)
    assert (done.status, done.created, done.failed_orders) == ("done", 1, 7)
    found = await imports.problems(mp.id, done.id)
    assert said(found) == [(2, "paid_at", "time"), (3, "app_id", "app_id"), (4, "quantity", "quantity"),
                           (6, "amount_fen", "differs"), (7, "refund_id", "refund_fields"),
                           (8, "app_id", "app_without_openid"), (9, "refunded_fen", "refund_too_much")]
    words = {p["line"]: import_file.message(p["code"], p["detail"]) for p in found}
    assert words[6] == "The lines of one order must agree: this differs from line 5."
    assert "12.50 yuan is 1250" in import_file.message("whole_fen", "")
    assert [r["order_id"] for r in await db.fetch("SELECT order_id FROM commerce_purchase WHERE tenant = $1",
                                                  mp.id)] == ["B8"]


async def test_lines_that_are_not_csv_are_named_and_the_rest_imports(mp: TenantFixture, tmp_path: Path) -> None:
    f = write(tmp_path, HEAD.encode()
              + f"C1,2024-01-02 10:00:00,100,S1,,1,,oBuyer000001,{APP},,,\n".encode()
              + f"C2,2024-01-02 10:00:00,100,S1,,1,,oBuyer000001,{APP},,,,extra\n".encode()   # 3: one too many
              + f"C3,2024-01-02 10:00:00,100,S1,ab\x00c,1,,oBuyer000001,{APP},,,\n".encode()   # 4: NUL
              + f"C4,2024-01-02 10:00:00,100,S1,,1,,oBuyer000001,{APP},,,\n".encode())
    done = await imports.import_path(mp.id, f, ACTOR)
    assert (done.status, done.created, done.lines_total) == ("done", 2, 4)
    assert said(await imports.problems(mp.id, done.id)) == [(3, "", "field_count"), (4, "name", "not_text")]


async def test_a_file_from_a_chinese_spreadsheet_gb18030_is_read(mp: TenantFixture, tmp_path: Path) -> None:
    f = write(tmp_path, (HEAD + f"G1,2024-01-02 10:00:00,100,S1,香薰蜡烛,1,,oBuyer000001,{APP},,,\n").encode("gb18030"))
    done = await imports.import_path(mp.id, f, ACTOR)
    assert (done.status, done.encoding, done.created) == ("done", "gb18030", 1)
    assert (await purchases.get_by_order(mp.id, "G1"))["items"][0]["name"] == "香薰蜡烛"


@pytest.mark.parametrize(("text", "words"), [
    ("", "The file is empty"),
    ("order_id,paid_at,amount_fen,openid,app_id\nX,2024-01-01,1,oBuyer000001,wx\n", "required column sku"),
    ("order_id,paid_at,amount_fen,sku,colour\n", "does not have: colour"),
    ("order_id,paid_at,amount_fen,sku\n", "needs a buyer column"),
])
async def test_a_bad_header_fails_the_import_in_words_and_imports_nothing(
        mp: TenantFixture, tmp_path: Path, text: str, words: str) -> None:
    with pytest.raises(InvalidInput) as exc:
        await imports.import_path(mp.id, write(tmp_path, text), ACTOR)
    assert exc.value.errors[0].field == "file"
    [imp] = await imports.list_imports(mp.id)
    assert imp.status == "failed" and words in imp.failure_message()
    assert said(await imports.problems(mp.id, imp.id))[0][:2] == (1, "")
    assert await count("commerce_purchase") == 0


async def test_an_import_that_stopped_carries_on_where_it_was_and_doubles_nothing(
        mp: TenantFixture, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(imports, "BATCH_LINES", 2)  # a batch per two lines: A1's lines, then A2 and A3
    f = write(tmp_path, GOOD)

    class Crash(Exception):
        pass

    def crash_after_the_first_batch(p: imports.Progress) -> None:
        if p.status == "importing" and p.checkpoint > 0:
            raise Crash()

    with pytest.raises(Crash):
        await imports.import_path(mp.id, f, ACTOR, progress=crash_after_the_first_batch)
    [stopped] = await imports.list_imports(mp.id)
    assert (stopped.status, stopped.checkpoint, stopped.created) == ("importing", 2, 1)
    done = await imports.import_path(mp.id, f, ACTOR)  # the same file: the same import carries on
    assert done.id == stopped.id and (done.status, done.created, done.failed_orders) == ("done", 2, 1)
    rows = await db.fetch("SELECT kind, count(*) AS n FROM timeline_event WHERE tenant = $1 GROUP BY kind "
                          "ORDER BY kind", mp.id)
    assert {r["kind"]: r["n"] for r in rows if r["kind"] in ("purchase", "refund")} == {"purchase": 2, "refund": 1}

    # The staged lines lost (PostgreSQL restarted: unlogged tables come back empty): staged again.
    with pytest.raises(Crash):
        await imports.import_path(mp.id, write(tmp_path, GOOD + f"A9,2024-03-01 10:00:00,700,S9,,1,,oBuyer000003,"
                                                                f"{APP},,,\n", "more.csv"),
                                  ACTOR, progress=crash_after_the_first_batch)
    stopped = (await imports.list_imports(mp.id))[0]
    await import_file.drop(stopped.staging)
    done = await imports.import_path(mp.id, tmp_path / "more.csv", ACTOR)
    assert done.id == stopped.id and (done.status, done.created, done.unchanged) == ("done", 1, 2)
    assert await count("commerce_purchase WHERE tenant = $1", mp.id) == 3


# --- merging with what the backend and WeChat Pay reported; history wakes nothing ------------------------------

async def test_orders_the_backend_reported_are_merged_by_the_writer_and_history_queues_no_job(
        mp: TenantFixture, tmp_path: Path, effects_pool: Any) -> None:
    buyer = await buyers.by_openid(mp.id, APP, "oBuyer000001", datetime.now(SH))
    for order_id, fen in (("M1", 5000), ("M2", 800)):
        await purchases.do_record_payment(mp.id, purchases.Payment(
            source="api", order_id=order_id, amount_fen=fen, currency="CNY", paid_at=datetime(2024, 1, 2, 10, tzinfo=SH),
            items=[{"sku": "S1", "name": "Candle", "quantity": 1, "unit_price_fen": fen}]), buyer)
    await effects.flush()
    await effects_pool.delete("arq:queue")  # what the API's own reports queued is not the import's doing
    f = write(tmp_path, HEAD
              + f"M1,2024-01-02 10:00:00,5000,S1,Candle,1,5000,oBuyer000001,{APP},RM1,1000,2024-01-04 10:00:00\n"
              + f"M2,2024-01-02 10:00:00,900,S1,Candle,1,900,oBuyer000001,{APP},,,\n"
              + f"M3,2024-01-03 10:00:00,400,S1,Candle,1,400,oBuyer000002,{APP},RM3,400,2024-01-04 10:00:00\n")
    done = await imports.import_path(mp.id, f, ACTOR)
    assert (done.created, done.merged, done.failed_orders) == (1, 1, 1)
    assert said(await imports.problems(mp.id, done.id)) == [(3, "amount_fen", "reported_differently")]
    m1 = await purchases.get_by_order(mp.id, "M1")
    assert sorted(m1["sources"]) == ["api", "import"] and m1["refunded_fen"] == 1000
    assert await queued_jobs(effects_pool) == []  # neither the merge, nor the refunds, nor the new order
    again = await imports.import_path(mp.id, f, ACTOR)
    assert (again.created, again.merged, again.unchanged) == (0, 0, 2)


# --- the upload page and its job -----------------------------------------------------------------------------

async def upload(client: Client, text: str, name: str = "orders.csv", **data: str) -> Any:
    await client.prime()
    return await client.post("/purchases/import", data={"_csrf_token": client.csrf, **data},
                             files={"file": (name, text.encode(), "text/csv")})


async def test_an_admin_uploads_a_file_the_job_imports_it_and_the_page_shows_progress_and_problems(
        mp: TenantFixture, acme_admin: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    page = await acme_admin.get("/purchases/import")
    assert page.status_code == 200 and "No imports yet." in page.text
    assert 'href="/purchases/import"' in (await acme_admin.get("/purchases")).text
    monkeypatch.setattr(imports, "BATCH_LINES", 1)
    monkeypatch.setattr(imports, "SLICE_SECONDS", 0.0)  # each job does one batch and hands over to the next
    r = await upload(acme_admin, GOOD)
    assert r.status_code == 303
    url = r.headers["location"]
    waiting = await acme_admin.get(url)
    assert waiting.status_code == 200 and 'hx-trigger="every 1s"' in waiting.text and "<!doctype html>" in waiting.text
    assert await run_jobs() >= 3
    page = await acme_admin.get(url)
    assert 'hx-trigger="every 1s"' not in page.text and "100 %" in page.text
    assert 'id="import-created">2<' in page.text and 'id="import-failed">1<' in page.text
    assert "<td class=\"seg-num\">5</td>" in page.text and "<code>amount_fen</code>" in page.text
    fragment = await acme_admin.hx_get(url)  # htmx polls the progress block only
    assert fragment.status_code == 200 and "<!doctype html>" not in fragment.text and "import-progress" in fragment.text
    report = await acme_admin.get(f"{url}/problems.csv")
    assert report.status_code == 200 and report.headers["content-type"].startswith("text/csv")
    assert report.text.splitlines()[1].startswith("5,amount_fen,Use a whole number of fen")
    assert (await purchases.get_by_order(mp.id, "A1"))["refunded_fen"] == 2000
    assert "orders.csv" in (await acme_admin.get("/purchases/import")).text
    # The job again (a worker that died after finishing): nothing changes.
    imp_id = int(url.rsplit("/", 1)[1])
    before = await snapshot(mp.id)
    assert (await imports.run_import({}, mp.id, imp_id)).startswith("done: 2 created")
    assert await snapshot(mp.id) == before


async def test_the_upload_refuses_no_file_and_bad_encodings_naming_the_field(mp: TenantFixture,
                                                                            acme_admin: Client) -> None:
    await acme_admin.prime()
    r = await acme_admin.post("/purchases/import", data={"_csrf_token": acme_admin.csrf})
    assert r.status_code == 400 and "Choose a CSV file to import." in r.text
    r = await upload(acme_admin, GOOD, encoding="latin-1")
    assert r.status_code == 400 and "Choose one of: auto, utf-8, gb18030." in r.text
    r = await upload(acme_admin, "\x00" * 1000)  # junk: a failed import saying why, not a 500
    assert r.status_code == 303
    page = await acme_admin.get(r.headers["location"])
    assert page.status_code == 200 and "The header names a column this format does not have: ???" in page.text
    assert await imports.list_imports(mp.id) and await run_jobs() == 0
    junk = random.Random(11).randbytes(1024 * 1024)  # 1 MiB of noise under a good header, then alone
    for body in (HEAD.encode() + junk, junk):
        await acme_admin.prime()
        r = await acme_admin.post("/purchases/import", data={"_csrf_token": acme_admin.csrf},
                                  files={"file": ("junk.csv", body, "text/csv")})
        assert r.status_code == 303, r.text[:300]
        assert (await acme_admin.get(r.headers["location"])).status_code == 200
    await run_jobs()
    assert await count("commerce_purchase") == 0
    assert all(i.status in ("done", "failed") for i in await imports.list_imports(mp.id))


async def test_imports_are_for_admins_and_another_tenants_import_is_missing(
        mp: TenantFixture, acme_admin: Client, acme_agent: Client, globex_admin: Client) -> None:
    r = await upload(acme_admin, GOOD)
    url = r.headers["location"]
    for path in ("/purchases/import", url, f"{url}/problems.csv"):
        assert (await acme_agent.get(path)).status_code in (403, 404), path
        if path != "/purchases/import":
            assert (await globex_admin.get(path)).status_code == 404, path
    assert (await upload(acme_agent, GOOD)).status_code in (403, 404)
    assert len(await imports.list_imports(mp.id)) == 1


# --- the command ---------------------------------------------------------------------------------------------

async def test_the_cli_imports_shows_problems_by_line_and_writes_them_all(
        mp: TenantFixture, tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    f = write(tmp_path, GOOD)
    out = subprocess.run([sys.executable, "-m", "siyu", "purchases", "import", "acme", str(f), "--errors",
                          str(tmp_path / "problems.csv")], env=subprocess_env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 1, out.stderr  # an order was left out
    assert "2 new purchases" in out.stdout and "1 left out" in out.stdout
    assert "line 5, amount_fen: Use a whole number of fen" in out.stdout
    assert "5,amount_fen," in (tmp_path / "problems.csv").read_text(encoding="utf-8-sig")
    out = subprocess.run([sys.executable, "-m", "siyu", "purchases", "import", "acme", str(f)], env=subprocess_env,
                         capture_output=True, text=True, timeout=120)
    assert "0 new purchases" in out.stdout and "2 imported before (unchanged)" in out.stdout
    assert await count("commerce_purchase WHERE tenant = $1", mp.id) == 2


async def test_an_import_whose_staged_lines_were_lost_fails_saying_to_import_again(
        mp: TenantFixture, acme_admin: Client) -> None:
    r = await upload(acme_admin, GOOD)
    [imp] = await imports.list_imports(mp.id)
    await import_file.drop(imp.staging)  # PostgreSQL restarted: unlogged tables come back empty
    await run_jobs()
    page = await acme_admin.get(r.headers["location"])
    assert "The file&#39;s lines were lost" in page.text or "The file's lines were lost" in page.text
    assert (await imports.get_import(mp.id, imp.id)).status == "failed" and await count("commerce_purchase") == 0


async def test_the_cli_refuses_a_file_it_cannot_use_naming_it(mp: TenantFixture, tmp_path: Path,
                                                              subprocess_env: dict[str, str]) -> None:
    f = write(tmp_path, "order_id,paid_at,amount_fen,openid,app_id\n")
    out = subprocess.run([sys.executable, "-m", "siyu", "purchases", "import", "acme", str(f)], env=subprocess_env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "error: FILE: The header lacks the required column sku." in out.stderr
    assert "Traceback" not in out.stderr and await count("commerce_purchase") == 0


async def test_the_sweeper_carries_on_a_stalled_import_and_fails_an_abandoned_one(
        mp: TenantFixture, acme_admin: Client, effects_pool: Any) -> None:
    await upload(acme_admin, GOOD)
    await effects_pool.delete("arq:queue")  # the job's enqueue was lost (Redis restarted)
    [stalled] = await imports.list_imports(mp.id)
    abandoned = await imports._new_import(mp.id, "gone.csv", "auto", ACTOR)  # its upload request died while staging
    await db.execute("UPDATE commerce_import SET updated_at = now() - interval '2 hours'")
    assert await imports.sweep_imports({"redis": effects_pool}) == 1
    await run_jobs()
    assert (await imports.get_import(mp.id, stalled.id)).status == "done"
    gone = await imports.get_import(mp.id, abandoned.id)
    assert gone.status == "failed" and "import the file again" in gone.failure_message()
    assert await count("commerce_purchase") == 2
