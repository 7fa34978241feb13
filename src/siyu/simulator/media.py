"""Media as WeChat keeps them: the pictures, voice, videos and files simulated customers send (the simulator
issues their media ids) and the temporary media an app uploads (`cgi-bin/media/upload`), each for 3 days.

`cgi-bin/media/get` (both roots, each with its app's token) answers the bytes with WeChat's headers
(`Content-Type`, `Content-disposition: attachment; filename="…"`), an OA video as JSON `{"video_url": …}`
(WeChat's documented answer; the link points back at this simulator), and JSON 40007 for a media id it never
issued to this app or older than 3 days. `cgi-bin/media/upload` checks the type and size as WeChat does
(40004 type, 40005 file type, 40006/40009/40010/40011/40012 sizes, 44001 empty) and answers a media id that
the send endpoints then accept (an unknown or expired one: 40007).

What the simulator remembers of a medium is small (its kind, a sample name or the upload's digest, times):
customers' bytes come from the sample files in `samples/`, padded to a requested size for size tests; an
upload's bytes stay in memory only (a restart keeps its id, which is all a send needs).
"""

from __future__ import annotations

import hashlib
import secrets
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import quote

from litestar import Response

from siyu.simulator import rules
from siyu.simulator.api import OA_MP, WECOM, Call, WeChatError, endpoint, ok
from siyu.simulator.state import SimApp

SAMPLES = Path(__file__).resolve().parent / "samples"
SAMPLE_TYPES = {"photo.jpg": "image/jpeg", "photo.png": "image/png", "voice.amr": "audio/amr",
                "video.mp4": "video/mp4", "pricelist.pdf": "application/pdf"}
DEFAULT_SAMPLE = {"image": "photo.jpg", "voice": "voice.amr", "video": "video.mp4", "file": "pricelist.pdf",
                  "thumb": "photo.jpg"}
KEPT = 3 * rules.DAY
MAX_SYNTHETIC = 40 * 1024 * 1024  # a customer's padded sample, for size tests

# What media/upload takes: by type, the size limit and the errcode past it.
UPLOAD_LIMITS = {"image": (10 * 1024 * 1024, 40009), "voice": (2 * 1024 * 1024, 40010),
                 "video": (10 * 1024 * 1024, 40011), "thumb": (64 * 1024, 40012), "file": (20 * 1024 * 1024, 40006)}
MP_IMAGE_MAX = 2 * 1024 * 1024  # the Mini Program's uploadTempMedia: images only; 2 MB is our choice
UPLOAD_FORMATS = {"image": {"image/jpeg", "image/png", "image/gif", "image/bmp"}, "voice": {"audio/amr", "audio/mpeg"},
                  "video": {"video/mp4"}, "thumb": {"image/jpeg"}}
MAX_KEPT_UPLOADS = 200  # uploaded bytes kept in memory (the newest)

_upload_bytes: dict[str, bytes] = {}


@lru_cache(maxsize=8)
def sample(name: str) -> bytes:
    if name not in SAMPLE_TYPES:
        raise ValueError(f"sample must be one of {sorted(SAMPLE_TYPES)}")
    return (SAMPLES / name).read_bytes()


def sniff(data: bytes) -> str:
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if data[:2] == b"BM":
        return "image/bmp"
    if data.startswith(b"#!AMR"):
        return "audio/amr"
    if data.startswith(b"ID3") or data[:2] in (b"\xff\xfb", b"\xff\xf3"):
        return "audio/mpeg"
    if data[4:8] == b"ftyp":
        return "video/mp4"
    return "application/octet-stream"


def new_media_id() -> str:
    return secrets.token_urlsafe(48)[:64]


def issue(app: SimApp, kind: str, now: float, sample_name: str = "", size: int = 0, filename: str = "") -> str:
    """A medium a simulated customer sends: its new media id, remembered for 3 days."""
    name = sample_name or DEFAULT_SAMPLE[kind]
    sample(name)  # a bad name fails the push here
    if size and not 0 < size <= MAX_SYNTHETIC:
        raise ValueError(f"size_bytes must be between 1 and {MAX_SYNTHETIC}")
    media_id = new_media_id()
    app.media[media_id] = {"kind": kind, "origin": "customer", "sample": name, "size": size, "created_at": now,
                           "filename": filename or name}
    return media_id


def content(media_id: str, entry: dict[str, Any]) -> bytes:
    if entry.get("origin") == "upload":
        return _upload_bytes.get(media_id, b"")
    data = sample(entry["sample"])
    size = int(entry.get("size") or 0)
    return data + b"\0" * (size - len(data)) if size > len(data) else data


