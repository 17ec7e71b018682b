"""A python-telegram-bot request class over aiohttp, for the Bot API calls that carry replies.

python-telegram-bot's default `HTTPXRequest` spends most of a reply's CPU in httpx's
connection-pool bookkeeping (about half of it, profiled under load; see docs/benchmarks.md).
aiohttp's pool is far cheaper per request, and the bot already depends on aiohttp for the
OpenAI client, so one HTTP stack serves both upstreams.

Only the transport changes: python-telegram-bot still parses every answer, so its error
semantics are untouched (`RetryAfter`, `BadRequest`, `Forbidden`, `ChatMigrated`, `Conflict`
come from the status code and the JSON body, in `BaseRequest`). What is ours to map, we map the
way `HTTPXRequest` does: a timeout is `TimedOut`, any other transport failure is `NetworkError`.
Two choices of our own: a body that is not JSON (a proxy's HTML page) is the same
`TelegramError("Invalid server response")` without the library's logged traceback, so the
caller's one line is all the log shows; and a 401 (Telegram rejects the token: revoked) is
reported to `on_unauthorized`, so the process can stop instead of idling as a zombie.
aiohttp is imported when the request is initialised, not when this module is.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from telegram.error import NetworkError, TelegramError, TimedOut
from telegram.request import BaseRequest, RequestData

if TYPE_CHECKING:
    import aiohttp

_FORM = {"Content-Type": "application/x-www-form-urlencoded"}


class AiohttpRequest(BaseRequest):
    """One aiohttp session (one keep-alive pool) per instance."""

    __slots__ = (
        "_connect_timeout",
        "_pool_size",
        "_pool_timeout",
        "_read_timeout",
        "_session",
        "_write_timeout",
        "on_unauthorized",
    )

    def __init__(
        self,
        *,
        connection_pool_size: int = 256,
        read_timeout: float | None = 5.0,
        write_timeout: float | None = 5.0,
        connect_timeout: float | None = 5.0,
        pool_timeout: float | None = 1.0,
    ) -> None:
        self._pool_size = connection_pool_size
        self._read_timeout = read_timeout
        self._write_timeout = write_timeout
        self._connect_timeout = connect_timeout
        self._pool_timeout = pool_timeout
        self._session: aiohttp.ClientSession | None = None
        self.on_unauthorized: Callable[[], None] | None = None

    @property
    def read_timeout(self) -> float | None:
        return self._read_timeout

    async def initialize(self) -> None:
        if self._session is not None and not self._session.closed:
            return
        import aiohttp

        connector = aiohttp.TCPConnector(limit=self._pool_size, ttl_dns_cache=300)
        self._session = aiohttp.ClientSession(
            connector=connector,
            headers={"User-Agent": self.USER_AGENT},
        )

    async def shutdown(self) -> None:
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()

    async def do_request(
        self,
        url: str,
        method: str,
        request_data: RequestData | None = None,
        # `object`: PTB's own annotation is a private type; what arrives is a number, None or
        # BaseRequest.DEFAULT_NONE ("not set"), as its documentation says to check.
        read_timeout: object = BaseRequest.DEFAULT_NONE,
        write_timeout: object = BaseRequest.DEFAULT_NONE,
        connect_timeout: object = BaseRequest.DEFAULT_NONE,
        pool_timeout: object = BaseRequest.DEFAULT_NONE,
    ) -> tuple[int, bytes]:
        import aiohttp

        session = self._session
        if session is None or session.closed:
            raise RuntimeError("This AiohttpRequest is not initialized!")
        read = _seconds(read_timeout, self._read_timeout)
        write = _seconds(write_timeout, self._write_timeout)
        connect = _seconds(connect_timeout, self._connect_timeout)
        pool = _seconds(pool_timeout, self._pool_timeout)
        timeout = aiohttp.ClientTimeout(
            total=None,
            # aiohttp's `connect` covers waiting for a free pooled connection and connecting.
            connect=None if pool is None or connect is None else pool + connect,
            sock_connect=connect,
            # A socket write that stalls for `write` also shows up as no answer to read.
            sock_read=read if read is None or write is None else max(read, write),
        )
        body, headers = _encode(request_data)
        try:
            async with session.request(
                method, url, data=body, headers=headers, timeout=timeout
            ) as response:
                status, payload = response.status, await response.read()
        except TimeoutError as exc:
            raise TimedOut(f"aiohttp.{type(exc).__name__}: timed out") from exc
        except aiohttp.ClientError as exc:
            raise NetworkError(f"aiohttp.{type(exc).__name__}: {exc}") from exc
        if status == 401 and self.on_unauthorized is not None:
            self.on_unauthorized()
        return status, payload

    @staticmethod
    def parse_json_payload(payload: bytes) -> dict[str, Any]:
        """As `BaseRequest`'s (which documents overriding it), minus its logged traceback and
        the body it logs: the caller logs one line for the error."""
        try:
            data: dict[str, Any] = json.loads(payload.decode("utf-8", "replace"))
        except ValueError:
            raise TelegramError("Invalid server response") from None
        return data


def _seconds(value: object, default: float | None) -> float | None:
    """A timeout as passed to `do_request`: our own default where the caller set none."""
    if value is BaseRequest.DEFAULT_NONE:
        return default
    if value is None or isinstance(value, int | float):
        return value
    raise TypeError(f"a timeout must be a number of seconds or None, not {value!r}")


def _encode(request_data: RequestData | None) -> tuple[Any, dict[str, str] | None]:
    """A urlencoded form, or multipart when files are uploaded (as HTTPXRequest sends)."""
    if request_data is None:
        return None, None
    fields = request_data.json_parameters
    files = request_data.multipart_data
    if not files:
        return urlencode(fields).encode(), _FORM
    import aiohttp

    form = aiohttp.FormData()
    for name, value in fields.items():
        form.add_field(name, value)
    for name, (filename, content, mimetype) in files.items():
        form.add_field(name, content, filename=filename, content_type=mimetype)
    return form, None
