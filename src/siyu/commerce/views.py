"""Commerce pages for the brand's admins: the WeChat Pay merchant (also a section of the channels page), the
purchases list with its filters and CSV export, and the products with their replenishment intervals; and the
purchase summary the contact page includes.

Views validate and render; the `do_*` services act. Every form keeps `action` and `method`."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from litestar import Controller, Request, get, post
from litestar.datastructures import UploadFile
from litestar.params import FromPath
from litestar.response import Redirect, Stream, Template
from litestar.status_codes import HTTP_303_SEE_OTHER

from siyu.commerce import import_file, imports, listing, merchants, products
from siyu.core import clock, i18n
from siyu.core.errors import InvalidInput
from siyu.core.i18n import N_
from siyu.tenants import services as tenants
from siyu.tenants.services import record_audit
from siyu.web.auth import tenant_admin
from siyu.web.render import current_user, errors_for, render, tenant_scope, toast_header

PAY_FIELDS = ("mch_id", "app_id", "api_v3_key", "public_key", "public_key_id", "platform_cert")


def _slug(request: Request[Any, Any, Any]) -> str:
    user = current_user(request)
    assert user is not None and user.tenant_slug is not None
    return user.tenant_slug


class PaySettingsController(Controller):
    """The tenant's WeChat Pay merchant: `/settings/pay` (the same section as on the channels page)."""

    path = "/settings/pay"
    guards = [tenant_admin]
    include_in_schema = False

    async def _section(self, request: Request[Any, Any, Any], status_code: int = 200,
                       headers: dict[str, str] | None = None, **form: Any) -> Template:
        tid, _ = tenant_scope(request)
        return render(request, "commerce/pay.html", {"pay": await merchants.panel(tid, _slug(request), **form)},
                      block="pay", status_code=status_code, headers=headers)

    @get("/")
    async def page(self, request: Request[Any, Any, Any]) -> Template:
        return await self._section(request)

    @post("/")
    async def save(self, request: Request[Any, Any, Any]) -> Template:
        tid, actor = tenant_scope(request)
        form = await request.form()
        data = {k: str(form.get(k) or "") for k in PAY_FIELDS}
        try:
            await merchants.do_link_pay(actor, tid, data)
        except InvalidInput as exc:
            return await self._section(request, status_code=400, values=data, errors=errors_for(exc))
        return await self._section(request, headers=toast_header(i18n.gettext(N_(
            "Saved. Set the notify_url shown here on your orders; Siyu checks each notification with these keys."))))

    @post("/keys/remove")
    async def remove_key(self, request: Request[Any, Any, Any]) -> Template:
        tid, actor = tenant_scope(request)
        form = await request.form()
        try:
            await merchants.do_remove_key(actor, tid, str(form.get("key_id") or "")[:80])
        except InvalidInput as exc:
            return await self._section(request, status_code=400, errors=errors_for(exc))
        return await self._section(request, headers=toast_header(i18n.gettext(N_("Key removed."))))

    @post("/unlink")
    async def unlink(self, request: Request[Any, Any, Any]) -> Template:
        tid, actor = tenant_scope(request)
        await merchants.do_unlink_pay(actor, tid)
        return await self._section(request, headers=toast_header(i18n.gettext(N_("WeChat Pay merchant unlinked."))))


# --- purchases --------------------------------------------------------------------------------------------------

class PurchasesController(Controller):
    """The tenant's purchases (admins: a list of every customer's orders is the brand's business data)."""

    path = "/purchases"
    guards = [tenant_admin]
    include_in_schema = False

    @get("/")
    async def index(self, request: Request[Any, Any, Any]) -> Template:
        tid, _ = tenant_scope(request)
        query = {k: request.query_params.get(k) or "" for k in ("q", "from", "to", "min", "max", "source",
                                                                  "refunded", "flagged")}
        cursor = request.query_params.get("cursor") or None
        errors: dict[str, str] = {}
        try:
            filters = listing.parse_filters(query)
        except InvalidInput as exc:
            errors, filters = errors_for(exc), listing.Filters()
        zone = (await tenants.get_tenant(tid)).timezone
        rows, next_cursor = await listing.page(tid, filters, zone, cursor, listing.PAGE) if not errors else ([], None)
        shown = filters.as_query()
        more_url = f"/purchases?{urlencode({**shown, 'cursor': next_cursor})}" if next_cursor else None
        return render(request, "commerce/purchases.html", {
            "rows": rows, "more_url": more_url, "form": query, "errors": errors,
            "export_url": f"/purchases/export.csv?{urlencode(shown)}" if shown else "/purchases/export.csv",
        }, block="rows" if cursor else "results", status_code=400 if errors else 200)

    @get("/export.csv")
    async def export(self, request: Request[Any, Any, Any]) -> Stream:
        """Every purchase the filters select, as CSV (audited: customers' orders leave Siyu)."""
        tid, actor = tenant_scope(request)
        filters = listing.parse_filters({k: request.query_params.get(k) or "" for k in
                                         ("q", "from", "to", "min", "max", "source", "refunded", "flagged")})
        zone = (await tenants.get_tenant(tid)).timezone
        await record_audit(actor, tid, "purchases.exported", "purchase", "", {"filters": filters.as_query()})
        stamp = clock.now().strftime("%Y%m%d-%H%M")
        return Stream(listing.export_csv(tid, filters, zone), media_type="text/csv; charset=utf-8",
                      headers={"Content-Disposition": f'attachment; filename="purchases-{stamp}.csv"'})


