"""What a segment selects, and the one SQL condition that selects it.

A definition is strict JSON (the API and the stored row use the same canonical shape, `as_json`):

    {"tags": {"ids": [3, 7], "match": "any" | "all"} | null,
     "exclude_tags": [9],
     "channels": ["oa", "wecom"],                       # linked on every one of them
     "owner": {"op": "any" | "none"} | {"op": "is", "userid": "zhangsan"} | null,
     "last_interaction": {"op": "within" | "more_than" | "not_within", "days": 30} | {"op": "never"} | null,
     "last_purchase": (the same as last_interaction),
     "include_erased": false,
     "spent": {"at_least": 10000, "at_most": null} | null,   # fen, net of refunds (CNY)
     "orders": {"at_least": 2, "at_most": null} | null,      # purchases not wholly refunded
     "bought": {"skus": ["TEA-01"], "match": "any" | "all"} | null,
     "not_bought": ["CUP-1"],
     "first_purchase": (the same as last_interaction)}

Parsing names the field of every mistake ("tags", "owner.userid", "last_purchase.days", …). Compiling gives
one WHERE over the tenant's live contacts (alias `c`), EXISTS subqueries for tags, identities and owners,
and every user value as a `$n` parameter: the SQL text depends only on which filters are set. The purchase
filters are conditions commerce writes over its own per-contact figures (`siyu.commerce.stats.segment_*`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from siyu.commerce import stats as purchase_stats
from siyu.core.errors import FieldError, InvalidInput
from siyu.core.i18n import N_

CHANNELS = ("oa", "mp", "wecom")
TAG_MATCHES = ("any", "all")
OWNER_OPS = ("any", "none", "is")
RECENCY_OPS = ("within", "more_than", "not_within", "never")
RECENCIES = ("last_interaction", "last_purchase")
MAX_TAGS = 50
MAX_DAYS = 3650
USERID_MAX = 64
MAX_SKUS = 50
SKU_MAX = 64
MAX_FEN = 10**12
MAX_ORDERS = 1_000_000
BOUNDS = {"spent": MAX_FEN, "orders": MAX_ORDERS}  # the largest number each bounded filter takes
KEYS = ("tags", "exclude_tags", "channels", "owner", *RECENCIES, "include_erased", *BOUNDS, "bought", "not_bought",
        "first_purchase")
_INT_MAX = 2**31 - 1

# The contact column behind each recency filter: fixed names, never user input.
_RECENCY_COLUMNS = {"last_interaction": "c.last_interaction_at", "last_purchase": "c.last_purchase_at"}


@dataclass(frozen=True)
class Recency:
    op: str  # within | more_than | not_within | never
    days: int | None = None  # None only for `never`

    def as_json(self) -> dict[str, Any]:
        return {"op": self.op} if self.op == "never" else {"op": self.op, "days": self.days}


@dataclass(frozen=True)
class OwnerRule:
    op: str  # any | none | is
    userid: str | None = None  # the rep's WeCom UserID, for `is`

    def as_json(self) -> dict[str, Any]:
        return {"op": "is", "userid": self.userid} if self.op == "is" else {"op": self.op}


@dataclass(frozen=True)
class Bounds:
    at_least: int | None = None
    at_most: int | None = None

    def as_json(self) -> dict[str, Any]:
        return {"at_least": self.at_least, "at_most": self.at_most}


@dataclass(frozen=True)
class Definition:
    tags: tuple[int, ...] = ()
    tag_match: str = "any"
    exclude_tags: tuple[int, ...] = ()
    channels: tuple[str, ...] = ()
    owner: OwnerRule | None = None
    last_interaction: Recency | None = None
    last_purchase: Recency | None = None
    include_erased: bool = False
    spent: Bounds | None = None
    orders: Bounds | None = None
    bought: tuple[str, ...] = ()
    bought_match: str = "any"
    not_bought: tuple[str, ...] = ()
    first_purchase: Recency | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "tags": {"ids": list(self.tags), "match": self.tag_match} if self.tags else None,
            "exclude_tags": list(self.exclude_tags),
            "channels": list(self.channels),
            "owner": self.owner.as_json() if self.owner else None,
            "last_interaction": self.last_interaction.as_json() if self.last_interaction else None,
            "last_purchase": self.last_purchase.as_json() if self.last_purchase else None,
            "include_erased": self.include_erased,
            "spent": self.spent.as_json() if self.spent else None,
            "orders": self.orders.as_json() if self.orders else None,
            "bought": {"skus": list(self.bought), "match": self.bought_match} if self.bought else None,
            "not_bought": list(self.not_bought),
            "first_purchase": self.first_purchase.as_json() if self.first_purchase else None,
        }

    def tag_ids(self) -> set[int]:
        return set(self.tags) | set(self.exclude_tags)

    def is_empty(self) -> bool:
        """Selects every live, not erased contact."""
        return self == Definition()


@dataclass
class _Errors:
    found: list[FieldError] = field(default_factory=list)

    def add(self, name: str, message: str, **params: object) -> None:
        if all(e.field != name for e in self.found):  # one message per field: the first mistake
            self.found.append(FieldError(name, message, params))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _ids(value: Any, name: str, errors: _Errors) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(_is_int(v) and 1 <= v <= _INT_MAX for v in value):
        errors.add(name, N_("Give a list of tag ids."))
        return ()
    unique = tuple(dict.fromkeys(value))  # keeps the order the person chose
    if len(unique) > MAX_TAGS:
        errors.add(name, N_("Choose at most {max} tags."), max=MAX_TAGS)
        return ()
    return unique


def _object(value: Any, name: str, allowed: tuple[str, ...], errors: _Errors) -> dict[str, Any] | None:
    if not isinstance(value, dict):
        errors.add(name, N_("Give an object with: {keys}."), keys=", ".join(allowed))
        return None
    unknown = sorted(set(value) - set(allowed))
    if unknown:
        errors.add(name, N_("Unknown keys: {keys}."), keys=", ".join(unknown))
        return None
    return value


def _recency(value: Any, name: str, errors: _Errors) -> Recency | None:
    if value is None:
        return None
    obj = _object(value, name, ("op", "days"), errors)
    if obj is None:
        return None
    op = obj.get("op")
    if op not in RECENCY_OPS:
        errors.add(name, N_("Choose one of: {choices}."), choices=", ".join(RECENCY_OPS))
        return None
    days = obj.get("days")
    if op == "never":
        if days is not None:
            errors.add(f"{name}.days", N_("“Never” takes no number of days."))
        return Recency("never")
    if not _is_int(days) or not 1 <= days <= MAX_DAYS:
        errors.add(f"{name}.days", N_("Enter a whole number of days from 1 to {max}."), max=MAX_DAYS)
        return None
    return Recency(op, days)


def _owner(value: Any, errors: _Errors) -> OwnerRule | None:
    if value is None:
        return None
    obj = _object(value, "owner", ("op", "userid"), errors)
    if obj is None:
        return None
    op = obj.get("op")
    if op not in OWNER_OPS:
        errors.add("owner", N_("Choose one of: {choices}."), choices=", ".join(OWNER_OPS))
        return None
    userid = obj.get("userid")
    if op != "is":
        if userid is not None:
            errors.add("owner.userid", N_("Name a sales rep only to choose a specific one."))
        return OwnerRule(op)
    if not isinstance(userid, str) or not userid.strip():
        errors.add("owner.userid", N_("Enter the sales rep's WeCom UserID."))
        return None
    userid = userid.strip()
    if len(userid) > USERID_MAX or not all(ch.isascii() and (ch.isalnum() or ch in "_-.@") for ch in userid):
        errors.add("owner.userid", N_("A WeCom UserID is 1 to {max} letters, digits, _ - . or @."), max=USERID_MAX)
        return None
    return OwnerRule("is", userid)


def _bounds(value: Any, name: str, maximum: int, errors: _Errors) -> Bounds | None:
    if value is None:
        return None
    obj = _object(value, name, ("at_least", "at_most"), errors)
    if obj is None:
        return None
    found: dict[str, int | None] = {}
    for key in ("at_least", "at_most"):
        v = obj.get(key)
        if v is not None and (not _is_int(v) or not 0 <= v <= maximum):
            errors.add(f"{name}.{key}", N_("Enter a whole number from 0 to {max}."), max=maximum)
            return None
        found[key] = v
    if found["at_least"] is None and found["at_most"] is None:
        errors.add(name, N_("Give at least one bound: at_least or at_most."))
        return None
    if found["at_least"] is not None and found["at_most"] is not None and found["at_least"] > found["at_most"]:
        errors.add(f"{name}.at_most", N_("The upper bound is below the lower one."))
        return None
    return Bounds(found["at_least"], found["at_most"])


def _skus(value: Any, name: str, errors: _Errors) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(
            isinstance(v, str) and 1 <= len(v.strip()) <= SKU_MAX and v.isprintable() for v in value):
        errors.add(name, N_("Give a list of SKUs (1 to {max} printable characters each)."), max=SKU_MAX)
        return ()
    unique = tuple(dict.fromkeys(v.strip() for v in value))
    if len(unique) > MAX_SKUS:
        errors.add(name, N_("Choose at most {max} SKUs."), max=MAX_SKUS)
        return ()
    return unique


def parse(raw: Any) -> Definition:
    """The definition `raw` describes, or InvalidInput naming each wrong field. Checks the shape only:
    whether the tags exist is for the services to say (they know the tenant)."""
    errors = _Errors()
    if not isinstance(raw, dict):
        raise InvalidInput.one("definition", N_("Send a JSON object."))
    for key in sorted(set(raw) - set(KEYS)):
        errors.add(str(key)[:60], N_("Siyu has no filter of this name."))

    tags: tuple[int, ...] = ()
    match = "any"
    if raw.get("tags") is not None:
        obj = _object(raw["tags"], "tags", ("ids", "match"), errors)
        if obj is not None:
            tags = _ids(obj.get("ids", []), "tags", errors)
            match = obj.get("match", "any")
            if match not in TAG_MATCHES:
                errors.add("tags.match", N_("Choose one of: {choices}."), choices=", ".join(TAG_MATCHES))
                match = "any"
    exclude = _ids(raw.get("exclude_tags") or [], "exclude_tags", errors)
    if set(tags) & set(exclude):
        errors.add("exclude_tags", N_("A tag cannot be both required and excluded."))

    channels_raw = raw.get("channels") or []
    channels: tuple[str, ...] = ()
    if not isinstance(channels_raw, list) or not all(c in CHANNELS for c in channels_raw):
        errors.add("channels", N_("Choose from: {choices}."), choices=", ".join(CHANNELS))
    else:
        channels = tuple(c for c in CHANNELS if c in channels_raw)  # canonical order, no repeats

    owner = _owner(raw.get("owner"), errors)
    recencies = {name: _recency(raw.get(name), name, errors) for name in RECENCIES}

    include_erased = raw.get("include_erased", False)
    if not isinstance(include_erased, bool):
        errors.add("include_erased", N_("Use true or false."))
        include_erased = False

    bounds = {name: _bounds(raw.get(name), name, maximum, errors) for name, maximum in BOUNDS.items()}
    bought: tuple[str, ...] = ()
    bought_match = "any"
    if raw.get("bought") is not None:
        obj = _object(raw["bought"], "bought", ("skus", "match"), errors)
        if obj is not None:
            bought = _skus(obj.get("skus", []), "bought.skus", errors)
            if not bought and "bought.skus" not in {e.field for e in errors.found}:
                errors.add("bought.skus", N_("Give at least one SKU."))
            bought_match = obj.get("match", "any")
            if bought_match not in TAG_MATCHES:
                errors.add("bought.match", N_("Choose one of: {choices}."), choices=", ".join(TAG_MATCHES))
                bought_match = "any"
    not_bought = _skus(raw.get("not_bought") or [], "not_bought", errors)
    if set(bought) & set(not_bought):
        errors.add("not_bought", N_("A SKU cannot be both bought and not bought."))
    first_purchase = _recency(raw.get("first_purchase"), "first_purchase", errors)

    if errors.found:
        raise InvalidInput(errors.found)
    return Definition(tags=tags, tag_match=match if tags else "any", exclude_tags=exclude, channels=channels,
                      owner=owner, last_interaction=recencies["last_interaction"],
                      last_purchase=recencies["last_purchase"], include_erased=include_erased,
                      spent=bounds["spent"], orders=bounds["orders"], bought=bought,
                      bought_match=bought_match if bought else "any", not_bought=not_bought,
                      first_purchase=first_purchase)


# --- SQL ---------------------------------------------------------------------------------------------------

class Params:
    """Positional parameters for asyncpg: `add` returns the placeholder of the value it keeps."""

    def __init__(self, *initial: Any) -> None:
        self.values: list[Any] = list(initial)

    def add(self, value: Any) -> str:
        self.values.append(value)
        return f"${len(self.values)}"


def linked(channel_sql: str) -> str:
    """The contact is reachable on this channel: an identity there that was not erased (an erased OA
    identity is a person who unfollowed)."""
    return (f"EXISTS (SELECT 1 FROM identity i WHERE i.tenant = c.tenant AND i.contact = c.id "
            f"AND i.channel = {channel_sql} AND i.erased_at IS NULL)")


def where(definition: Definition, params: Params, tenant_sql: str, now: datetime) -> str:
    """The condition on `contact c` that selects the definition's live contacts of the tenant in
    `tenant_sql`. `now` anchors the day windows (one instant for a whole count or page)."""
    return " AND ".join([f"c.tenant = {tenant_sql}", "c.merged_into IS NULL", *filters(definition, params, now)])


def filters(definition: Definition, params: Params, now: datetime) -> list[str]:
    """The definition's own conditions on `contact c`, without the tenant and liveness that `where` adds
    (for a query that has those already, such as the contact list: repeating them would skew its plan's
    estimates). Empty for a definition that selects everyone, erased contacts included."""
    d = definition
    clauses: list[str] = []
    if not d.include_erased:
        clauses.append("c.erased_at IS NULL")
    has_tag = "SELECT 1 FROM contact_tag ct WHERE ct.tenant = c.tenant AND ct.contact = c.id"
    if d.tags and d.tag_match == "any":
        clauses.append(f"EXISTS ({has_tag} AND ct.tag = ANY({params.add(list(d.tags))}::int[]))")
    elif d.tags:
        # Relational division: no wanted tag is missing. One clause whatever the number of tags.
        clauses.append(f"NOT EXISTS (SELECT 1 FROM unnest({params.add(list(d.tags))}::int[]) AS want(tag) "
                       f"WHERE NOT EXISTS ({has_tag} AND ct.tag = want.tag))")
    if d.exclude_tags:
        clauses.append(f"NOT EXISTS ({has_tag} AND ct.tag = ANY({params.add(list(d.exclude_tags))}::int[]))")
    if d.channels:
        clauses.append(f"NOT EXISTS (SELECT 1 FROM unnest({params.add(list(d.channels))}::text[]) AS want(channel) "
                       f"WHERE NOT {linked('want.channel')})")
    if d.owner is not None:
        active = ("SELECT 1 FROM owner o WHERE o.tenant = c.tenant AND o.contact = c.id AND o.removed_at IS NULL")
        if d.owner.op == "any":
            clauses.append(f"EXISTS ({active})")
        elif d.owner.op == "none":
            clauses.append(f"NOT EXISTS ({active})")
        else:
            clauses.append(f"EXISTS ({active} AND o.staff_userid = {params.add(d.owner.userid)})")
    for name in RECENCIES:
        rule: Recency | None = getattr(d, name)
        if rule is None:
            continue
        column = _RECENCY_COLUMNS[name]
        if rule.op == "never":
            clauses.append(f"{column} IS NULL")
            continue
        assert rule.days is not None
        cutoff = params.add(now - timedelta(days=rule.days))
        if rule.op == "within":
            clauses.append(f"{column} >= {cutoff}")
        elif rule.op == "more_than":
            clauses.append(f"{column} < {cutoff}")
        else:  # not_within: older than the window, or never
            clauses.append(f"({column} IS NULL OR {column} < {cutoff})")
    if d.spent is not None:
        clauses.append(purchase_stats.segment_spent(params.add, d.spent.at_least, d.spent.at_most))
    if d.orders is not None:
        clauses.append(purchase_stats.segment_orders(params.add, d.orders.at_least, d.orders.at_most))
    if d.bought:
        clauses.append(purchase_stats.segment_bought(params.add, list(d.bought), d.bought_match == "all"))
    if d.not_bought:
        clauses.append(purchase_stats.segment_not_bought(params.add, list(d.not_bought)))
    if d.first_purchase is not None:
        rule = d.first_purchase
        cutoff_at = None if rule.days is None else now - timedelta(days=rule.days)
        clauses.append(purchase_stats.segment_first_purchase(params.add, rule.op, cutoff_at))
    return clauses
