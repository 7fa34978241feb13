"""The OpenAPI document describes every JSON route an integrator can call: each operation (the API under /api and
the health probes) names its request body and every response body as a typed model (a named schema with
properties), never a free-form object; data whose keys others decide (WeChat's profiles, an event's details) is
an object that says in words what it holds. Every operation under /api declares the Bearer key it needs, and
every route of the app that answers JSON from a model or a mapping is in the document."""

from __future__ import annotations

from typing import Any

from litestar.response import Stream, Template
from msgspec import Struct

from tests.conftest import Client

BODY_METHODS = {"post", "put", "patch"}
METHODS = {"get", "post", "put", "patch", "delete"}


def _resolve(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        schema = doc["components"]["schemas"][name]
    return schema


def untyped(doc: dict[str, Any], schema: Any, where: str, seen: set[str] | None = None) -> list[str]:
    """Where under `schema` a value is free-form: `{}` (anything), an object with neither properties nor a
    typed map of values, or an open object that does not say what it holds."""
    seen = set() if seen is None else seen
    if schema is True or schema == {}:
        return [f"{where}: any value"]
    if not isinstance(schema, dict):
        return []
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        if name in seen:
            return []
        seen.add(name)
        return untyped(doc, doc["components"]["schemas"][name], f"{where}→{name}", seen)
    found: list[str] = []
    for key in ("oneOf", "anyOf", "allOf"):
        for i, option in enumerate(schema.get(key, [])):
            if isinstance(option, dict) and "description" in schema and "$ref" not in option:
                option = {"description": schema["description"], **option}  # a union's words cover its options
            found += untyped(doc, option, f"{where}.{key}[{i}]", seen)
    types = schema.get("type")
    types = set(types) if isinstance(types, list) else {types} if types else set()
    if "object" in types or "properties" in schema or "additionalProperties" in schema:
        properties = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        if not properties and extra in (None, {}, True) and not schema.get("description"):
            found.append(f"{where}: a free-form object")  # (one that says what it holds is WeChat's own data)
        for name, sub in properties.items():
            found += untyped(doc, sub, f"{where}.{name}", seen)
        if isinstance(extra, dict) and extra:
            found += untyped(doc, extra, f"{where}{{*}}", seen)
    if "array" in types:
        found += untyped(doc, schema.get("items", {}), f"{where}[]", seen)
    return found


def problems(doc: dict[str, Any]) -> list[str]:
    found: list[str] = []
    for path, operations in doc["paths"].items():
        for method, op in operations.items():
            if method not in METHODS:
                continue
            where = f"{method.upper()} {path}"
            if path.startswith("/api/") and not op.get("security"):
                found.append(f"{where}: no security requirement (the Bearer key)")
            if method in BODY_METHODS:
                body = (op.get("requestBody") or {}).get("content", {}).get("application/json", {}).get("schema")
                if body is None:
                    found.append(f"{where}: the request body is not documented")
                elif not _resolve(doc, body).get("properties"):
                    found.append(f"{where}: the request body is not a model with properties")
                else:
                    found += untyped(doc, body, f"{where} request")
            ok = [s for s in op.get("responses", {}) if s.startswith("2")]
            if not ok:
                found.append(f"{where}: no success response")
            for status, response in op.get("responses", {}).items():
                content = response.get("content")
                if not content:
                    if status.startswith("2"):
                        found.append(f"{where} {status}: no body documented")
                    continue
                for media, body in content.items():
                    schema = body.get("schema")
                    label = f"{where} {status} {media}"
                    if not schema or not _resolve(doc, schema).get("properties"):
                        found.append(f"{label}: not a model with properties")
                    else:
                        found += untyped(doc, schema, label)
    return found


class Out(Struct):
    """(For test_the_route_check_catches_hidden_json_routes: handlers' annotations resolve at module level.)"""

    id: int


def _answers_json(annotation: Any) -> bool:
    """Whether a handler's return annotation is a JSON body: a model, a mapping or a list (inside Response[…] or
    a union too). Pages (Template, Redirect), files and streams are not."""
    import typing

    from msgspec import Struct

    origin = typing.get_origin(annotation)
    if origin is not None and origin not in (dict, list):
        return any(_answers_json(a) for a in typing.get_args(annotation))
    if origin in (dict, list) or annotation in (dict, list):
        return True
    return isinstance(annotation, type) and issubclass(annotation, Struct)


def undocumented_json_routes(app: Any, doc: dict[str, Any]) -> list[str]:
    """Routes of `app` that answer JSON (every route under /api, and any route returning a model or a mapping)
    but are missing from the OpenAPI document."""
    from litestar.handlers import HTTPRouteHandler

    documented = {(m, p) for p, ops in doc["paths"].items() for m in ops if m in METHODS}
    found: list[str] = []
    for route in app.routes:
        for handler in getattr(route, "route_handlers", []):
            if not isinstance(handler, HTTPRouteHandler) or handler.http_methods == {"OPTIONS"}:
                continue
            path = route.path_format
            if not (path.startswith("/api/") or _answers_json(handler.parsed_fn_signature.return_type.annotation)):
                continue
            for method in sorted(handler.http_methods - {"OPTIONS", "HEAD"}):
                if (method.lower(), path) not in documented:
                    found.append(f"{method} {path}")
    return found


async def test_every_json_operation_has_typed_bodies(client: Client) -> None:
    doc = (await client.get("/schema/openapi.json")).json()
    operations = [(m, p) for p, ops in doc["paths"].items() for m in ops if m in METHODS]
    # The walk reaches the whole API and the probes (the test can fail: see test_the_check_catches_…).
    assert ("get", "/api/v1/contacts") in operations and ("post", "/api/v1/mp/login") in operations
    assert ("get", "/healthz") in operations and ("get", "/readyz") in operations
    assert len([o for o in operations if o[1].startswith("/api/")]) >= 19
    assert problems(doc) == []
    assert doc["components"]["securitySchemes"]["apiKey"]["scheme"] == "bearer"


def test_the_check_catches_free_form_bodies() -> None:
    """What Litestar writes for a handler annotated `-> dict[str, Any]`, and a model hiding one inside."""
    doc = {"components": {"schemas": {
        "Good": {"type": "object", "properties": {"id": {"type": "integer"}}},
        "Hides": {"type": "object", "properties": {"extra": {"type": "object", "additionalProperties": {}}}},
        "Open": {"type": "object", "properties": {"payload": {"type": "object", "additionalProperties": {},
                                                              "description": "WeChat's data"}}},
    }}, "paths": {
        "/api/v1/a": {"get": {"security": [{"apiKey": []}], "responses": {"200": {"content": {"application/json": {
            "schema": {"type": "object", "additionalProperties": {}}}}}}}},
        "/api/v1/b": {"post": {"security": [{"apiKey": []}], "responses": {"200": {"content": {"application/json": {
            "schema": {"$ref": "#/components/schemas/Hides"}}}}}}},
        "/api/v1/c": {"get": {"security": [{"apiKey": []}], "responses": {"200": {"content": {"application/json": {
            "schema": {"$ref": "#/components/schemas/Open"}}}}}}},
        "/api/v1/d": {"get": {"responses": {"200": {"content": {"application/json": {
            "schema": {"$ref": "#/components/schemas/Good"}}}}}}},
    }}
    found = problems(doc)
    assert any(p.startswith("GET /api/v1/a 200") for p in found)
    assert "POST /api/v1/b: the request body is not documented" in found
    assert any(p.startswith("POST /api/v1/b 200") and "extra" in p for p in found)
    assert not any(p.startswith("GET /api/v1/c") for p in found)
    assert "GET /api/v1/d: no security requirement (the Bearer key)" in found


async def test_every_json_route_of_the_app_is_in_the_document(app: Any, client: Client) -> None:
    doc = (await client.get("/schema/openapi.json")).json()
    assert undocumented_json_routes(app, doc) == []


def test_the_route_check_catches_hidden_json_routes() -> None:
    """A route hidden from the document under /api, one returning a mapping elsewhere, and a model's route left
    out; an HTML page and a file stream are not JSON routes."""
    from litestar import Litestar, get, post

    @get("/api/v1/hidden", include_in_schema=False, sync_to_thread=False)
    def hidden() -> Out:
        return Out(1)

    @get("/status", sync_to_thread=False)
    def status() -> dict[str, str]:
        return {}

    @post("/internal", include_in_schema=False, sync_to_thread=False)
    def internal() -> Out | None:
        return None

    @get("/page", include_in_schema=False, sync_to_thread=False)
    def page() -> Template:
        raise AssertionError

    @get("/file.csv", include_in_schema=False, sync_to_thread=False)
    def file() -> Stream:
        raise AssertionError

    tiny = Litestar([hidden, status, internal, page, file])
    doc = tiny.openapi_schema.to_schema()
    assert sorted(undocumented_json_routes(tiny, doc)) == ["GET /api/v1/hidden", "POST /internal"]
    assert problems(doc) and all(p.startswith("GET /status") for p in problems(doc))


async def test_the_documented_parameters_of_the_contact_list(client: Client) -> None:
    doc = (await client.get("/schema/openapi.json")).json()
    params = {p["name"]: p["schema"] for p in doc["paths"]["/api/v1/contacts"]["get"]["parameters"]}
    assert {"identity", "cursor", "limit", "updated_since", "tag", "segment"} <= set(params)
    # What to send, as an integrator's client generator reads it (the handlers check the text themselves).
    assert params["limit"]["type"] == "integer" and (params["limit"]["minimum"], params["limit"]["maximum"]) == (1, 200)
    assert params["tag"]["type"] == params["segment"]["type"] == "integer"
    assert params["updated_since"] == {**params["updated_since"], "type": "string", "format": "date-time"}
    timeline = {p["name"]: p["schema"] for p in doc["paths"]["/api/v1/contacts/{contact_id}/timeline"]["get"]["parameters"]}
    assert timeline["channel"]["type"] == "array" and "wecom" in timeline["channel"]["items"]["enum"]
