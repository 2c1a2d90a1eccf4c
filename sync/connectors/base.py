"""The HTTP layer every connector shares: retries with exponential backoff on transient failures,
Retry-After on 429, no retry on 4xx, and the platform's own error codes mapped to retry or not.

A connector passes a `check` callback that inspects the parsed body (platforms answer HTTP 200 with an
error envelope) and raises `TransientError` or `PermanentError`.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import quote_plus

import httpx
import orjson

from sync.canonical import Batch
from sync.config import SyncSettings
from sync.connectors.transport import HttptoolsTransport

log = logging.getLogger(__name__)


class SyncError(RuntimeError):
    """A channel call failed for good; the message names the channel, the call and the reason."""


class TransientError(Exception):
    """Worth retrying: timeouts, 5xx, rate limits, platform 'system busy' codes."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentError(SyncError):
    """Not worth retrying: 4xx, bad signature, bad parameters (caller faults)."""


def error_code_of(body: bytes) -> str:
    """The platform's error code from a JSON error body (`code`, `errcode`, `error_code`, `error`), which
    says what went wrong without repeating what the request carried; empty when there is none."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return ""
    if not isinstance(data, dict):
        return ""
    for key in ("code", "errcode", "error_code", "error", "sub_code"):
        value = data.get(key)
        if isinstance(value, str | int) and not isinstance(value, bool) and len(str(value)) <= 64:
            return f" ({key}={value})"
    return ""


class TokenExpiredError(Exception):
    """The access token was refused: refresh it, then retry once."""


@dataclass
class RequestStats:
    """Counters a run reports (and the tests read): requests, retries and what caused them."""

    requests: int = 0
    retries: int = 0
    causes: dict[str, int] = field(default_factory=dict)

    def count_retry(self, cause: str) -> None:
        self.retries += 1
        self.causes[cause] = self.causes.get(cause, 0) + 1


Check = Callable[[Any], None]
FORM_HEADERS = {"Content-Type": "application/x-www-form-urlencoded"}
# Keys and most values of signed forms repeat from request to request (method, app key, fields, windows).
_QUOTED: dict[str, str] = {}


def _quote(text: str) -> str:
    quoted = _QUOTED.get(text)
    if quoted is None:
        quoted = quote_plus(text)
        if len(_QUOTED) < 4096:
            _QUOTED[text] = quoted
    return quoted


def _form_text(value: Any) -> str:
    # As httpx turns form values into text.
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return ""
    return value if isinstance(value, str) else str(value)


def form_urlencoded(data: dict[str, Any]) -> bytes:
    """The body httpx sends for `data=data`: the same bytes (lists and tuples repeat their key)."""
    pairs: list[str] = []
    for key, value in data.items():
        name = _quote(str(key))
        if isinstance(value, list | tuple):
            pairs.extend(f"{name}={_quote(_form_text(v))}" for v in value)
        else:
            pairs.append(f"{name}={_quote(_form_text(value))}")
    return "&".join(pairs).encode()


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After is either delta-seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(0.0, when.timestamp() - time.time())


class ChannelClient:
    """An httpx.AsyncClient wrapper bound to one channel's base URL."""

    def __init__(
        self,
        channel: str,
        base_url: str,
        settings: SyncSettings,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.channel = channel
        self.settings = settings
        self.stats = RequestStats()
        # Set by connectors whose tokens expire (WeChat): called once on TokenExpiredError.
        self.refresh_token: Callable[[], Awaitable[None]] | None = None
        self._urls: dict[str, httpx.URL] = {}
        limits = httpx.Limits(
            max_connections=settings.concurrency * 2, max_keepalive_connections=settings.concurrency * 2
        )
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers=headers or {},
            timeout=httpx.Timeout(settings.request_timeout_seconds),
            # httpx's API over a leaner HTTP/1.1 layer (transport.py): a third of the CPU per request of httpx's
            # default transport (on loopback, ~250 µs against ~800).
            transport=HttptoolsTransport(limits=limits),
        )

    def _url(self, path: str) -> httpx.URL:
        """`path` merged with the base URL (by httpx, once per path: its URL parsing costs more than the
        rest of building a request)."""
        url = self._urls.get(path)
        if url is None:
            url = self._urls[path] = self._client.build_request("GET", path).url
        return url

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> ChannelClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.settings.backoff_max_seconds)
        base = self.settings.backoff_base_seconds * (2**attempt)
        # Jitter so that concurrent pages do not retry in lockstep.
        return min(base * (0.5 + random.random() / 2), self.settings.backoff_max_seconds)

    async def request_json(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | Callable[[], dict[str, Any]] | None = None,
        data: dict[str, Any] | None = None,
        json: Any = None,
        headers: dict[str, str] | None = None,
        check: Check | None = None,
        sign: Callable[[], dict[str, Any]] | None = None,
        parse: Callable[[bytes], Any] | None = None,
    ) -> Any:
        """Send a request and return the parsed JSON body, retrying transient failures.

        `sign`, when given, rebuilds the form/query parameters for every attempt (signatures carry a
        timestamp that must be fresh); `params` may be a callable for the same reason (a refreshed token).
        `check` raises TransientError/PermanentError on error envelopes. `parse` replaces orjson for the
        body (a connector's fast path that validates a whole page straight from bytes).
        """
        attempt = 0
        token_refreshed = False
        while True:
            self.stats.requests += 1
            cause: str
            retry_after: float | None = None
            try:
                query = params() if callable(params) else params
                if sign is not None:
                    signed = sign()
                    if method == "GET":
                        query = signed
                    else:
                        data = signed
                content = None
                if data is not None:
                    # Encoded here, as httpx would (data=), at a third of the cost.
                    content = form_urlencoded(data)
                    if not headers or not any(k.lower() == "content-type" for k in headers):
                        headers = {**(headers or {}), **FORM_HEADERS}
                response = await self._client.request(
                    method, self._url(path), params=query, content=content, json=json, headers=headers
                )
                status = response.status_code
                if status == 429:
                    cause = "429"
                    retry_after = parse_retry_after(response.headers.get("retry-after"))
                elif status >= 500:
                    cause = f"http {status}"
                elif status >= 400:
                    # Some platforms answer rate limits with a 4xx and an error body: let `check` decide.
                    if check is not None:
                        try:
                            check(orjson.loads(response.content))
                        except orjson.JSONDecodeError:
                            pass
                    # The body is not quoted: channels echo the request (phones, names) in their errors.
                    raise PermanentError(
                        f"{self.channel}: {method} {path} answered HTTP {status} {response.reason_phrase}"
                        f"{error_code_of(response.content)}"
                    )
                else:
                    # Parsing a page is milliseconds of CPU on the event loop: let what is already waiting on it
                    # (the landing writes' next statements) go first, or PostgreSQL idles behind every page
                    # parsed ahead of it.
                    await asyncio.sleep(0)
                    try:
                        body = (
                            parse(response.content) if parse is not None else orjson.loads(response.content)
                        )
                    except orjson.JSONDecodeError:
                        # A truncated or garbled body is a transport glitch, not a row to quarantine.
                        cause = "malformed body"
                    else:
                        if check is not None:
                            check(body)
                        return body
            except httpx.TimeoutException:
                cause = "timeout"
            except httpx.TransportError as exc:
                cause = f"transport: {type(exc).__name__}"
            except TransientError as exc:
                cause = str(exc)
                retry_after = exc.retry_after
            except TokenExpiredError as exc:
                if token_refreshed or self.refresh_token is None:
                    raise PermanentError(
                        f"{self.channel}: {method} {path}: token refused after refresh: {exc}"
                    ) from exc
                # A refused token is refreshed once and the call retried at once, without backoff.
                token_refreshed = True
                await self.refresh_token()
                self.stats.count_retry("token refresh")
                continue
            if attempt >= self.settings.max_retries:
                raise SyncError(
                    f"{self.channel}: {method} {path} still failing after {attempt} retries (last: {cause})"
                )
            delay = self._delay(attempt, retry_after)
            self.stats.count_retry(cause.split(":")[0])
            log.info(
                "%s: %s %s failed (%s); retry %d in %.2fs",
                self.channel,
                method,
                path,
                cause,
                attempt + 1,
                delay,
            )
            await asyncio.sleep(delay)
            attempt += 1


