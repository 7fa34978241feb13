"""Answering with a stored picture, voice or video: the bytes under headers that keep them from ever running as
a page. The view has checked who may see it; `siyu.wechat.media.open_media` chose an inline-safe content type
or `application/octet-stream`.

A served medium carries its own Content-Security-Policy (`sandbox`, nothing may load from it: even a file a
browser would render could run no script and reach nothing), `nosniff` (the browser keeps the declared type),
a Content-Disposition (inline only for the safe types; files and anything unknown download), and is kept in
the browser's private cache only.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from litestar import Response

MEDIA_CSP = "default-src 'none'; img-src 'self'; media-src 'self'; style-src 'none'; sandbox"


def media_response(data: bytes, content_type: str, filename: str, inline: bool) -> Response[Any]:
    ascii_name = "".join(c if c.isascii() and c.isalnum() or c in "._-" else "_" for c in filename)[:80] or "file"
    disposition = "inline" if inline else "attachment"
    return Response(content=data, media_type=content_type, status_code=200, headers={
        "Content-Disposition": f"{disposition}; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename)}",
        "Content-Security-Policy": MEDIA_CSP,
        "X-Content-Type-Options": "nosniff",
        "Cross-Origin-Resource-Policy": "same-origin",
        "Cache-Control": "private, max-age=3600",
    })
