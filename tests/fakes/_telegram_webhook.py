"""Telegram's side of a webhook, for the fake Bot API: setWebhook, deleteWebhook,
getWebhookInfo, and the delivery of pending updates by HTTP POST.

What it does as Telegram does (Bot API docs, "setWebhook" and "getWebhookInfo"):

- each update is POSTed as JSON to the URL, with `X-Telegram-Bot-Api-Secret-Token` when a
  secret was set; a 2xx answer is the acknowledgement, anything else (an error status, a
  refused or dropped connection, no answer within `timeout`) is a failure and the update is
  sent again after `retry_delay` (Telegram waits longer each time; the fake keeps it short so
  tests stay fast), and `last_error_message` says why;
- per chat, the next update is sent only after the previous call returned 2xx, so a chat's
  updates arrive in order; different chats are delivered concurrently, at most
  `max_connections` at once;
- while a webhook is set, getUpdates answers 409 Conflict.

One deliberate difference: Telegram accepts only HTTPS URLs on ports 443, 80, 88 and 8443; the
fake also accepts plain HTTP to a loopback address (127.0.0.1, localhost), where tests serve.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import aiohttp

from ._server import Journal

if TYPE_CHECKING:
    from .telegram import FakeTelegram

WEBHOOK_CONFLICT = (
    "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to "
    "delete the webhook first"
)
HTTPS_REQUIRED = "Bad Request: bad webhook: An HTTPS URL must be provided for webhook"
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
_PORTS = frozenset({443, 80, 88, 8443})


@dataclass
class Delivery:
    """One POST of an update to the webhook, recorded when the bot's answer (or its absence)
    is known."""

    update_id: int
    chat_id: int | None
    at: float
    status: int | None = None  # None: no HTTP answer (refused, dropped, timed out)
    error: str | None = None
    finished: float | None = None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


def chat_id_of(update: dict[str, Any]) -> int | None:
    for kind, value in update.items():
        if kind == "update_id" or not isinstance(value, dict):
            continue
        message = value.get("message") if kind == "callback_query" else value
        chat = message.get("chat") if isinstance(message, dict) else None
        chat = chat if isinstance(chat, dict) else value.get("chat")
        if isinstance(chat, dict) and "id" in chat:
            return int(chat["id"])
    return None


class Webhook:
    def __init__(self, tg: FakeTelegram) -> None:
        self.tg = tg
        self.url = ""
        self.secret_token: str | None = None
        self.max_connections = 40
        self.retry_delay = 0.2
        self.timeout = 10.0
        self.deliveries: Journal[Delivery] = Journal()
        self.last_error_date: int | None = None
        self.last_error_message: str | None = None
        self._in_flight: set[int] = set()
        self._busy_chats: set[int] = set()
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._wake = asyncio.Event()

    # -- the Bot API methods --------------------------------------------------------------------

    def set(self, params: dict[str, Any]) -> bool:
        from .telegram import ApiError

        url = str(params.get("url") or "")
        if not url:
            self.delete(params)
            return True
        parts = urlsplit(url)
        secure = parts.scheme == "https" and (parts.port or 443) in _PORTS
        if not secure and not (parts.scheme == "http" and parts.hostname in _LOOPBACK):
            raise ApiError(
                400, "Bad Request: bad webhook: An HTTPS URL must be provided for webhook"
            )
        secret = params.get("secret_token")
        if secret is not None and not (
            1 <= len(str(secret)) <= 256 and all(c.isalnum() or c in "_-" for c in str(secret))
        ):
            raise ApiError(400, "Bad Request: secret token contains unallowed characters")
        if params.get("drop_pending_updates"):
            self.tg.drop_pending()
        self.url = url
        self.secret_token = str(secret) if secret is not None else None
        self.max_connections = int(params.get("max_connections") or 40)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())
        self.wake()
        return True

    def delete(self, params: dict[str, Any]) -> bool:
        if params.get("drop_pending_updates"):
            self.tg.drop_pending()
        self.url = ""
        self.secret_token = None
        self.wake()
        return True

    def info(self, _params: dict[str, Any]) -> dict[str, Any]:
        info: dict[str, Any] = {
            "url": self.url,
            "has_custom_certificate": False,
            "pending_update_count": len(self.tg.pending_updates) if self.url else 0,
            "max_connections": self.max_connections,
        }
        if self.url and self.last_error_date is not None:
            info["last_error_date"] = self.last_error_date
            info["last_error_message"] = self.last_error_message
        return info

    # -- delivery -------------------------------------------------------------------------------

    def wake(self) -> None:
        self._wake.set()

    async def close(self) -> None:
        self.url = ""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def _run(self) -> None:
        self._session = aiohttp.ClientSession()
        deliveries: set[asyncio.Task[None]] = set()
        try:
            while True:
                self._wake.clear()
                if self.url:
                    for update in self._deliverable():
                        task = asyncio.create_task(self._deliver(update))
                        deliveries.add(task)
                        task.add_done_callback(deliveries.discard)
                await self._wake.wait()
        finally:
            for task in list(deliveries):
                task.cancel()
            await asyncio.gather(*deliveries, return_exceptions=True)

    def _deliverable(self) -> list[dict[str, Any]]:
        """The first pending update of each chat that has none in flight, oldest first."""
        chosen: list[dict[str, Any]] = []
        seen: set[int] = set()
        for update in self.tg.pending_updates:
            if len(self._in_flight) + len(chosen) >= self.max_connections:
                break
            chat = chat_id_of(update)
            if chat is not None:
                if chat in seen or chat in self._busy_chats:
                    seen.add(chat)
                    continue
                seen.add(chat)
            if update["update_id"] not in self._in_flight:
                chosen.append(update)
                self._in_flight.add(update["update_id"])
                if chat is not None:
                    self._busy_chats.add(chat)
        return chosen

    async def _deliver(self, update: dict[str, Any]) -> None:
        chat = chat_id_of(update)
        delivery = Delivery(update["update_id"], chat, time.monotonic())
        headers = {SECRET_HEADER: self.secret_token} if self.secret_token else {}
        assert self._session is not None
        try:
            async with self._session.post(
                self.url,
                json=update,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=self.timeout),
            ) as response:
                delivery.status = response.status
                await response.read()
        except TimeoutError:
            delivery.error = "Read timeout expired"
        except aiohttp.ClientError as exc:
            delivery.error = f"Connection failed: {type(exc).__name__}"
        delivery.finished = time.monotonic()
        if delivery.ok:
            self.tg.confirm_update(update["update_id"])
            self.deliveries.append(delivery)
        else:
            if delivery.error is None:
                delivery.error = f"Wrong response from the webhook: {delivery.status}"
            self.last_error_date = int(time.time())
            self.last_error_message = delivery.error
            self.deliveries.append(delivery)
            await self.tg.sleep(self.retry_delay)
        self._in_flight.discard(update["update_id"])
        if chat is not None:
            self._busy_chats.discard(chat)
        self.wake()
