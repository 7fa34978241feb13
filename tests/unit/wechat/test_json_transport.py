"""The JSON calls' HTTP (aiohttp): what reaches WeChat's socket, and what a failed exchange means for a send
(never sent: try again; maybe sent: unknown, never re-sent)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Callable

import pytest

from siyu.wechat.client import (
    TRANSPORT_ERRORS,
    JsonTransport,
    WeChatBusy,
    WeChatOutcomeUnknown,
    WeChatUnreachable,
    transport_failure,
)


@contextlib.asynccontextmanager
async def _server(answer: Callable[[bytes], bytes | None]) -> AsyncIterator[tuple[str, list[bytes]]]:
    """A raw HTTP/1.1 server on localhost: `answer(request)` gives the bytes to write back (None: close the
    connection without a word). Yields its base URL and the requests it read."""
    seen: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), 0)
        request = head + await reader.readexactly(length)
        seen.append(request)
        out = answer(request)
        if out is not None:
            writer.write(out)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", seen
    finally:
        server.close()
        await server.wait_closed()


def _ok(request: bytes) -> bytes:
    body = b'{"errcode":0,"errmsg":"ok"}'
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


async def test_a_call_sends_utf8_json_with_the_query_and_reads_the_answer() -> None:
    transport = JsonTransport(4, 2.0, 1.0)
    try:
        async with _server(_ok) as (base, seen):
            status, raw = await transport.request("POST", f"{base}/cgi-bin/message/custom/send",
                                                  {"access_token": "T0K", "force": True},
                                                  {"touser": "o1", "text": {"content": "新品上市"}})
            assert (status, json.loads(raw)) == (200, {"errcode": 0, "errmsg": "ok"})
            [request] = seen
            line, _, rest = request.partition(b"\r\n")
            assert line == b"POST /cgi-bin/message/custom/send?access_token=T0K&force=true HTTP/1.1"
            body = rest.partition(b"\r\n\r\n")[2]
            assert "新品上市".encode() in body  # as UTF-8, not \u-escaped
            assert json.loads(body) == {"touser": "o1", "text": {"content": "新品上市"}}
    finally:
        await transport.close()


async def test_no_answer_after_the_request_left_is_unknown_for_a_send_and_busy_for_a_read() -> None:
    transport = JsonTransport(4, 2.0, 1.0)
    try:
        async with _server(lambda request: None) as (base, seen):
            with pytest.raises(TRANSPORT_ERRORS) as caught:
                await transport.request("POST", f"{base}/cgi-bin/message/custom/send", {}, {"touser": "o1"})
            assert len(seen) == 1  # the request reached the server
            assert isinstance(transport_failure("send", caught.value, repeatable=False), WeChatOutcomeUnknown)
            assert isinstance(transport_failure("read", caught.value, repeatable=True), WeChatBusy)
    finally:
        await transport.close()


async def test_a_slow_answer_runs_out_the_deadline_as_unknown() -> None:
    transport = JsonTransport(4, 0.3, 1.0)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await asyncio.sleep(5)
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(TRANSPORT_ERRORS) as caught:
            await transport.request("POST", f"http://127.0.0.1:{port}/x", {}, {"a": 1})
        assert isinstance(transport_failure("send", caught.value, repeatable=False), WeChatOutcomeUnknown)
    finally:
        server.close()
        await transport.close()


async def test_nobody_listening_is_unreachable_never_unknown() -> None:
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    transport = JsonTransport(4, 2.0, 1.0)
    try:
        with pytest.raises(TRANSPORT_ERRORS) as caught:
            await transport.request("POST", f"http://127.0.0.1:{port}/x", {}, {"a": 1})
        assert isinstance(transport_failure("send", caught.value, repeatable=False), WeChatUnreachable)
    finally:
        await transport.close()
