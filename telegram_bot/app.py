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

from . import tokens
from .config import Settings
from .conversation import Conversation
from .llm import LLM
from .locks import KeyedLocks
from .store import Store, open_sqlite
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
    bot_username: str = ""
    background: set[asyncio.Task[Any]] = field(default_factory=set)

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
    if message is not None and (message.text or "").startswith("/stop"):
        return None
    thread = message.message_thread_id if message and message.is_topic_message else 0
    return (chat.id, thread or 0)


class ChatOrderedProcessor(BaseUpdateProcessor):
    def __init__(self, max_concurrent_updates: int) -> None:
        super().__init__(max_concurrent_updates)
        self._chats = KeyedLocks()

    async def do_process_update(self, update: object, coroutine: Awaitable[Any]) -> None:
        key = ordering_key(update)
        if key is None:
            await coroutine
            return
        async with self._chats.hold(key):
            await coroutine

    async def initialize(self) -> None:
        """Nothing to set up: locks are created on demand."""

    async def shutdown(self) -> None:
        """Nothing to release: locks vanish when idle."""


def build_application(settings: Settings, store: Store | None = None) -> BotApp:
    store = store if store is not None else open_sqlite(settings.database_path)
    tokens.set_cache_dir(settings.tiktoken_cache_dir)
    llm = LLM(settings)
    services = Services(settings, store, llm, Conversation(store, llm, settings))
    application: BotApp = (
        ApplicationBuilder()
        .token(settings.telegram_bot_token)
        .base_url(settings.telegram_api_base_url)
        .context_types(ContextTypes(context=Context))
        .request(AiohttpRequest(connection_pool_size=256, read_timeout=30.0, write_timeout=30.0))
        .get_updates_request(AiohttpRequest(connection_pool_size=1, read_timeout=60.0))
        .concurrent_updates(ChatOrderedProcessor(settings.max_concurrent_updates))
        .post_init(_post_init)
        .post_shutdown(_post_shutdown)
        .build()
    )
    application.bot_data[_SERVICES] = services
    from .handlers import register

    register(application)
    return application


def services_of(application: BotApp) -> Services:
    services: Services = application.bot_data[_SERVICES]
    return services


async def _post_init(application: BotApp) -> None:
    services = services_of(application)
    await services.store.open()
    services.bot_username = application.bot.username
    loop = asyncio.get_running_loop()
    warming = [
        loop.run_in_executor(None, services.llm.warm),
        loop.run_in_executor(None, tokens.warm, services.settings.openai_model),
    ]
    services.spawn(_freeze_after(warming), name="gc-freeze")
    from .handlers.commands import publish_commands

    services.spawn(publish_commands(application.bot), name="publish-commands")
    log.info("Bot @%s is up; model %s", application.bot.username, services.settings.openai_model)


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
