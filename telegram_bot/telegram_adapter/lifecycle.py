"""How the bot process lives: start, serve (long polling or a webhook), stop; and how it dies.

`run` is `python -m telegram_bot`. It drives python-telegram-bot's Application through its
public steps (`initialize`, `post_init`, `Updater.start_polling` or our webhook server,
`start`, and back down), as the library documents for running it inside your own event loop,
instead of `run_polling`, so that every way start-up can fail ends in ONE line and a known
exit code, and every way it stops is bounded:

- the database first (no network needed): claimed for this process alone (a second process on
  it stops at once, naming the first), then opened: corrupt, truncated, locked (waited for at
  most 5 s), unwritable: one line naming the file and the problem, exit 1;
- Telegram: `getMe`. A rejected token is one line, exit 2 (the token is never printed: the
  library's own message contains it, so it is not shown). Telegram unreachable: retried with
  back-off (1 s doubling to 30 s, for as long as it takes, said once), and SIGTERM still stops;
- then polling (a webhook set earlier is removed, with a warning naming it) or the webhook
  (the server listens, `setWebhook` is called, idempotent, then /healthz says 200); a polling
  process keeps a heartbeat file instead, for `telegram-bot health` (`health.py`): removed at
  start and at the drain, touched as getUpdates calls come back;
- at runtime a token Telegram rejects (revoked: any call answered 401) and a second poller on
  the token (409 Conflict, `polling.PollingWatch`) stop the process with one line and a
  non-zero exit code, so a supervisor notices rather than a zombie idling;
- SIGTERM/SIGINT drain: no new update is taken (the webhook answers 503, /healthz 503; those
  queued but not started stay in the inbox for the next start), running replies get
  SHUTDOWN_GRACE seconds, then are cut short (delivered and stored as partial with a line
  saying the bot is restarting), the done marks are written and the database is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from typing import TYPE_CHECKING

from telegram import Update, WebhookInfo
from telegram.error import BadRequest, InvalidToken, NetworkError, RetryAfter, TelegramError

from ..config import Settings
from ..errors import (
    ConfigError,
    DatabaseUnavailable,
    StartupError,
    TelegramRefused,
    TokenRejected,
)
from ..health import Heartbeat, heartbeat_path
from ..storage import claim_database
from .app import build_application
from .polling import PollingRequest, PollingWatch
from .services import BotApp, services_of

if TYPE_CHECKING:
    from .webhook import WebhookServer

log = logging.getLogger(__name__)

BACKOFF_FIRST = 1.0
BACKOFF_MAX = 30.0
_REJECTED = (
    "Telegram rejected the bot token (401 Unauthorized){when}: set TELEGRAM_BOT_TOKEN to the "
    "token @BotFather gives you (a token revoked there no longer works)"
)


async def run(settings: Settings) -> int:
    """Runs the bot until SIGTERM/SIGINT or a fatal error; returns the exit code."""
    try:
        with claim_database(settings):
            application = build_application(settings)
            return await Lifecycle(application).run()
    except ConfigError as exc:  # e.g. a broken PERSONAS_FILE or TIKTOKEN_CACHE_DIR
        print(f"Configuration error: {exc}", file=sys.stderr, flush=True)
        return 2
    except StartupError as exc:
        log.error("%s", exc.describe())
        return exc.exit_code
    except DatabaseUnavailable as exc:  # PostgreSQL at start-up: a wrong URL, a server down
        print(f"Database error: {exc}", file=sys.stderr, flush=True)
        return 1


class Lifecycle:
    def __init__(self, application: BotApp) -> None:
        self.application = application
        self.services = services_of(application)
        self.settings = self.services.settings
        self.stopping = asyncio.Event()
        self.failure: StartupError | None = None
        [polling] = [t for t in self.services.transports if isinstance(t, PollingRequest)]
        self.polling = polling
        self.watch = PollingWatch(self.fail, polling)
        self.heartbeat: Heartbeat | None = None
        if not self.settings.webhook_url:
            self.heartbeat = polling.heartbeat = Heartbeat(heartbeat_path(self.settings))
        self.webhook: WebhookServer | None = None
        self._draining = False
        self._started = False  # post_init ran: post_shutdown must too
        self._running = False
        for transport in self.services.transports:
            transport.on_unauthorized = self._token_rejected

    def fail(self, error: StartupError) -> None:
        """Stops the process with `error`'s line and exit code (the first error wins)."""
        self.watch.quiet = True
        if self.failure is None:
            self.failure = error
            log.error("%s", error.describe())
        self.stopping.set()

    def _token_rejected(self) -> None:
        self.polling.stopped = True
        when = " while the bot was running; stopping" if self._running else ""
        self.fail(TokenRejected(_REJECTED.format(when=when)))

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._on_signal, sig)
        try:
            await self._start()
            if not self.stopping.is_set():
                self._running = True
                await self.stopping.wait()
        except StartupError as exc:
            self.fail(exc)
        except TelegramError as exc:  # e.g. Telegram gone again between getMe and polling
            self.fail(StartupError(f"Telegram failed while the bot was starting: {exc}"))
        finally:
            await self._stop()
        return self.failure.exit_code if self.failure is not None else 0

    # -- start ------------------------------------------------------------------------------------

    async def _start(self) -> None:
        application, services = self.application, self.services
        if self.heartbeat is not None:
            self.heartbeat.clear()  # a previous run's says nothing about this one
        await services.store.open()
        if not await self._connect():
            return
        self._started = True
        # Polling: whether a webhook was set is asked while post_init runs (one round trip
        # less before the first getUpdates), so polling can name it before removing it.
        webhook_info = None
        if not self.settings.webhook_url:
            webhook_info = asyncio.create_task(application.bot.get_webhook_info())
            webhook_info.add_done_callback(_retrieve)
        try:
            if application.post_init is not None:
                await application.post_init(application)
            if self.stopping.is_set():
                return
            if webhook_info is not None:
                await self._start_polling(await webhook_info)
            else:
                await self._start_webhook()
        finally:
            if webhook_info is not None:
                webhook_info.cancel()  # when start-up ended before it was needed
        if self.stopping.is_set():
            return
        await application.start()
        if self.webhook is not None:
            self.webhook.ready()

    async def _connect(self) -> bool:
        """`getMe` until Telegram answers; False when stopped while waiting."""
        delay, failures = BACKOFF_FIRST, 0
        while True:
            try:
                await self.application.initialize()
            except InvalidToken:
                raise TokenRejected(_REJECTED.format(when="")) from None
            except BadRequest as exc:  # a NetworkError to python-telegram-bot, not to us
                raise StartupError(f"Telegram refused to start the bot: {exc}") from None
            except (NetworkError, RetryAfter) as exc:
                if failures == 0:
                    log.warning(
                        "Telegram is unreachable (%s); trying again with back-off (%.0f s, "
                        "doubling up to %.0f s) until it answers",
                        exc,
                        BACKOFF_FIRST,
                        BACKOFF_MAX,
                    )
                failures += 1
                wait = exc.retry_after if isinstance(exc, RetryAfter) else delay
                if await self._stopped_within(_seconds(wait)):
                    return False
                delay = min(delay * 2, BACKOFF_MAX)
                continue
            except TelegramError as exc:
                raise StartupError(f"Telegram refused to start the bot: {exc}") from None
            if failures:
                log.info("Telegram answered after %d failed attempts", failures)
            return not self.stopping.is_set()

    async def _stopped_within(self, seconds: float) -> bool:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self.stopping.wait()
        return self.stopping.is_set()

    async def _start_polling(self, info: WebhookInfo) -> None:
        updater = self.application.updater
        assert updater is not None
        if info.url:
            log.warning(
                "A webhook was set for this bot (%s); long polling removes it (Telegram "
                "allows one or the other). Set WEBHOOK_URL to run in webhook mode",
                info.url,
            )
        await updater.start_polling(
            allowed_updates=Update.ALL_TYPES,
            drop_pending_updates=False,
            bootstrap_retries=3,
            error_callback=self.watch,
        )

    async def _start_webhook(self) -> None:
        from .webhook import WebhookServer  # aiohttp's server: loaded only in webhook mode

        settings = self.settings
        self.webhook = WebhookServer(self.application, self.services.inbox, settings)
        await self.webhook.start()
        delay = BACKOFF_FIRST
        while True:
            try:
                await self.application.bot.set_webhook(
                    settings.webhook_url,
                    secret_token=settings.webhook_secret_token,
                    allowed_updates=Update.ALL_TYPES,
                    drop_pending_updates=False,
                )
            except BadRequest as exc:  # a NetworkError to python-telegram-bot, not to us
                raise TelegramRefused(
                    f"Telegram refused the webhook {settings.webhook_url}: {exc}"
                ) from None
            except (NetworkError, RetryAfter) as exc:
                log.warning("setWebhook failed (%s); trying again in %.0f s", exc, delay)
                if await self._stopped_within(delay):
                    return
                delay = min(delay * 2, BACKOFF_MAX)
                continue
            except TelegramError as exc:
                raise TelegramRefused(
                    f"Telegram refused the webhook {settings.webhook_url}: {exc}"
                ) from None
            log.info("Webhook set: Telegram posts updates to %s", settings.webhook_url)
            return

    # -- stop -------------------------------------------------------------------------------------

    def _on_signal(self, sig: signal.Signals) -> None:
        asyncio.get_running_loop().remove_signal_handler(sig)  # a second signal kills at once
        log.info(
            "%s: stopping; %d replies in flight get %.0f s to finish",
            sig.name,
            self.services.engine.busy,
            self.settings.shutdown_grace,
        )
        self._drain()
        self.stopping.set()

    def _drain(self) -> None:
        """No new update starts; running replies are cut short after the grace period."""
        if self._draining:
            return
        self._draining = True
        self.services.inbox.draining = True
        if self.heartbeat is not None:
            self.heartbeat.stop()
        if self.webhook is not None:
            self.webhook.drain()
        engine, grace = self.services.engine, self.settings.shutdown_grace

        async def interrupt_after_grace() -> None:
            await asyncio.sleep(grace)
            if count := engine.interrupt_all():
                log.warning("Shutdown: %d replies cut short and stored as partial", count)

        self.services.spawn(interrupt_after_grace(), name="shutdown-grace")
        self.services.flood.begin_shutdown(grace)  # no delivery waits past the grace period

    async def _stop(self) -> None:
        application = self.application
        self._drain()
        try:
            if application.updater is not None and application.updater.running:
                await application.updater.stop()
            if application.running:
                await application.stop()
            if self.webhook is not None:
                await self.webhook.stop()
            await application.shutdown()
            if self._started and application.post_shutdown is not None:
                await application.post_shutdown(application)  # says "Bot stopped"
        finally:
            for transport in self.services.transports:
                await transport.shutdown()
            await self.services.engine.llm.close()
            await self.services.store.close()


def _retrieve(task: asyncio.Task[WebhookInfo]) -> None:
    """Marks a task's error seen when it ends unawaited (start-up stopped before it)."""
    if not task.cancelled():
        task.exception()


def _seconds(value: object) -> float:
    """A wait as python-telegram-bot gives it (a number or a timedelta)."""
    total = getattr(value, "total_seconds", None)
    return float(total() if callable(total) else value)  # type: ignore[arg-type]
