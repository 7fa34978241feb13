"""A small keep-alive HTTP/1.1 load generator on asyncio streams: C connections, each sending its share of
pre-built requests back to back and timing every answer. Lean on purpose: on a 2-core machine the load
generator shares the CPU with the server, and a heavy client would measure itself."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass
class Result:
    latencies_ms: list[float]
    statuses: dict[int, int]
    bodies_ok: int
    seconds: float

    @property
    def rate(self) -> float:
        return len(self.latencies_ms) / self.seconds if self.seconds else 0.0

    def pct(self, p: float) -> float:
        if not self.latencies_ms:
            return 0.0
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]

    @property
    def mean(self) -> float:
        return statistics.fmean(self.latencies_ms) if self.latencies_ms else 0.0


def build_request(host: str, port: int, path: str, body: bytes, content_type: str = "text/xml") -> bytes:
    head = (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: keep-alive\r\n\r\n")
    return head.encode() + body


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("server closed the connection")
    status = int(status_line.split()[1])
    length = 0
    chunked = False
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.decode("latin-1").partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value.strip())
        elif name == "transfer-encoding" and "chunked" in value.lower():
            chunked = True
    if chunked:
        body = b""
        while True:
            size = int((await reader.readline()).strip() or b"0", 16)
            if size == 0:
                await reader.readline()
                break
            body += await reader.readexactly(size)
            await reader.readline()
        return status, body
    return status, await reader.readexactly(length) if length else b""


async def run(host: str, port: int, requests: Sequence[bytes], concurrency: int,
              expect_body: Callable[[bytes], bool], progress: Callable[[int], None] | None = None,
              fresh: bool = False) -> Result:
    """`concurrency` clients send the requests back to back, on keep-alive connections, or (`fresh`) each on
    a new connection, as independent deliveries from many machines arrive; a latency then includes the
    connection's setup."""
    if fresh:
        return await _run_fresh(host, port, requests, concurrency, expect_body)
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    ok_bodies = 0
    next_index = 0
    done = 0

    async def worker() -> None:
        nonlocal next_index, ok_bodies, done
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while next_index < len(requests):
                req = requests[next_index]
                next_index += 1
                t0 = time.perf_counter()
                writer.write(req)
                await writer.drain()
                status, body = await _read_response(reader)
                latencies.append((time.perf_counter() - t0) * 1000)
                statuses[status] = statuses.get(status, 0) + 1
                if expect_body(body):
                    ok_bodies += 1
                done += 1
                if progress and done % 500 == 0:
                    progress(done)
        finally:
            writer.close()

    start = time.perf_counter()
    await asyncio.gather(*[worker() for _ in range(concurrency)])
    return Result(latencies, statuses, ok_bodies, time.perf_counter() - start)


async def paced(host: str, port: int, requests: Sequence[bytes], rate: float, concurrency: int,
                expect_body: Callable[[bytes], bool]) -> Result:
    """Open loop: request i is due at start + i / rate, whatever happened to the ones before it, and its
    latency counts from that moment (a stalled server shows as the queue it builds, not hidden by a
    client that politely waited). `concurrency` connections share the schedule."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    ok_bodies = 0
    next_index = 0
    start = time.perf_counter() + 0.05

    async def worker() -> None:
        nonlocal next_index, ok_bodies
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while next_index < len(requests):
                i = next_index
                next_index += 1
                due = start + i / rate
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                writer.write(requests[i])
                await writer.drain()
                status, body = await _read_response(reader)
                latencies.append((time.perf_counter() - due) * 1000)
                statuses[status] = statuses.get(status, 0) + 1
                if expect_body(body):
                    ok_bodies += 1
        finally:
            writer.close()

    await asyncio.gather(*[worker() for _ in range(concurrency)])
    return Result(latencies, statuses, ok_bodies, time.perf_counter() - start)


async def one(host: str, port: int, request: bytes, timeout: float) -> tuple[int, float]:
    """Send one request on a fresh connection: (status, ms); status 0 when no answer came in `timeout` s."""
    t0 = time.perf_counter()
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (TimeoutError, OSError):
        return 0, (time.perf_counter() - t0) * 1000
    try:
        writer.write(request)
        await writer.drain()
        status, _ = await asyncio.wait_for(_read_response(reader), timeout)
    except (TimeoutError, OSError, ConnectionError, asyncio.IncompleteReadError):
        status = 0
    finally:
        writer.close()
    return status, (time.perf_counter() - t0) * 1000


async def _run_fresh(host: str, port: int, requests: Sequence[bytes], concurrency: int,
                     expect_body: Callable[[bytes], bool]) -> Result:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    ok_bodies = 0
    next_index = 0

    async def worker() -> None:
        nonlocal next_index, ok_bodies
        while next_index < len(requests):
            req = requests[next_index]
            next_index += 1
            t0 = time.perf_counter()
            reader, writer = await asyncio.open_connection(host, port)
            try:
                writer.write(req)
                await writer.drain()
                status, body = await _read_response(reader)
            finally:
                writer.close()
            latencies.append((time.perf_counter() - t0) * 1000)
            statuses[status] = statuses.get(status, 0) + 1
            if expect_body(body):
                ok_bodies += 1

    start = time.perf_counter()
    await asyncio.gather(*[worker() for _ in range(concurrency)])
    return Result(latencies, statuses, ok_bodies, time.perf_counter() - start)
