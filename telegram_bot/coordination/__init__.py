"""What the engine must coordinate with every other turn of the same bot, behind small
interfaces, so the same engine runs as one process or as several replicas.

- `ChatTurns`: one chat's turns run one at a time, in order; different chats never wait for
  each other.
- `RunningReplies`: the replies being written right now, so /stop (or the Stop button) reaches
  the one it means, wherever it runs.
- `RateWindow`: how many messages a user sent in the last minute (RATE_LIMIT_PER_MINUTE).

`local.py` implements them in process memory (the default: one process, SQLite). A backend
for several replicas implements the same three and is passed to the engine in a
`Coordination`; the engine never knows which one it has.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from ..models import ChatKey, Status

# Called (on the replica writing the reply) to stop it: why, and the line to post below it.
OnStop = Callable[[Status, str | None], None]


class StopOutcome(Enum):
    STOPPED = "stopped"
    NOT_YOURS = "not_yours"  # a reply is running, but someone else asked for it
    NOTHING = "nothing"  # no reply is being written in that chat


class ChatTurns(Protocol):
    def hold(self, chat: ChatKey) -> AbstractAsyncContextManager[None]:
        """Waits for the chat's earlier turns (first come, first served), then holds it."""
        ...


class RunningReplies(Protocol):
    async def begin(self, chat: ChatKey, author_id: int | None, on_stop: OnStop) -> None:
        """A reply to `author_id` (None: nobody in particular) starts in `chat`."""

    async def end(self, chat: ChatKey) -> None:
        """The chat's reply is over (complete, failed or stopped)."""

    async def stop(
        self, chat: ChatKey, by_user: int | None, notice: str | None = None
    ) -> StopOutcome:
        """Stops the chat's running reply if `by_user` may (None: anyone may, as in a private
        chat); `notice` is posted by the reply itself, right below the text it stopped."""
        ...

    def interrupt_local(self) -> int:
        """Shutdown: cuts short every reply this process is writing; returns how many."""
        ...

    @property
    def local_count(self) -> int:
        """How many replies this process is writing right now."""
        ...


class RateWindow(Protocol):
    async def take(self, user_id: int) -> float | None:
        """Counts one message; None if allowed, else seconds until a slot frees up."""
        ...


class Replica(Protocol):
    """This process among several replicas (`postgres.py`): started after the store opens and
    before any update is kept, closed before the store closes."""

    lease: float  # seconds: a replica silent this long is dead, and what it held is free

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def pending_before(self, chat: ChatKey, update_id: int) -> list[int]:
        """The chat's inbox updates before `update_id` that no replica has handled yet."""
        ...

    def signal(self, chat: ChatKey) -> asyncio.Event:
        """Set at the chat's next change (its turn given back, its updates marked done)."""
        ...

    async def should_answer(self, key: object) -> bool:
        """Refusal pacing across replicas: True at most once per REFUSAL_INTERVAL per key."""
        ...


@dataclass(frozen=True, slots=True)
class Coordination:
    turns: ChatTurns
    replies: RunningReplies
    rate: RateWindow
