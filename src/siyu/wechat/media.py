"""Pictures, voice, videos and files: the ones customers send (fetched from WeChat by a job) and the pictures
reps send (uploaded to WeChat as temporary media by the send). The one writer of `wechat_media`.

Inbound: a stored callback whose message carries a media id (`MediaId`, 微信客服's `media_id`) gets a row
(`pending`, unique per tenant, channel and media id, so a callback processed twice fetches once) and the job
`wechat.fetch_media`. The job asks WeChat's media API with the media id and nothing else: a message's `PicUrl`
is never fetched, and a `video_url` answer is followed only to WeChat's own addresses. The bytes are checked
(size per kind, read as a stream and cut off past it; the type sniffed from the bytes, never taken from a
header) and kept in the media store; voice (AMR, which browsers cannot play) is also kept as MP3. WeChat busy
or rate-limited: tried again later; refused for good (40007: WeChat keeps media 3 days): `failed`, with the
reason in words (`siyu.wechat.errors`). Each state change is announced by job name to the inbox
(`inbox.media_ready`), which refreshes the threads that show it.

Outbound: `put_upload` keeps a rep's picture (checked: JPG or PNG, within the channel's limit) and
`record_upload` writes its row inside the rep's transaction; `ensure_uploaded` gives the send its temporary
media id, uploading again when WeChat's copy is older than its 3 days.

Serving: `open_media` hands a stored file to a page that has checked who may see it, with a content type from
a short list of safe ones (never HTML or SVG inline; anything else is an attachment).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from arq.worker import Retry

from siyu.core import db
from siyu.core.clock import now
from siyu.core.errors import InvalidInput, NotFound
from siyu.core.i18n import N_
from siyu.core.storage import media_store, new_key
from siyu.wechat.client import (
    MediaLinkRefused,
    MediaTooLarge,
    WeChatBusy,
    WeChatClient,
    WeChatError,
    WeChatRateLimited,
)
from siyu.wechat.outbound import runtime_of

log = logging.getLogger("siyu.wechat.media")

FETCH_JOB = "wechat.fetch_media"
FETCH_TRIES = 8  # WeChat busy or rate-limited this many times: failed, with the last reason
READY_JOB = "inbox.media_ready"  # the inbox refreshes the threads showing a medium whose state changed
KEPT_BY_WECHAT = timedelta(days=3)  # customers' media and temporary uploads alike
REUPLOAD_AFTER = timedelta(days=2, hours=12)  # a temporary media id younger than this is used again

MEDIA_TYPES = {"image": "image", "voice": "voice", "video": "video", "shortvideo": "video", "file": "file"}
# What Siyu keeps per kind: WeChat's own limits (OA voice 2 MB, video 10 MB; 微信客服 image 2 MB, voice 2 MB,
# video 10 MB, file 20 MB — larger ones arrive as a notice instead), images up to OA's 10 MB.
MAX_BYTES = {"image": 10 * 1024 * 1024, "voice": 2 * 1024 * 1024, "video": 10 * 1024 * 1024,
             "file": 20 * 1024 * 1024}
# A rep's picture: JPG or PNG. OA and MP: 2 MB (the OA documentation says 10 MB in one place and 2 MB in another:
# the safe one); WeCom: 10 MB.
UPLOAD_TYPES = ("image/jpeg", "image/png")
UPLOAD_MAX = {"oa": 2 * 1024 * 1024, "mp": 2 * 1024 * 1024, "wecom": 10 * 1024 * 1024}

# What a page may show inline, by the type sniffed from the bytes. Everything else is an attachment.
INLINE = {"image/jpeg", "image/png", "image/gif", "image/webp", "image/bmp", "audio/mpeg", "video/mp4"}
KIND_TYPES = {"image": {"image/jpeg", "image/png", "image/gif", "image/webp", "image/bmp"},
              "voice": {"audio/amr", "audio/amr-wb", "audio/silk", "audio/mpeg"},
              "video": {"video/mp4"}}
EXTENSIONS = {"image/jpeg": ".jpg", "image/png": ".png", "image/gif": ".gif", "image/webp": ".webp",
              "image/bmp": ".bmp", "audio/amr": ".amr", "audio/amr-wb": ".amr", "audio/silk": ".silk",
              "audio/mpeg": ".mp3", "video/mp4": ".mp4", "application/pdf": ".pdf"}

KIND_WORDS = {"image": N_("Picture"), "voice": N_("Voice message"), "video": N_("Video"), "file": N_("File")}


def sniff(data: bytes) -> str:
    """The content type the bytes themselves say (magic numbers), never a declared one."""
    head = data[:16]
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if head[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if head[:2] == b"BM" and len(data) > 26:
        return "image/bmp"
    if head.startswith(b"#!AMR-WB\n"):
        return "audio/amr-wb"
    if head.startswith(b"#!AMR\n"):
        return "audio/amr"
    if head.startswith(b"#!SILK") or head.startswith(b"\x02#!SILK"):
        return "audio/silk"
    if head.startswith(b"ID3") or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        return "audio/mpeg"
    if data[4:8] == b"ftyp":
        return "video/mp4"
    if head.startswith(b"%PDF-"):
        return "application/pdf"
    return "application/octet-stream"


# --- inbound: rows and the fetch job ------------------------------------------------------------------------

def media_of(msg_type: str, details: dict[str, Any]) -> tuple[str, str] | None:
    """(kind, WeChat's media id) of a customer's message, or None when it carries none. Only the media id:
    `PicUrl` (a URL in the message) is never looked at."""
    kind = MEDIA_TYPES.get(msg_type)
    media_id = str(details.get("MediaId") or details.get("media_id") or "").strip()
    if kind is None or not media_id or len(media_id) > 200:
        return None
    return kind, media_id


async def note_inbound(events: list[dict[str, Any]]) -> list[tuple[int, int]]:
    """Rows for the media of these stored callbacks (each a dict with id, tenant, channel, external_id,
    msg_type and details), once per media id; returns (tenant, row id) of the rows still to fetch (new, or
    pending from an earlier run), for the caller to enqueue."""
    todo: list[tuple[int, int]] = []
    for event in events:
        found = media_of(event["msg_type"], event["details"])
        if found is None:
            continue
        kind, media_id = found
        recognition = str(event["details"].get("Recognition") or "")[:2000]
        row = await db.fetchrow(
            "INSERT INTO wechat_media (tenant, channel, external_id, direction, media_id, kind, source_event, state, "
            "content_type, size, sha256, storage_key, playable_key, filename, recognition, error, errmsg, attempts, "
            "wechat_media_id, created_at) VALUES ($1, $2, $3, 'in', $4, $5, $6, 'pending', '', 0, '', '', '', $7, $8, "
            "'', '', 0, '', now()) ON CONFLICT (tenant, channel, media_id) DO UPDATE SET "
            "source_event = COALESCE(wechat_media.source_event, EXCLUDED.source_event) RETURNING id, state",
            event["tenant"], event["channel"], event["external_id"][:128], media_id, kind, event["id"],
            str(event["details"].get("Title") or event["details"].get("file_name") or "")[:200], recognition)
        if row["state"] == "pending":
            todo.append((int(event["tenant"]), int(row["id"])))
    return todo


async def enqueue_fetch(redis: Any, tenant_id: int, media_row_id: int, suffix: str = "") -> None:
    await redis.enqueue_job(FETCH_JOB, tenant_id, media_row_id, _job_id=f"{FETCH_JOB}:{media_row_id}{suffix}")


async def fetch_media(ctx: dict[str, Any], tenant_id: int, media_row_id: int) -> str:
    """Fetch one customer's medium from WeChat and keep it. Safe to run twice: a stored or failed row is left
    as it is; two runs at once store the same bytes under one key, the first settle wins."""
    row = await db.fetchrow("SELECT * FROM wechat_media WHERE tenant = $1 AND id = $2 AND direction = 'in'",
                            tenant_id, media_row_id)
    if row is None:
        return "missing"
    if row["state"] != "pending":
        return row["state"]
    await db.execute("UPDATE wechat_media SET attempts = attempts + 1 WHERE id = $1", media_row_id)
    kind, limit = row["kind"], MAX_BYTES[row["kind"]]
    try:
        client = await runtime_of(ctx).client(tenant_id, row["channel"])
        got = await client.download_media(row["media_id"], limit)
        if got.video_url:
            got = await client.fetch_video_url(got.video_url, limit)
    except NotFound:
        return await _fail(row, "not_linked", "the account is no longer linked")
    except (MediaTooLarge, MediaLinkRefused) as exc:
        return await _fail(row, exc.reason, exc.errmsg)
    except (WeChatBusy, WeChatRateLimited) as exc:
        tries = int(ctx.get("job_try") or FETCH_TRIES)
        if tries < FETCH_TRIES:
            defer = exc.retry_after if isinstance(exc, WeChatRateLimited) else min(300, 5 * 2 ** tries)
            log.info("media %s of tenant %s: %r; again in %s s", media_row_id, tenant_id, exc, defer)
            raise Retry(defer=defer) from exc
        return await _fail(row, str(exc.errcode if exc.errcode != -1 else exc.reason), exc.errmsg)
    except WeChatError as exc:
        return await _fail(row, "expired" if exc.errcode == 40007 else str(exc.errcode), exc.errmsg)
    content_type = sniff(got.data)
    if not got.data:
        return await _fail(row, "44001", "WeChat answered an empty file")
    if kind in KIND_TYPES and content_type not in KIND_TYPES[kind]:
        return await _fail(row, "bad_type", f"a {kind} whose bytes are {content_type}")
    return await _store(ctx, row, got.data, content_type, got.filename)


async def _store(ctx: dict[str, Any], row: Any, data: bytes, content_type: str, filename: str) -> str:
    store = media_store()
    key = new_key(int(row["tenant"]), EXTENSIONS.get(content_type, ".bin"))
    await store.put(key, data)
    playable = ""
    if content_type in ("audio/amr", "audio/amr-wb"):
        mp3 = await asyncio.to_thread(voice_to_mp3, data)
        if mp3:
            playable = new_key(int(row["tenant"]), ".mp3")
            await store.put(playable, mp3)
    done = await db.fetchrow(
        "UPDATE wechat_media SET state = 'stored', content_type = $2, size = $3, sha256 = $4, storage_key = $5, "
        "playable_key = $6, filename = CASE WHEN filename = '' THEN $7 ELSE filename END, fetched_at = now(), "
        "error = '', errmsg = '' WHERE id = $1 AND state = 'pending' RETURNING id",
        row["id"], content_type, len(data), hashlib.sha256(data).hexdigest(), key, playable, filename[:200])
    if done is None:  # another run settled it first: its file stands, this one goes
        await store.delete(key)
        if playable:
            await store.delete(playable)
        return "settled before"
    await _announce(ctx, row)
    return "stored"


async def _fail(row: Any, error: str, errmsg: str, ctx: dict[str, Any] | None = None) -> str:
    done = await db.fetchrow(
        "UPDATE wechat_media SET state = 'failed', error = $2, errmsg = $3, fetched_at = now() "
        "WHERE id = $1 AND state = 'pending' RETURNING id", row["id"], error[:32], errmsg[:500])
    log.info("media %s of tenant %s not kept: %s %s", row["id"], row["tenant"], error, errmsg)
    if done is not None:
        await _announce(ctx or {}, row)
    return "failed"


async def _announce(ctx: dict[str, Any], row: Any) -> None:
    redis = ctx.get("redis")
    if redis is not None:
        source = row["source_event"]
        await redis.enqueue_job(READY_JOB, int(row["tenant"]), int(row["id"]), source,
                                _job_id=f"{READY_JOB}:{row['id']}:{secrets.token_hex(4)}")


def voice_to_mp3(amr: bytes) -> bytes:
    """A customer's AMR voice (WeChat's format; browsers do not play it) as MP3, or b"" when it cannot be
    decoded. Only the AMR demuxer is opened (the format is named, nothing is probed), and only ~2 MB / 60 s."""
    try:
        import av
    except ImportError:  # PyAV missing: the voice is offered for download instead
        return b""
    out = io.BytesIO()
    try:
        with av.open(io.BytesIO(amr), format="amr") as src, av.open(out, "w", format="mp3") as dst:
            stream = dst.add_stream("libmp3lame", rate=8000, layout="mono")
            resampler = av.AudioResampler(format="s16p", layout="mono", rate=8000)
            seconds = 0.0
            for frame in src.decode(audio=0):
                seconds += frame.samples / (frame.sample_rate or 8000)
                if seconds > 120:
                    break
                for resampled in resampler.resample(frame):
                    for packet in stream.encode(resampled):
                        dst.mux(packet)
            for packet in stream.encode(None):
                dst.mux(packet)
    except Exception as exc:  # a voice file ffmpeg cannot read: kept as it came, offered for download
        log.info("voice not transcoded: %r", exc)
        return b""
    return out.getvalue()


async def sweep(redis: Any) -> dict[str, int]:
    """Pending media whose job was lost (Redis) get it again; those pending past WeChat's 3 days fail as
    expired (nothing can fetch them any more)."""
    expired = await db.fetch(
        "UPDATE wechat_media SET state = 'failed', error = 'expired', errmsg = 'still pending after 3 days', "
        "fetched_at = now() WHERE state = 'pending' AND direction = 'in' AND created_at < now() - interval '3 days' "
        "RETURNING id, tenant, source_event")
    for r in expired:
        await _announce({"redis": redis}, r)
    stale = await db.fetch("SELECT id, tenant FROM wechat_media WHERE state = 'pending' AND direction = 'in' "
                           "AND created_at < now() - interval '10 minutes' ORDER BY created_at LIMIT 500")
    minute = int(now().timestamp()) // 60
    for r in stale:
        await enqueue_fetch(redis, int(r["tenant"]), int(r["id"]), f":sweep:{minute}")
    return {"media_expired": len(expired), "media_requeued": len(stale)}


# --- outbound: a rep's picture ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Blob:
    key: str
    content_type: str
    size: int
    sha256: str


def check_upload(channel: str, data: bytes, field: str = "image") -> str:
    """The picture's content type, or a 400 naming the field: JPG or PNG (by its bytes), not empty, within the
    channel's limit."""
    if not data:
        raise InvalidInput.one(field, N_("Choose a picture to send."))
    content_type = sniff(data)
    if content_type not in UPLOAD_TYPES:
        raise InvalidInput.one(field, N_("Send a JPG or PNG picture (this file is not one)."))
    limit = UPLOAD_MAX.get(channel, UPLOAD_MAX["oa"])
    if len(data) > limit:
        raise InvalidInput.one(field, N_("The picture is {size} MB; WeChat takes pictures up to {max} MB here."),
                               size=f"{len(data) / 1024 / 1024:.1f}", max=limit // (1024 * 1024))
    return content_type


async def put_upload(tenant_id: int, channel: str, data: bytes) -> Blob:
    """Keep a rep's picture in the store (before the transaction that records it: a rolled-back send leaves
    an unreferenced file, never a row without its bytes)."""
    content_type = check_upload(channel, data)
    key = new_key(tenant_id, EXTENSIONS[content_type])
    await media_store().put(key, data)
    return Blob(key, content_type, len(data), hashlib.sha256(data).hexdigest())


async def record_upload(tenant_id: int, channel: str, external_id: str, blob: Blob, filename: str) -> int:
    """The row of a rep's picture (in the caller's transaction); returns its id."""
    row = await db.fetchrow(
        "INSERT INTO wechat_media (tenant, channel, external_id, direction, media_id, kind, state, content_type, "
        "size, sha256, storage_key, playable_key, filename, recognition, error, errmsg, attempts, wechat_media_id, "
        "created_at, fetched_at) VALUES ($1, $2, $3, 'out', $4, 'image', 'stored', $5, $6, $7, $8, '', $9, '', '', "
        "'', 0, '', now(), now()) RETURNING id",
        tenant_id, channel, external_id[:128], f"siyu:{secrets.token_urlsafe(18)}", blob.content_type, blob.size,
        blob.sha256, blob.key, _clean_name(filename, blob.content_type))
    return int(row["id"])


def _clean_name(filename: str, content_type: str) -> str:
    base = "".join(c for c in (filename or "").split("/")[-1].split("\\")[-1] if c.isprintable()).strip()[:80]
    return base or f"picture{EXTENSIONS.get(content_type, '')}"


async def ensure_uploaded(client: WeChatClient, tenant_id: int, media_row_id: int) -> str:
    """The temporary media id WeChat knows the picture by, uploading it when it has none younger than 2.5 days
    (WeChat keeps one 3 days). Repeating an upload is harmless; errors propagate to the send."""
    row = await db.fetchrow("SELECT * FROM wechat_media WHERE tenant = $1 AND id = $2 AND direction = 'out'",
                            tenant_id, media_row_id)
    if row is None or row["state"] != "stored":
        raise NotFound()
    if row["wechat_media_id"] and row["uploaded_at"] is not None and row["uploaded_at"] > now() - REUPLOAD_AFTER:
        return str(row["wechat_media_id"])
    data = await media_store().get(row["storage_key"])
    if data is None:
        raise NotFound()
    answer = await client.upload_media(row["kind"], row["filename"] or "picture.jpg", data, row["content_type"])
    media_id = str(answer.get("media_id") or "")
    if not media_id:
        raise WeChatBusy(-1, "media/upload answered without a media_id")
    await db.execute("UPDATE wechat_media SET wechat_media_id = $2, uploaded_at = now() WHERE id = $1",
                     media_row_id, media_id)
    return media_id


# --- reads for the pages ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class MediaView:
    id: int
    kind: str  # image | voice | video | file
    state: str  # pending | stored | failed
    content_type: str
    size: int
    filename: str
    recognition: str  # WeChat's speech-to-text of a voice message ("" when not switched on)
    playable: bool  # a voice kept as MP3 too (browsers play it)
    inline: bool  # the stored type may be shown in the page (a picture, MP4, MP3)
    error: str  # failed: an errcode or a reason key (words in siyu.wechat.errors)


_VIEW = ("id, kind, state, content_type, size, filename, recognition, playable_key, error, source_event, channel, "
         "media_id")


def _view(r: Any) -> MediaView:
    return MediaView(int(r["id"]), r["kind"], r["state"], r["content_type"], int(r["size"]), r["filename"],
                     r["recognition"], bool(r["playable_key"]), r["content_type"] in INLINE, r["error"])


async def views(tenant_id: int, event_ids: list[int], media_row_ids: list[int]) -> dict[tuple[str, int], MediaView]:
    """The media of a page's messages, in one query: by the inbound callback they came with (`("event", id)`)
    and by row (`("row", id)`, a rep's picture)."""
    if not event_ids and not media_row_ids:
        return {}
    rows = await db.fetch(
        f"SELECT {_VIEW} FROM wechat_media WHERE tenant = $1 AND (source_event = ANY($2::bigint[]) "
        "OR id = ANY($3::bigint[]))", tenant_id, event_ids, media_row_ids)
    out: dict[tuple[str, int], MediaView] = {}
    for r in rows:
        view = _view(r)
        out[("row", view.id)] = view
        if r["source_event"] is not None:
            out[("event", int(r["source_event"]))] = view
    return out


async def by_media_ids(tenant_id: int, refs: list[tuple[str, str]]) -> dict[tuple[str, str], MediaView]:
    """The media WeChat knows by these (channel, media id): what a timeline event's payload names."""
    if not refs:
        return {}
    rows = await db.fetch(
        f"SELECT {_VIEW} FROM wechat_media WHERE tenant = $1 AND (channel, media_id) IN "
        "(SELECT * FROM unnest($2::text[], $3::text[]))", tenant_id, [c for c, _ in refs], [m for _, m in refs])
    return {(r["channel"], r["media_id"]): _view(r) for r in rows}


@dataclass(frozen=True)
class Served:
    data: bytes
    content_type: str  # what the answer says: an inline-safe type, else application/octet-stream
    filename: str
    inline: bool


async def open_media(tenant_id: int, media_row_id: int, playable: bool = False) -> Served:
    """A stored medium's bytes for a page that has checked who may see it (`playable`: a voice's MP3). A missing,
    failed or foreign one is NotFound."""
    row = await db.fetchrow("SELECT kind, state, content_type, storage_key, playable_key, filename FROM wechat_media "
                            "WHERE tenant = $1 AND id = $2", tenant_id, media_row_id)
    if row is None or row["state"] != "stored":
        raise NotFound()
    key = row["playable_key"] if playable and row["playable_key"] else row["storage_key"]
    content_type = "audio/mpeg" if key == row["playable_key"] and key else row["content_type"]
    data = await media_store().get(key)
    if data is None:
        raise NotFound()
    inline = content_type in INLINE and sniff(data) == content_type
    name = row["filename"] or f"{row['kind']}{EXTENSIONS.get(content_type, '')}"
    return Served(data, content_type if inline else "application/octet-stream", name, inline)


# --- erasure ----------------------------------------------------------------------------------------------------

async def erase_person(tenant_id: int, channel: str, external_id: str, until: Any = None) -> int:
    """Forget a person's media on a channel (an unfollow, an erasure): the rows and their files. Returns how many."""
    rows = await db.fetch(
        "DELETE FROM wechat_media WHERE tenant = $1 AND channel = $2 AND external_id = $3 "
        "AND ($4::timestamptz IS NULL OR created_at <= $4) RETURNING storage_key, playable_key",
        tenant_id, channel, external_id, until)
    keys = [k for r in rows for k in (r["storage_key"], r["playable_key"]) if k]

    async def remove() -> None:
        store = media_store()
        for key in keys:
            await store.delete(key)

    if keys:
        if db.in_transaction():
            db.on_commit(remove)
        else:
            await remove()
    return len(rows)
