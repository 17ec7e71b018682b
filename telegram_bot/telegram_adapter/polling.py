"""Long polling: the getUpdates request that keeps every batch in the inbox before it is
acknowledged, and what a polling fault means.

python-telegram-bot acknowledges a batch with the offset of its next getUpdates call, so a
batch is safe once `PollingRequest.post` has returned it: that is where each batch is stored,
in one write (`Inbox.keep`), in `do_request`, the method a `BaseRequest` implements (the
getUpdates request serves nothing else; `post` is final). The batch is parsed here once more
than the library does (about 3 µs per update).

`PollingWatch` is the polling loop's error callback. A network fault, a 5xx, flood control or
a body that is not JSON is one WARNING line while polling goes on with back-off. 409 Conflict
means another process polls the same token (or a webhook was set): Telegram ends the older of
two parked getUpdates calls, and each poller, polling again a second later, ends the other's.
So a process none of whose getUpdates calls has come back yet is the newcomer, and stops with
one line at its first conflict; one that has been polling says so in a WARNING and goes on:
its next call ends the newcomer's. (Two processes started at the same moment: the first to be
ended stops. A newcomer whose very first call comes back at once, because updates were
waiting, counts as polling too: then both go on, each with a WARNING at every conflict, until
one is stopped by hand; rare, since a poller leaves few updates waiting.)
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

from telegram.error import Conflict, TelegramError
from telegram.request import BaseRequest, RequestData

from ..errors import AlreadyRunning, StartupError
from ..health import Heartbeat
from .inbox import Inbox
from .transport import AiohttpRequest

log = logging.getLogger(__name__)

_NO_UPDATES = b'{"ok":true,"result":[]}'
STOPPED_PAUSE = 0.5


class PollingRequest(AiohttpRequest):
    """The getUpdates request: each batch is in the inbox before python-telegram-bot sees it
    (and so before its next call acknowledges it)."""

    __slots__ = ("answered", "heartbeat", "inbox", "stopped")

    def __init__(self, inbox: Inbox, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.inbox = inbox
        self.stopped = False  # the token was rejected: no more calls
        self.answered = False  # a getUpdates call has come back: this process polls
        self.heartbeat: Heartbeat | None = None  # set by the lifecycle in polling mode

    async def do_request(
        self,
        url: str,
        method: str,
        request_data: RequestData | None = None,
        read_timeout: object = BaseRequest.DEFAULT_NONE,
        write_timeout: object = BaseRequest.DEFAULT_NONE,
        connect_timeout: object = BaseRequest.DEFAULT_NONE,
        pool_timeout: object = BaseRequest.DEFAULT_NONE,
    ) -> tuple[int, bytes]:
        if self.stopped:
            # The token was rejected and the process is stopping: no more calls, and no
            # error for the library's loop to log (it polls again until it is stopped).
            await asyncio.sleep(STOPPED_PAUSE)
            return 200, _NO_UPDATES
        status, payload = await super().do_request(
            url, method, request_data, read_timeout, write_timeout, connect_timeout, pool_timeout
        )
        if status == 401:  # said once by `on_unauthorized`, which stops the process
            self.stopped = True
            return 200, _NO_UPDATES
        if status == 200:
            self.answered = True
            if self.heartbeat is not None:
                self.heartbeat.beat()
            await self._keep(payload)
        return status, payload

    async def _keep(self, payload: bytes) -> None:
        try:
            batch = json.loads(payload).get("result")
        except (ValueError, AttributeError):
            return  # python-telegram-bot reports it
        if not isinstance(batch, list) or not batch:
            return
        fresh = await self.inbox.keep(batch)
        if len(fresh) < len(batch):
            self.inbox.skip_duplicates(
                update["update_id"] for update in batch if update["update_id"] not in fresh
            )


class PollingWatch:
    """The polling loop's error callback (must not raise); `stop` ends the process with a
    line and an exit code."""

    def __init__(self, stop: Callable[[StartupError], None], polling: PollingRequest) -> None:
        self.stop = stop
        self.polling = polling
        self.quiet = False  # stopping already: nothing more to say

    def __call__(self, exc: TelegramError) -> None:
        if self.quiet:
            return
        if isinstance(exc, Conflict):
            self._conflict(exc)
            return
        log.warning("Fetching updates failed (%s); polling goes on", exc)

    def _conflict(self, exc: Conflict) -> None:
        if "webhook" in exc.message.lower():
            self.quiet = True
            self.stop(
                AlreadyRunning(
                    "A webhook was set for this bot token (another process runs it in webhook "
                    "mode): Telegram allows polling or a webhook, not both; this process stops"
                )
            )
        elif not self.polling.answered:
            self.quiet = True
            self.stop(
                AlreadyRunning(
                    "Another process is already polling this bot token (Telegram answered 409 "
                    "Conflict); this one stops so only one answers. Stop the other one first, "
                    "or give each bot its own token"
                )
            )
        else:
            log.warning(
                "Another process polled this bot token (409 Conflict); it started later and "
                "stops at its first conflict; polling goes on"
            )
