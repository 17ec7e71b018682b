"""Builds the Telegram Application: services, handlers, ordering, start-up and shutdown.

All wiring happens here, once. Handlers reach the services through `Context.services` (typed),
never through raw `bot_data` keys. Updates run concurrently across chats and in order within a
chat (`ChatOrderedProcessor`). Start-up does only what must precede the first `getUpdates`
(open and migrate the database); the heavy imports (the OpenAI SDK, the token encoding) are
warmed on worker threads and the command menu is registered in the background.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from telegram import Update
from telegram.ext import (
    Application,
    ApplicationBuilder,
    BaseUpdateProcessor,
    CallbackContext,
    ContextTypes,
    ExtBot,
)

from .. import tokens
from ..config import Settings
from ..coordination.local import KeyedLocks
from ..engine.access import Guard
from ..engine.conversation import Conversation
from ..engine.limits import Limits
from ..llm.client import LLM
from ..storage import Store, open_store
from .transport import AiohttpRequest

log = logging.getLogger(__name__)

# Opt into python-telegram-bot's forward-compatible durations (timedelta, e.g. RetryAfter);
# without it every flood-control error also emits a deprecation warning.
os.environ.setdefault("PTB_TIMEDELTA", "true")

_SERVICES = "services"


@dataclass(slots=True)
class Services:
    settings: Settings
    store: Store
    llm: LLM
    engine: Conversation
    guard: Guard  # group chats, personas and admin control (issue 4)
    bot_username: str = ""
    background: set[asyncio.Task[Any]] = field(default_factory=set)
    limits: Limits = field(init=False)

    def __post_init__(self) -> None:
        self.limits = Limits(self.store, self.settings)

    def spawn(self, coroutine: Coroutine[Any, Any, Any], name: str) -> None:
        """Runs start-up work off the critical path; cancelled at shutdown if still running."""
        task = asyncio.create_task(coroutine, name=name)
        self.background.add(task)
        task.add_done_callback(self.background.discard)


class Context(CallbackContext[ExtBot[None], dict[Any, Any], dict[Any, Any], dict[Any, Any]]):
    """The callback context handlers receive, with typed access to the services."""

    @property
    def services(self) -> Services:
        services: Services = self.application.bot_data[_SERVICES]
        return services


BotApp = Application[ExtBot[None], Context, dict[Any, Any], dict[Any, Any], dict[Any, Any], Any]


class BotApplication(BotApp):
    """python-telegram-bot's Application without one slow leak.

    With no persistence configured, PTB still adds every chat id and user id it sees to two
    sets for a persistence flush that never runs: about 100 bytes per id for the life of the
    process, and, worse for RSS, small objects kept alive in the middle of each burst's memory,
    which stops the allocator from handing that memory back. The bot keeps its state in its own
    database, so there is nothing to mark.
    """

    __slots__ = ()

    def _mark_for_persistence_update(
        self, *, update: object | None = None, job: Any = None
    ) -> None:
        if self.persistence is not None:
            super()._mark_for_persistence_update(update=update, job=job)


def ordering_key(update: object) -> tuple[int, int] | None:
    """The chat (and forum topic) whose updates must run in order; None runs at once.

    A Stop button press or /stop must not wait behind the very reply it is meant to stop.
    """
    if not isinstance(update, Update) or update.callback_query is not None:
        return None
    chat = update.effective_chat
    if chat is None:
        return None
    message = update.effective_message
    if message is not None and message.text and is_stop_command(message.text):
        return None
    thread = message.message_thread_id if message and message.is_topic_message else 0
    return (chat.id, thread or 0)


def is_stop_command(text: str) -> bool:
    """`/stop`, `/stop@SomeBot` or `/stop …`, in any case (as CommandHandler matches it); not
    `/stopwatch` or any other command that merely starts with it, which waits its turn."""
    return text[:5].lower() == "/stop" and (len(text) == 5 or text[5] in "@ \t\n")


class ChatOrderedProcessor(BaseUpdateProcessor):
    """Runs updates concurrently across chats, in order within a chat, and at most
    `max_concurrent_updates` of them at once (MAX_CONCURRENT_UPDATES bounds memory on a Pi).

    python-telegram-bot's `process_update` (final) takes its semaphore *before*
    `do_process_update`, so an update waiting for its chat's turn would hold a slot: a backlog
    in one busy chat behind a slow reply could take every slot and starve all other chats. So
    the semaphore the library holds admits every update (`ADMIT_ALL`; it still creates one task
    per update, as it always does), and the limit is a semaphore of our own, taken only once the
    update's turn in its chat has come. A waiting update holds nothing but its place in its
    chat's queue, and each chat has at most one update waiting for a slot (first come, first
    served). Updates with no chat order (the Stop button, /stop, updates without a chat) are
    control traffic and never call the model: they wait for neither, so a /stop is never stuck
    behind the very replies it could end.
    """

    ADMIT_ALL = sys.maxsize

    def __init__(self, max_concurrent_updates: int) -> None:
        if max_concurrent_updates < 1:
            raise ValueError("max_concurrent_updates must be a positive integer")
        super().__init__(self.ADMIT_ALL)
        self.limit = max_concurrent_updates
        self._slots = asyncio.Semaphore(max_concurrent_updates)
        self._chats = KeyedLocks()

    async def do_process_update(self, update: object, coroutine: Awaitable[Any]) -> None:
        key = ordering_key(update)
        if key is None:
            await coroutine
            return
        async with self._chats.hold(key), self._slots:
            await coroutine

    async def initialize(self) -> None:
        """Nothing to set up: locks are created on demand."""

    async def shutdown(self) -> None:
        """Nothing to release: locks vanish when idle."""


def file_url(base_url: str) -> str:
    """The file endpoint that goes with a Bot API base URL (`…/bot` → `…/file/bot`)."""
    head, slash, tail = base_url.rstrip("/").rpartition("/")
    return f"{head}{slash}file/{tail}" if slash else f"{base_url}/file"


def build_application(settings: Settings, store: Store | None = None) -> BotApp:
    from .flood import FloodWait
    from .handlers import register

    store = store if store is not None else open_store(settings)
    tokens.set_cache_dir(settings.tiktoken_cache_dir)
    llm = LLM(settings)
    guard = Guard.from_settings(settings)
    services = Services(settings, store, llm, Conversation(store, llm, settings), guard)
    application: BotApp = (
        ApplicationBuilder()
        .application_class(BotApplication)
        .token(settings.telegram_bot_token)
        .base_url(settings.telegram_api_base_url)
        .base_file_url(file_url(settings.telegram_api_base_url))
        .context_types(ContextTypes(context=Context))
        .request(AiohttpRequest(connection_pool_size=256, read_timeout=30.0, write_timeout=30.0))
        .get_updates_request(AiohttpRequest(connection_pool_size=1, read_timeout=60.0))
        .concurrent_updates(ChatOrderedProcessor(settings.max_concurrent_updates))
        .rate_limiter(FloodWait())
        .post_init(_post_init)
        .post_shutdown(_post_shutdown)
        .build()
    )
    application.bot_data[_SERVICES] = services
    register(application)
    return application


def stop_gracefully_on_signals(application: BotApp) -> None:
    """SIGTERM/SIGINT: stop fetching updates, let running replies finish for SHUTDOWN_GRACE
    seconds, then cut the rest short (each is delivered and stored as partial, and its chat is
    told), and close the database. Call before `run_polling(stop_signals=None)`."""
    inner = application.post_init

    async def post_init(app: BotApp) -> None:
        if inner is not None:
            await inner(app)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, _begin_shutdown, app, sig)

    application.post_init = post_init


def _begin_shutdown(application: BotApp, sig: signal.Signals) -> None:
    services = services_of(application)
    asyncio.get_running_loop().remove_signal_handler(sig)  # a second signal kills at once
    grace = services.settings.shutdown_grace
    log.info(
        "%s: stopping; %d replies in flight get %.0f s to finish",
        sig.name,
        services.engine.busy,
        grace,
    )

    async def interrupt_after_grace() -> None:
        await asyncio.sleep(grace)
        if count := services.engine.interrupt_all():
            log.warning("Shutdown: %d replies cut short and stored as partial", count)

    services.spawn(interrupt_after_grace(), name="shutdown-grace")
    application.stop_running()


def services_of(application: BotApp) -> Services:
    services: Services = application.bot_data[_SERVICES]
    return services


async def _post_init(application: BotApp) -> None:
    services = services_of(application)
    await services.store.open()
    services.bot_username = application.bot.username
    warming = asyncio.get_running_loop().run_in_executor(None, _warm, services)
    services.spawn(_freeze_after([warming]), name="gc-freeze")
    from .handlers.commands import publish_commands

    services.spawn(publish_commands(application.bot), name="publish-commands")
    from .handlers.group import log_privacy_mode

    log_privacy_mode(application.bot.can_read_all_group_messages, services.settings)
    log.info("Bot @%s is up; model %s", application.bot.username, services.settings.openai_model)


def _warm(services: Services) -> None:
    """The token tables, then the SDK, one after the other on one worker thread. Loading the
    tables makes about 20 MB of short-lived Python objects; with the SDK's modules and classes
    (which live for ever) allocated beside them at the same time, the allocator could not hand
    that memory back afterwards (measured: docs/benchmarks.md)."""
    tokens.warm(services.settings.openai_model)
    services.llm.warm()


async def _freeze_after(warming: list[asyncio.Future[Any]]) -> None:
    """Once the heavy imports are in, moves every object alive so far (modules, classes, the
    SDKs) out of the garbage collector's sight: later collections only walk what replies
    allocate, which saves CPU under load (measured: docs/benchmarks.md)."""
    await asyncio.gather(*warming, return_exceptions=True)
    gc.collect()
    gc.freeze()


async def _post_shutdown(application: BotApp) -> None:
    services = services_of(application)
    for task in list(services.background):
        task.cancel()
    await asyncio.gather(*services.background, return_exceptions=True)
    await services.llm.close()
    await services.store.close()
    log.info("Bot stopped; database closed")
