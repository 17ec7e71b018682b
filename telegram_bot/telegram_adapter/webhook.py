"""Webhook mode: the HTTP server Telegram posts updates to, with the health check beside it.

The server is aiohttp's (`aiohttp.web`), on the bot's own event loop. The bot already runs on
aiohttp (the Bot API transport and the OpenAI client), so this adds no dependency and no second
HTTP stack; python-telegram-bot's `run_webhook` would bring tornado (its `webhooks` extra):
another library to install, import and keep in memory on a Raspberry Pi, and a server whose
hooks (health, draining, the inbox before the 200) we would have to graft on. Here a request is:

1. the secret: `X-Telegram-Bot-Api-Secret-Token` must equal WEBHOOK_SECRET_TOKEN (compared in
   constant time), else 403 and nothing is read or kept;
2. the inbox: the update is stored (`Inbox.keep`) before the 200, which is Telegram's
   acknowledgement (if the database is down, it is handled without, as `Inbox.keep` says);
3. the queue: a new update goes on the application's queue, as the polling loop's do (a
   redelivered one is answered 200 and not handled again), and the 200 goes back at once, so
   Telegram can send the chat's next update while this one's reply is written.

`/healthz` answers 200 only while updates are taken: 503 while starting (until the webhook is
set) and while draining (after SIGTERM, when updates are refused with 503 so Telegram keeps
them for later).
"""

from __future__ import annotations

import hmac
import json
import logging
from enum import Enum
from typing import Any

from aiohttp import web
from telegram import Update

from ..config import HEALTH_PATH, Settings
from ..errors import StartupError
from .inbox import AnyApp, Inbox

log = logging.getLogger(__name__)

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"


class State(Enum):
    STARTING = "starting"
    READY = "ready"
    DRAINING = "draining"


class WebhookServer:
    def __init__(self, application: AnyApp, inbox: Inbox, settings: Settings) -> None:
        self.application = application
        self.inbox = inbox
        self.settings = settings
        self.state = State.STARTING
        self._secret = settings.webhook_secret_token.encode()
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        """Listens on WEBHOOK_LISTEN:WEBHOOK_PORT; raises StartupError if it cannot."""
        app = web.Application(client_max_size=1024 * 1024)
        app.router.add_post(self.settings.webhook_path, self._update)
        app.router.add_get(HEALTH_PATH, self._health)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        host, port = self.settings.webhook_listen, self.settings.webhook_port
        try:
            await web.TCPSite(runner, host, port, backlog=1024).start()
        except OSError as exc:
            await runner.cleanup()
            raise StartupError(
                f"Webhook: cannot listen on {host}:{port} ({exc.strerror or exc}); set "
                "WEBHOOK_LISTEN / WEBHOOK_PORT"
            ) from None
        self._runner = runner
        log.info(
            "Webhook: listening on %s:%d at %s (health: %s)",
            host,
            port,
            self.settings.webhook_path,
            HEALTH_PATH,
        )

    def ready(self) -> None:
        self.state = State.READY

    def drain(self) -> None:
        """From now on /healthz says 503 and updates are refused (Telegram keeps them)."""
        self.state = State.DRAINING

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def _health(self, _request: web.Request) -> web.Response:
        status = 200 if self.state is State.READY else 503
        return web.Response(status=status, text=self.state.value)

    async def _update(self, request: web.Request) -> web.Response:
        given = request.headers.get(SECRET_HEADER, "").encode()
        if not hmac.compare_digest(given, self._secret):
            log.warning("Webhook: a request without the secret token was refused")
            return web.Response(status=403, text="forbidden")
        if self.state is State.DRAINING:
            return web.Response(status=503, text="draining")
        try:
            data: Any = json.loads(await request.read())
        except ValueError:
            return web.Response(status=400, text="not JSON")
        if not isinstance(data, dict) or not isinstance(data.get("update_id"), int):
            return web.Response(status=400, text="not an update")
        fresh = await self.inbox.keep([data])
        if fresh:
            try:
                update = Update.de_json(data, self.application.bot)
            except (KeyError, TypeError, ValueError) as exc:
                log.warning(
                    "Webhook: update %s cannot be read (%s); skipped", data["update_id"], exc
                )
                self.inbox.mark_done(data["update_id"])
                return web.Response(status=200)
            await self.application.update_queue.put(update)
        return web.Response(status=200)
