"""Albums: photos sent together arrive as separate updates sharing a `media_group_id`, and are
answered as one question with every image.

The first update of an album (its *leader*) keeps its place in the chat's order
(`ordering.ChatOrderedProcessor` asks `arrive`); the others (*followers*) run at once, without
waiting for the chat's turn: they only hand their message to the album and return, so they can
never queue behind the leader that is waiting for them. The leader's handler then `gather`s
the album once no part has arrived for `quiet` seconds (Telegram sends an album's parts
together, usually in one getUpdates batch), at most `longest` seconds. A part arriving after its
album was gathered is answered on its own.

State is per process and short-lived: an album is forgotten once gathered.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from telegram import Message

from ..models import ChatKey


@dataclass(slots=True)
class _Album:
    leader: int | None = None  # the leader's update id, as the processor saw it first
    messages: list[Message] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    started: float = field(default_factory=time.monotonic)

    def time_left(self, longest: float) -> float:
        return self.started + longest - time.monotonic()


class Albums:
    quiet = 0.6  # seconds without a new part before an album is complete
    longest = 3.0  # seconds an album is waited for at most

    def __init__(self) -> None:
        self._open: dict[tuple[ChatKey, str], _Album] = {}

    def arrive(self, chat: ChatKey, group_id: str, update_id: int) -> bool:
        """An album's update reached the processor: True for its leader (the first)."""
        album = self._open.get((chat, group_id))
        if album is None:
            self._forget_stale()
            self._open[(chat, group_id)] = _Album(leader=update_id)
            return True
        album.changed.set()
        return album.leader == update_id

    def _forget_stale(self) -> None:
        """Albums whose leader never gathered them (refused by the allowlist, say)."""
        for key, album in list(self._open.items()):
            if album.time_left(self.longest) < -60:
                del self._open[key]

    def is_leader(self, chat: ChatKey, group_id: str, update_id: int) -> bool:
        album = self._open.get((chat, group_id))
        return album is not None and album.leader == update_id

    def add(self, chat: ChatKey, group_id: str, message: Message) -> bool:
        """Hands a part to its album; False when the album was already gathered."""
        album = self._open.get((chat, group_id))
        if album is None:
            return False
        album.messages.append(message)
        album.changed.set()
        return True

    async def gather(self, chat: ChatKey, group_id: str) -> list[Message]:
        """The leader waits for the rest of the album; its parts in the order they were sent."""
        album = self._open.get((chat, group_id))
        if album is None:
            return []
        while True:
            album.changed.clear()
            left = album.time_left(self.longest)
            if left <= 0:
                break
            try:
                await asyncio.wait_for(album.changed.wait(), min(self.quiet, left))
            except TimeoutError:
                break
        del self._open[(chat, group_id)]
        return sorted(album.messages, key=lambda m: m.message_id)