T = TypeVar("T")


async def ordered_prefetch(
    thunks: AsyncIterator[Callable[[], Awaitable[T]]] | Iterable[Callable[[], Awaitable[T]]], limit: int
) -> AsyncIterator[T]:
    """Run up to `limit` requests at once and yield their results in the order they were asked for.

    Results come back in order so that a watermark attached to the last page of a window only lands
    after every earlier page has; the bounded look-ahead keeps memory flat however long the feed is.
    """
    pending: deque[asyncio.Task[T]] = deque()

    async def source() -> AsyncIterator[Callable[[], Awaitable[T]]]:
        if isinstance(thunks, AsyncIterator):
            async for t in thunks:
                yield t
        else:
            for t in thunks:
                yield t

    it = source()
    exhausted = False
    try:
        while True:
            while not exhausted and len(pending) < limit:
                try:
                    thunk = await anext(it)
                except StopAsyncIteration:
                    exhausted = True
                    break
                pending.append(asyncio.ensure_future(thunk()))
            if not pending:
                return
            task = pending.popleft()
            yield await task
    finally:
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)


class Connector:
    """One channel: its streams (e.g. trades, refunds), each pulled incrementally as ordered batches.

    Subclasses set `channel`, `streams`, and implement `pull`. `normalizers` maps a quarantine entity to
    the function that validates and normalizes raw rows of it, so `c360 sync quarantine replay` runs the
    same code as a live pull.
    """

    channel: str = ""
    streams: tuple[str, ...] = ()

    def __init__(self, settings: SyncSettings) -> None:
        self.settings = settings
        self.config = settings.channel(self.channel)
        self.client = ChannelClient(self.channel, self.config.base_url, settings, self.default_headers())

    def default_headers(self) -> dict[str, str]:
        return {}

    def watermark_key(self, stream: str) -> str:
        return f"{self.channel}.{stream}"

    def normalizers(self) -> dict[str, Callable[[list[Any]], Batch]]:
        return {}

    def pull(
        self, stream: str, watermark: dict[str, Any] | None, since: datetime | None
    ) -> AsyncIterator[Batch]:
        """Yield batches of `stream` from the stored watermark (or `since`), in landing order."""
        raise NotImplementedError

    def full_first_pull(self, stream: str) -> bool:
        """True when the stream's first pull reads everything (no look-back): re-reading it means reading all."""
        return False

    async def start_time(self, watermark: dict[str, Any] | None, since: datetime | None) -> datetime:
        """Where an incremental pull starts: --since, else the watermark, else the initial look-back
        (counted back from the source's now, see `end_time`)."""
        if since is not None:
            return since
        if watermark and watermark.get("watermark_at") is not None:
            wm: datetime = watermark["watermark_at"]
            return wm
        return await self.end_time() - timedelta(days=self.settings.initial_lookback_days)

    async def end_time(self) -> datetime:
        """Where an incremental window ends: now minus the safety lag, or the source's own clock when
        `source_clock_url` is set (the simulator's clock is virtual and may lag ours by months)."""
        end = datetime.now(UTC) - timedelta(seconds=self.settings.safety_lag_seconds)
        if self.settings.source_clock_url:
            # Our transport: httpx's default one builds an SSL context (~65 ms of CPU) even for http://.
            transport = HttptoolsTransport()
            async with httpx.AsyncClient(
                timeout=self.settings.request_timeout_seconds, transport=transport
            ) as client:
                reply = await client.get(self.settings.source_clock_url)
                reply.raise_for_status()
                source_now = datetime.fromisoformat(str(reply.json()["now"]))
            end = min(end, source_now)
        return end

    def files_landed(self, paths: list[str]) -> None:
        """Called after the commit of a batch that held whole drop-folder files (POS)."""

    async def aclose(self) -> None:
        await self.client.aclose()


def time_windows(start: datetime, end: datetime, minutes: int) -> Iterable[tuple[datetime, datetime]]:
    """[start, end) cut into windows of at most `minutes`."""
    step = timedelta(minutes=minutes)
    lo = start
    while lo < end:
        hi = min(lo + step, end)
        yield lo, hi
        lo = hi


def watermark_high(watermark: dict[str, Any] | None) -> datetime | None:
    return (watermark or {}).get("watermark_at")


def max_modified(batch: Batch, high: datetime | None) -> datetime | None:
    """The newest source modification time landed so far.

    Incremental watermarks are the newest *source* time seen, never our own clock: the source stamps
    later changes at or after its own now, which can lag ours (or be virtual, as in the simulator), so
    a watermark taken from our clock could skip rows the source writes afterwards with earlier stamps.
    """
    times = [o.source_updated_at for o in batch.orders] + [r.source_updated_at for r in batch.refunds]
    newest = max(times, default=None)
    if newest is not None and (high is None or newest > high):
        return newest
    return high
