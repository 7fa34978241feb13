"""Live inbox updates: Redis pub/sub → each web process → the browsers connected to it (server-sent events).

Services publish a conversation's change on `siyu:inbox:{tenant}` after commit (`conversations.announce`),
from any process (web or worker). Each web process keeps ONE pub/sub connection and subscribes to a
tenant's channel while at least one of that tenant's viewers is connected to it; a reader task fans every
message out to the connected viewers whose scope includes the conversation (`Viewer.sees`), plus those
who just lost it (the previous assignee, the team that saw it waiting), so their lists drop it.

The browser gets only the conversation id and what kind of change it was, and re-fetches what it shows
(the list row, the counts, the open thread) through the ordinary scoped pages.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import anyio
from redis.asyncio import Redis
from redis.asyncio.client import PubSub

from siyu.inbox.conversations import Viewer, live_channel, viewer_for

log = logging.getLogger("siyu.inbox.live")

HEARTBEAT_SECONDS = 15.0
STOP_WAIT_SECONDS = 5.0  # how long a stopping process waits for its streams' responses to finish
QUEUE_SIZE = 200  # per browser; a browser this far behind is told to reload everything instead
SUBSCRIBE_TIMEOUT = 5.0
VIEWER_REFRESH = 20  # heartbeats between re-reading the viewer's teams (about 5 minutes)


def reaches(viewer: Viewer, message: dict[str, Any]) -> bool:
    """Whether a connected viewer hears about a conversation change."""
    if message.get("event") == "presence":
        return message.get("staff") == viewer.staff_id  # their own other tabs
    if viewer.sees(message):
        return True
    previous = message.get("previous_assignee")
    if previous is not None and (previous == viewer.staff_id or previous in viewer.managed_staff_ids):
        return True  # it was theirs (or their team member's): their list drops it
    # Someone took or routed a waiting conversation: those who saw it waiting drop it from their queue.
    return str(message.get("event", "")).startswith("status:") and viewer.sees(
        {**message, "status": "queued", "assignee": None})


def alert_for(viewer: Viewer, message: dict[str, Any]) -> str | None:
    """Whether this change is one the viewer is told about with a sound and a notification: a conversation
    newly given to them ("assigned"), or a customer's message in one they hold ("message")."""
    if message.get("assignee") != viewer.staff_id:
        return None
    event = str(message.get("event") or "")
    if event == "status:assigned" and message.get("previous_assignee") != viewer.staff_id:
        return "assigned"
    if event == "message:in":
        return "message"
    return None


def for_browser(message: dict[str, Any], viewer: Viewer | None = None) -> tuple[str, str]:
    """(SSE event name, data) with no more than the browser needs to know what to re-fetch, and whether to
    alert this viewer."""
    if message.get("event") == "presence":
        return "presence", json.dumps({"presence": message.get("presence")})
    event = str(message.get("event") or "")
    kind = event.split(":", 1)[0]  # message | note | status | sent | failed
    data: dict[str, Any] = {"id": message.get("conversation"), "kind": kind}
    alert = alert_for(viewer, message) if viewer is not None else None
    if alert:
        data["alert"] = alert
    return "conversation", json.dumps(data)


@dataclass(eq=False)
class Listener:
    viewer: Viewer
    queue: asyncio.Queue[tuple[str, str] | None] = field(default_factory=lambda: asyncio.Queue(QUEUE_SIZE))
    overflowed: bool = False

    def offer(self, item: tuple[str, str] | None) -> None:
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            self.overflowed = True