def _live(call: Call, media_id: str) -> dict[str, Any]:
    entry = call.a.media.get(media_id)
    if entry is None or call.now - float(entry["created_at"]) > KEPT:
        raise WeChatError(40007)
    return entry


def check_sendable(call: Call, media_id: Any) -> None:
    """A send naming a media id: it must be one of this app's, younger than 3 days (40007 otherwise)."""
    _live(call, str(media_id or ""))


EXTENSIONS = {"image/jpeg": "jpg", "image/png": "png", "audio/amr": "amr", "video/mp4": "mp4",
              "application/pdf": "pdf", "audio/mpeg": "mp3", "image/gif": "gif", "image/bmp": "bmp"}


def _answer(media_id: str, entry: dict[str, Any]) -> Response[Any]:
    data = content(media_id, entry)
    content_type = SAMPLE_TYPES.get(entry.get("sample", ""), entry.get("content_type", "application/octet-stream"))
    name = f"{media_id}.{EXTENSIONS.get(content_type, 'bin')}"
    if entry["kind"] == "file":
        name = entry.get("filename") or name
    # A file's own name may be Chinese: sent the RFC 5987 way, with an ASCII stand-in.
    ascii_name = name if name.isascii() else f"{media_id}.{EXTENSIONS.get(content_type, 'bin')}"
    disposition = f'attachment; filename="{ascii_name}"'
    if ascii_name != name:
        disposition += f"; filename*=UTF-8''{quote(name)}"
    return Response(data, media_type=content_type, status_code=200, headers={"Content-disposition": disposition})


def _get(call: Call) -> Response[Any] | dict[str, Any]:
    media_id = str(call.query.get("media_id", ""))
    entry = _live(call, media_id)
    if call.a.kind == "mp" and entry["kind"] != "image":  # "目前小程序仅支持下载图片文件"
        raise WeChatError(40007)
    if call.a.kind == "oa" and entry["kind"] == "video" and entry.get("origin") == "customer":
        # WeChat answers an OA video with a link to fetch it from (here: back to this simulator).
        return {"video_url": f"{call.base}/_sim/media/{media_id}?app_id={call.a.app_id}"}
    return _answer(media_id, entry)


@endpoint("wechat-api", "cgi-bin/media/get", "GET", OA_MP)
def media_get(call: Call) -> Response[Any] | dict[str, Any]:
    return _get(call)


@endpoint("wecom-api", "cgi-bin/media/get", "GET", WECOM)
def wecom_media_get(call: Call) -> Response[Any] | dict[str, Any]:
    return _get(call)


def _upload(call: Call) -> dict[str, Any]:
    app = call.a
    kind = str(call.query.get("type", ""))
    allowed = {"image", "voice", "video", "file"} if app.kind == "wecom" else (
        {"image"} if app.kind == "mp" else {"image", "voice", "video", "thumb"})
    if kind not in allowed:
        raise WeChatError(40004)
    upload = call.files.get("media")
    if upload is None:
        raise WeChatError(44001)
    filename, data = upload
    if not data or (app.kind == "wecom" and len(data) <= 5):
        raise WeChatError(44001 if not data else 40006)
    limit, errcode = UPLOAD_LIMITS[kind]
    if app.kind == "mp":
        limit = MP_IMAGE_MAX
    if len(data) > limit:
        raise WeChatError(errcode)
    content_type = sniff(data)
    if kind in UPLOAD_FORMATS and content_type not in UPLOAD_FORMATS[kind]:
        raise WeChatError(40005)
    media_id = new_media_id()
    app.media[media_id] = {"kind": kind, "origin": "upload", "content_type": content_type, "size": len(data),
                           "sha256": hashlib.sha256(data).hexdigest(), "created_at": call.now,
                           "filename": filename[:120]}
    _upload_bytes[media_id] = data
    while len(_upload_bytes) > MAX_KEPT_UPLOADS:
        _upload_bytes.pop(next(iter(_upload_bytes)))
    answer = {"type": kind, "media_id": media_id, "created_at": int(call.now)}
    return ok(**{**answer, "created_at": str(int(call.now))}) if app.kind == "wecom" else answer


@endpoint("wechat-api", "cgi-bin/media/upload", "POST", OA_MP, body="multipart")
def media_upload(call: Call) -> dict[str, Any]:
    return _upload(call)


@endpoint("wecom-api", "cgi-bin/media/upload", "POST", WECOM, body="multipart")
def wecom_media_upload(call: Call) -> dict[str, Any]:
    return _upload(call)


def public(app: SimApp, media_id: str) -> dict[str, Any] | None:
    """What the control API shows of a medium (no bytes): for tests to check what a send carried."""
    entry = app.media.get(media_id)
    if entry is None:
        return None
    return {"media_id": media_id, **{k: v for k, v in entry.items()}}