class ProductsController(Controller):
    path = "/products"
    guards = [tenant_admin]
    include_in_schema = False

    @get("/")
    async def index(self, request: Request[Any, Any, Any]) -> Template:
        tid, _ = tenant_scope(request)
        q = (request.query_params.get("q") or "").strip()[:64]
        after = request.query_params.get("after") or None
        found, next_after = await products.list_products(tid, q, after)
        more_url = f"/products?{urlencode({'q': q, 'after': next_after} if q else {'after': next_after})}" \
            if next_after else None
        block = "rows" if after or request.query_params.get("q") is not None else None
        return render(request, "commerce/products.html", {"products": found, "more_url": more_url, "q": q},
                      block=block)

    @post("/{product_id:int}")
    async def set_days(self, request: Request[Any, Any, Any], product_id: FromPath[int]) -> Template | Redirect:
        tid, actor = tenant_scope(request)
        product = await products.get_product(tid, product_id)  # another tenant's id is a 404 before the form
        form = await request.form()
        raw = str(form.get("replenish_days") or "")
        try:
            product = await products.do_set_replenish_days(tid, product_id, products.parse_days(raw), actor)
        except InvalidInput as exc:
            return render(request, "commerce/_product_row.html", {"p": product, "row_errors": errors_for(exc),
                                                                  "row_value": raw[:10]}, status_code=400)
        if not getattr(request, "htmx", None):
            return Redirect("/products", status_code=HTTP_303_SEE_OTHER)
        return render(request, "commerce/_product_row.html", {"p": product},
                      headers=toast_header(i18n.gettext(N_("Saved."))))


# --- history imports ------------------------------------------------------------------------------------------

ENCODINGS = ("auto", "utf-8", "gb18030")
SHOWN_PROBLEMS = 100


class PurchaseImportController(Controller):
    """Importing a brand's order history from a CSV file: the upload, each import's live progress (htmx polls
    the progress block until the import ends), its problems and their downloadable report."""

    path = "/purchases/import"
    guards = [tenant_admin]
    include_in_schema = False

    @get("/")
    async def index(self, request: Request[Any, Any, Any]) -> Template:
        tid, _ = tenant_scope(request)
        return render(request, "commerce/import.html", {"imports": await imports.list_imports(tid),
                                                        "columns": import_file.COLUMNS, "encodings": ENCODINGS})

    @post("/", request_max_body_size=imports.MAX_UPLOAD_BYTES)
    async def upload(self, request: Request[Any, Any, Any]) -> Template | Redirect:
        tid, actor = tenant_scope(request)
        form = await request.form()
        upload = form.get("file")
        encoding = str(form.get("encoding") or "auto")
        errors: dict[str, str] = {}
        if not isinstance(upload, UploadFile) or not upload.filename:
            errors["file"] = i18n.gettext(N_("Choose a CSV file to import."))
        elif encoding not in ENCODINGS:
            errors["encoding"] = i18n.gettext(N_("Choose one of: {choices}.")).format(choices=", ".join(ENCODINGS))
        if errors:
            return render(request, "commerce/import.html", {
                "imports": await imports.list_imports(tid), "columns": import_file.COLUMNS, "encodings": ENCODINGS,
                "errors": errors}, status_code=400)
        assert isinstance(upload, UploadFile)
        try:
            imp = await imports.do_upload(tid, actor, upload.filename[:200], upload.file, encoding)
        finally:
            await upload.close()
        return Redirect(f"/purchases/import/{imp.id}", status_code=HTTP_303_SEE_OTHER)

    @get("/{import_id:int}")
    async def detail(self, request: Request[Any, Any, Any], import_id: FromPath[int]) -> Template:
        tid, _ = tenant_scope(request)
        imp = await imports.get_import(tid, import_id)
        found = await imports.problems(tid, import_id, limit=SHOWN_PROBLEMS)
        shown = [{**p, "message": import_file.message(p["code"], p["detail"], i18n.gettext)} for p in found]
        return render(request, "commerce/import_detail.html", {"imp": imp, "problems": shown,
                                                               "failure": imp.failure_message(i18n.gettext),
                                                               "more_problems": imp.error_lines > len(shown)},
                      block="progress")

    @get("/{import_id:int}/problems.csv")
    async def problems_csv(self, request: Request[Any, Any, Any], import_id: FromPath[int]) -> Stream:
        tid, _ = tenant_scope(request)
        imp = await imports.get_import(tid, import_id)  # another tenant's import is a 404
        name = "".join(ch for ch in imp.filename.rsplit(".", 1)[0] if ch.isascii() and (ch.isalnum() or ch in "-_"))
        return Stream(imports.report_csv(tid, imp.id, i18n.gettext), media_type="text/csv; charset=utf-8",
                      headers={"Content-Disposition": f'attachment; filename="problems-{name or "import"}-{imp.id}.csv"'})
