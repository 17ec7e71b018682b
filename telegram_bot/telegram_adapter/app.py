"""Builds the Telegram Application: services, handlers, ordering, start-up and shutdown.

All wiring happens here, once: the store, the inbox, the model client and the engine are made,
put in a typed `Services` (services.py) that handlers reach as `context.services`, and the
handlers are registered. Updates run concurrently across chats and in order within a chat
(`ordering.ChatOrderedProcessor`), each kept in the inbox until handled (`inbox.py`). Start-up
does only what must precede the first update (open and migrate the database, queue what a
crash left unhandled); the heavy imports (the OpenAI SDK, the token encoding) are warmed on
worker threads and the command menu is registered in the background. How the process starts,
serves (polling or webhook) and stops is `lifecycle.py`.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
from typing import Any

from telegram.ext import ApplicationBuilder, ContextTypes

from .. import tokens
from ..config import Settings
from ..coordination import Coordination, Replica
from ..engine.access import Guard
from ..engine.conversation import Conversation
from ..llm.client import LLM
from ..storage import Store, open_store
from .handlers import register
from .handlers.commands import publish_commands
from .handlers.membership import log_privacy_mode
from .inbox import REPLICA_DONE_FLUSH, Inbox
from .ordering import ChatOrderedProcessor
from .polling import PollingRequest
from .services import BotApp, BotApplication, Context, Services, install, services_of
from .transport import AiohttpRequest

log = logging.getLogger(__name__)

ADOPTS_PER_LEASE = 4  # replicas: how often per lease each looks for a dead one's updates

# Opt into python-telegram-bot's forward-compatible durations (timedelta, e.g. RetryAfter);
# without it every flood-control error also emits a deprecation warning.
os.environ.setdefault("PTB_TIMEDELTA", "true")


def file_url(base_url: str) -> str:
    """The file endpoint that goes with a Bot API base URL (`…/bot` → `…/file/bot`)."""
    head, slash, tail = base_url.rstrip("/").rpartition("/")
    return f"{head}{slash}file/{tail}" if slash else f"{base_url}/file"


def build_application(settings: Settings, store: Store | None = None) -> BotApp:
    store = store if store is not None else open_store(settings)
    tokens.set_cache_dir(settings.token_cache_dir)
    coordination, replica = _replicas(settings, store)
    engine = Conversation(store, LLM(settings), settings, coordination)
    inbox = Inbox(store, settings.recovery_window)
    requests = AiohttpRequest(connection_pool_size=256, read_timeout=30.0, write_timeout=30.0)
    polling = PollingRequest(inbox, connection_pool_size=1, read_timeout=60.0)
    guard = Guard.from_settings(settings)
    if replica is not None:  # a chat's order, and refusal pacing, across replicas
        inbox.order = replica.pending_before
        inbox.changes = replica.signal
        inbox.done_delay = REPLICA_DONE_FLUSH
        guard.refusals.shared = replica.should_answer
    services = Services(
        settings, store, engine, guard, inbox, transports=(requests, polling), replica=replica
    )
    application: BotApp = (
        ApplicationBuilder()
        .application_class(BotApplication)
        .token(settings.telegram_bot_token)
        .base_url(settings.telegram_api_base_url)
        .base_file_url(file_url(settings.telegram_api_base_url))
        .context_types(ContextTypes(context=Context))
        .request(requests)
        .get_updates_request(polling)
        .concurrent_updates(
            ChatOrderedProcessor(settings.max_concurrent_updates, services.albums, inbox)
        )
        .rate_limiter(services.flood)
        .post_init(_post_init)
        .post_shutdown(_post_shutdown)
        .build()
    )
    install(application, services)
    register(application)
    return application


def _replicas(settings: Settings, store: Store) -> tuple[Coordination | None, Replica | None]:
    """On PostgreSQL, the coordination of several replicas (coordination/postgres.py); on
    SQLite, which serves one process, none: the engine's in-process default."""
    if not settings.database_url:
        return None, None
    from ..coordination.postgres import replica_coordination
    from ..storage.postgres.store import PostgresStore

    if not isinstance(store, PostgresStore):
        return None, None
    return replica_coordination(store, settings)


async def _post_init(application: BotApp) -> None:
    services = services_of(application)
    await services.store.open()
    replica = services.replica
    if replica is not None:  # registered before any update is kept or taken over
        await replica.start()
    await services.engine.discover_window()
    services.bot_username = application.bot.username
    warming = asyncio.get_running_loop().run_in_executor(None, _warm, services)
    services.spawn(_freeze_after([warming]), name="gc-freeze")
    # What a crash left unhandled goes on the queue before any new update is fetched.
    lost = await services.inbox.recover(application)
    if lost:
        services.spawn(
            services.inbox.tell_lost(application, services.guard.policy, lost), name="lost"
        )
    if replica is not None:  # and what a replica that dies leaves, from now on
        policy, every = services.guard.policy, replica.lease / ADOPTS_PER_LEASE
        services.spawn(services.inbox.adopt(application, policy, every), name="adopt")
    services.spawn(publish_commands(application.bot), name="publish-commands")
    log_privacy_mode(application.bot.can_read_all_group_messages, services.settings)
    log.info("Bot @%s is up; model %s", application.bot.username, services.settings.openai_model)


def _warm(services: Services) -> None:
    """The token tables, then the SDK, one after the other on one worker thread. Loading the
    tables makes about 20 MB of short-lived Python objects; with the SDK's modules and classes
    (which live for ever) allocated beside them at the same time, the allocator could not hand
    that memory back afterwards (measured: docs/benchmarks.md)."""
    tokens.warm(services.settings.openai_model)
    services.engine.llm.warm()


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
    await services.engine.llm.close()
    await services.engine.media.transcriber.close()
    await services.inbox.close()
    if services.replica is not None:
        await services.replica.close()  # what it still held is free for the others at once
    await services.store.close()
    log.info("Bot stopped; database closed")