class Relay:
    """One per web process (created in the app's lifespan)."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._pubsub: PubSub | None = None
        self._reader: asyncio.Task[None] | None = None
        self._groups: dict[str, set[Listener]] = {}
        self._confirmed: dict[str, asyncio.Event] = {}
        self._lock = asyncio.Lock()
        # A channel of this process alone keeps the connection subscribed, so the reader always has
        # something to read from (redis-py refuses to read from an unsubscribed pub/sub).
        self._own = f"siyu:inbox:relay:{secrets.token_hex(8)}"
        self._closing = False
        # Stream responses still being written (see `counted`): a stopping process waits for them.
        self._responses = 0
        self._no_responses = asyncio.Event()
        self._no_responses.set()

    async def start(self) -> None:
        self._pubsub = self._redis.pubsub()
        self._confirmed[self._own] = asyncio.Event()
        try:
            await self._pubsub.subscribe(self._own)
        except Exception as exc:  # Redis is away: the web process serves anyway; the reader subscribes later
            log.warning("inbox relay: Redis does not answer at start (%r); live updates wait for it", exc)
        self._reader = asyncio.create_task(self._read(), name="siyu-inbox-relay")
        self._end_streams_on_stop_signal()

    def end_streams(self) -> None:
        """End every open stream now (browsers reconnect, to another process if this one is stopping)."""
        self._closing = True
        for group in self._groups.values():
            for listener in group:
                listener.offer(None)

    def _end_streams_on_stop_signal(self) -> None:
        """The ASGI server stops a process by waiting for its open requests to finish, and an event stream
        never finishes by itself: when the process is told to stop, end the streams first, then let the
        server's own handler run. The server's handler is found in asyncio's table of signal handlers
        (a private attribute, so without it this does nothing and the server's kill timeout applies)."""
        loop = asyncio.get_running_loop()
        handlers = getattr(loop, "_signal_handlers", None)
        if not isinstance(handlers, dict):
            return
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous = handlers.get(sig)
            if not isinstance(previous, asyncio.Handle):
                continue

            def chained(previous: asyncio.Handle = previous) -> None:
                log.info("inbox relay: told to stop, ending %s live stream(s)",
                         sum(len(group) for group in self._groups.values()))
                self.end_streams()
                previous._run()

            loop.add_signal_handler(sig, chained)

    def response_started(self) -> None:
        self._responses += 1
        self._no_responses.clear()

    def response_ended(self) -> None:
        self._responses -= 1
        if self._responses <= 0:
            self._no_responses.set()

    async def stop(self, wait: float = STOP_WAIT_SECONDS) -> None:
        """End every stream and wait (bounded) until their responses are written to the end. The ASGI server
        runs this process's event loop only while the app stops: a stream still finishing when the stop is
        done would never finish, and the server would wait for it (measured: a stop that hung until the
        browser left)."""
        self.end_streams()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._no_responses.wait(), wait)
        if self._responses:
            log.warning("inbox relay: %s live stream(s) still open after %.0f s; stopping anyway",
                        self._responses, wait)
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._pubsub is not None:
            await self._pubsub.aclose()

    def listeners(self, tenant_id: int) -> int:
        return len(self._groups.get(live_channel(tenant_id), ()))

    async def _read(self) -> None:
        assert self._pubsub is not None
        failures = 0
        while True:
            try:
                if self._pubsub.connection is None:  # never subscribed (Redis was away at start)
                    await self._pubsub.subscribe(self._own)
                message = await self._pubsub.get_message(timeout=5.0)
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis restarted or the connection dropped: redis-py reconnects
                failures += 1
                if failures == 1 or failures % 60 == 0:
                    log.warning("inbox relay: reading from Redis failed %s time(s) (%r); retrying", failures, exc)
                await asyncio.sleep(min(5.0, 0.5 * failures))
                continue
            if message is None:
                continue
            channel = message["channel"].decode() if isinstance(message["channel"], bytes) else message["channel"]
            if message["type"] == "subscribe":
                if channel in self._confirmed:
                    self._confirmed[channel].set()
            elif message["type"] == "message":
                self._dispatch(channel, message["data"])

    def _dispatch(self, channel: str, data: bytes) -> None:
        group = self._groups.get(channel)
        if not group:
            return
        try:
            message = json.loads(data)
        except ValueError:
            log.warning("inbox relay: not JSON on %s: %r", channel, data[:200])
            return
        for listener in list(group):
            if reaches(listener.viewer, message):
                listener.offer(for_browser(message, listener.viewer))

    @contextlib.asynccontextmanager
    async def listen(self, tenant_id: int, viewer: Viewer) -> AsyncIterator[Listener]:
        """Receive a tenant's changes while inside; subscribed (and confirmed by Redis) on entry."""
        assert self._pubsub is not None, "Relay.start() first"
        channel = live_channel(tenant_id)
        listener = Listener(viewer)
        if self._closing:
            listener.offer(None)
        async with self._lock:
            group = self._groups.setdefault(channel, set())
            if not group:
                self._confirmed[channel] = asyncio.Event()
                await self._pubsub.subscribe(channel)
            group.add(listener)
            confirmed = self._confirmed[channel]
        try:
            with anyio.fail_after(SUBSCRIBE_TIMEOUT):
                await confirmed.wait()
            yield listener
        finally:
            # A disconnect cancels the stream: the unsubscribe must still reach Redis.
            with anyio.CancelScope(shield=True):
                await self._leave(channel, listener)

    async def _leave(self, channel: str, listener: Listener) -> None:
        async with self._lock:
            group = self._groups.get(channel)
            if group is None:
                return
            group.discard(listener)
            if not group:
                del self._groups[channel]
                self._confirmed.pop(channel, None)
                try:
                    await self._pubsub.unsubscribe(channel)  # type: ignore[union-attr]
                except Exception as exc:  # the connection is gone; nothing is subscribed on a new one
                    log.warning("inbox relay: unsubscribe %s failed: %r", channel, exc)


async def stream(relay: Relay, tenant_id: int, viewer: Viewer, heartbeat: float | None = None,
                 ended: asyncio.Event | None = None) -> AsyncIterator[tuple[str | None, str]]:
    """What one browser receives: ("ready", "{}") once subscribed, then (event, data) per change, and
    (None, "keep-alive") comments while nothing happens (proxies close silent connections). It ends as soon
    as `ended` is set: the session that opened it no longer grants access (the web layer watches that)."""
    beat = HEARTBEAT_SECONDS if heartbeat is None else heartbeat
    async with relay.listen(tenant_id, viewer) as listener:
        waker = None
        if ended is not None:
            async def wake() -> None:
                await ended.wait()
                listener.offer(None)

            waker = asyncio.create_task(wake())
        try:
            yield "ready", "{}"
            beats = 0
            while ended is None or not ended.is_set():
                if listener.overflowed:
                    listener.overflowed = False
                    while not listener.queue.empty():
                        listener.queue.get_nowait()
                    yield "resync", "{}"
                    continue
                try:
                    item = await asyncio.wait_for(listener.queue.get(), beat)
                except TimeoutError:
                    beats += 1
                    if beats % VIEWER_REFRESH == 0:
                        try:
                            listener.viewer = await viewer_for(tenant_id, viewer.staff_id)
                        except Exception:  # deactivated meanwhile, or the database is away: end the stream
                            return
                    yield None, "keep-alive"
                    continue
                if item is None:
                    return
                yield item
        finally:
            if waker is not None:
                waker.cancel()


def counted(app: Any) -> Any:
    """ASGI middleware for the stream route: the relay counts the response from its start until the server
    has taken its last byte, so a stopping process can wait for it (`Relay.stop`)."""

    async def counted_app(scope: Any, receive: Any, send: Any) -> None:
        relay: Relay = scope["app"].state.inbox_relay
        relay.response_started()
        try:
            await app(scope, receive, send)
        finally:
            relay.response_ended()

    return counted_app
