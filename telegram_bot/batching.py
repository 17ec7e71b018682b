"""Group commit: writes that arrive together are committed together, each caller still waiting
for its own commit.

When many chats write at once (a burst of messages, a busy group), one transaction per write
makes them queue behind a single lock, one trip to the database thread and back through the
event loop each; the last chat waits for all the others. `GroupCommit` lets the first writer
start a transaction and every writer that arrives meanwhile join the next one, so a burst of
200 messages costs a handful of transactions. Nothing is acknowledged before it is committed.
If a batch fails, its items are retried one by one, so one bad write fails only its own caller.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

I = TypeVar("I")  # noqa: E741 - an item, as in the typing docs
R = TypeVar("R")


class GroupCommit(Generic[I, R]):
    def __init__(self, write_batch: Callable[[list[I]], Awaitable[list[R]]]) -> None:
        self._write_batch = write_batch
        self._queue: list[tuple[I, asyncio.Future[R]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def submit(self, item: I) -> R:
        """Writes `item` (with whatever else is waiting) and returns its result once committed."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._drain(), name="group-commit")
        # A caller that gives up still gets its item written: it is already queued.
        return await asyncio.shield(future)

    async def wait_idle(self) -> None:
        """Returns once every submitted item is written (call before closing the database)."""
        while self._writer is not None and not self._writer.done():
            await asyncio.shield(self._writer)

    async def _drain(self) -> None:
        while self._queue:
            batch, self._queue = self._queue, []
            try:
                results = await self._write_batch([item for item, _ in batch])
            except Exception as exc:
                if len(batch) == 1:
                    _settle(batch[0][1], error=exc)
                else:
                    log.debug("A batch of %d writes failed; retrying one by one", len(batch))
                    await self._one_by_one(batch)
                continue
            except BaseException:
                for _, future in batch + self._queue:
                    _settle(future, error=ConnectionAbortedError("the store is shutting down"))
                raise
            for (_, future), result in zip(batch, results, strict=True):
                _settle(future, result)

    async def _one_by_one(self, batch: list[tuple[I, asyncio.Future[R]]]) -> None:
        for item, future in batch:
            try:
                [result] = await self._write_batch([item])
            except Exception as exc:
                _settle(future, error=exc)
            else:
                _settle(future, result)


def _settle(
    future: asyncio.Future[R], result: R | None = None, error: Exception | None = None
) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)  # type: ignore[arg-type]
