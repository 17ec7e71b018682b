"""The typed wiring every handler reaches: the bot's services and the callback context.

`app.py` builds one `Services` and stores it in the Application once; handlers read it as
`context.services` (typed), never through raw `bot_data` keys. This module sits below the
handlers and `app.py` alike, so neither imports the other for its types.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from telegram.ext import Application, CallbackContext, ExtBot

from ..config import Settings
from ..coordination import Replica
from ..engine.access import Guard
from ..engine.conversation import Conversation
from ..storage import Store
from .albums import Albums
from .flood import FloodWait
from .inbox import Inbox
from .transport import AiohttpRequest

_KEY = "services"


@dataclass(slots=True)
class Services:
    settings: Settings
    store: Store
    engine: Conversation
    guard: Guard  # the allowlist, refusal pacing, group admins, persona presets
    inbox: Inbox  # every update kept until handled (inbox.py)
    bot_username: str = ""
    transports: tuple[AiohttpRequest, ...] = ()  # closed even when start-up fails
    background: set[asyncio.Task[Any]] = field(default_factory=set)
    albums: Albums = field(default_factory=Albums)  # photos sent together, being gathered
    flood: FloodWait = field(default_factory=FloodWait)  # every wait before sending again
    replica: Replica | None = None  # several replicas on PostgreSQL (coordination/postgres.py)

    def spawn(self, coroutine: Coroutine[Any, Any, Any], name: str) -> None:
        """Runs work off the critical path; cancelled at shutdown if still running."""
        task = asyncio.create_task(coroutine, name=name)
        self.background.add(task)
        task.add_done_callback(self.background.discard)


class Context(CallbackContext[ExtBot[None], dict[Any, Any], dict[Any, Any], dict[Any, Any]]):
    """The callback context handlers receive, with typed access to the services."""

    @property
    def services(self) -> Services:
        return services_of(self.application)


BotApp = Application[ExtBot[None], Context, dict[Any, Any], dict[Any, Any], dict[Any, Any], Any]


class BotApplication(BotApp):
    """python-telegram-bot's Application without one slow leak.

    With no persistence configured, PTB still adds every chat id and user id it sees to two
    sets for a persistence flush that never runs: about 100 bytes per id for the life of the
    process, and, worse for RSS, small objects kept alive in the middle of each burst's memory,
    which stops the allocator from handing that memory back. The bot keeps its state in its own
    database, so there is nothing to mark. This overrides a private method of PTB's (pinned
    below version 23 in pyproject.toml; tests/test_private_apis.py fails loudly if it changes).
    """

    __slots__ = ()

    def _mark_for_persistence_update(
        self, *, update: object | None = None, job: Any = None
    ) -> None:
        if self.persistence is not None:
            super()._mark_for_persistence_update(update=update, job=job)


def install(application: Application[Any, Any, Any, Any, Any, Any], services: Services) -> None:
    """Puts the services where `services_of` (and so `context.services`) finds them."""
    application.bot_data[_KEY] = services


def services_of(application: Application[Any, Any, Any, Any, Any, Any]) -> Services:
    services: Services = application.bot_data[_KEY]
    return services
