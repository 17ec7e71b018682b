"""The conversation engine's own CPU per reply, without the two SDKs: a probe, not a figure.

`python -m bench.engine` runs `Conversation.respond` in-process over a real SQLite store (with
memory, recall and compaction as configured by default) for 500 chats x 4 messages, with the
model and the chat replaced at the engine's own seams (`LLM.chat`, `ReplySink`), and prints
process CPU per reply (both threads). The full benchmark's CPU figure is dominated by the
openai SDK and python-telegram-bot and swings with the machine's load; this isolates what
changes to the store, memory and engine cost, so two commits can be compared with a few runs
each (`PYTHONPATH=<checkout> python -m bench.engine`).

`--inbox` also keeps each message in the store's inbox before it is handled and marks it done
after, as the Telegram adapter does (telegram_adapter/inbox.py): one write per message, as in
webhook mode (long polling writes one per fetched batch, so it costs less), plus the batched
done marks.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from telegram_bot import tokens
from telegram_bot.config import Settings
from telegram_bot.engine.conversation import Conversation
from telegram_bot.engine.turns import Incoming
from telegram_bot.llm.client import Completion
from telegram_bot.models import Author, ChatKey, Status, Usage
from telegram_bot.storage import open_store
from telegram_bot.telegram_adapter.inbox import Inbox

MODEL = "gpt-4o-mini"
ANSWER = "Sure - here is a short answer to that question, with a few words more."


class InstantModel:
    """Answers at once, with the usage a server would report."""

    async def chat(self, messages: Sequence[dict[str, str]], **_: Any) -> Completion:
        await asyncio.sleep(0)
        prompt = sum(len(m["content"]) for m in messages) // 4
        return Completion(ANSWER, Usage(prompt, 14), MODEL, "stop")


class Delivered:
    count = 0

    def partial(self, text: str) -> None:
        """Streaming is off in this probe."""

    async def final(self, text: str, status: Status) -> int | None:
        Delivered.count += 1
        return Delivered.count

    async def send_notice(self, text: str) -> None:
        """Nothing to deliver in this probe."""


def raw_update(update_id: int, chat_id: int, text: str) -> dict[str, Any]:
    """A private text message as the Bot API sends it."""
    user = {"id": chat_id, "is_bot": False, "first_name": "Ann"}
    chat = {"id": chat_id, "type": "private", "first_name": "Ann"}
    message = {"message_id": update_id, "date": 1, "chat": chat, "from": user, "text": text}
    return {"update_id": update_id, "message": message}


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def probe(chats: int, messages: int, inbox: bool = False) -> float:
    """Milliseconds of process CPU per reply."""
    folder = Path(tempfile.mkdtemp(prefix="bench-engine-"))
    settings = Settings(
        telegram_bot_token="1:probe",
        openai_api_key="probe",
        openai_model=MODEL,
        database_path=folder / "bot.sqlite3",
        streaming=False,
    )
    tokens.warm(MODEL)
    store = open_store(settings)
    await store.open()
    engine = Conversation(store, InstantModel(), settings)  # type: ignore[arg-type]
    kept = Inbox(store, settings.recovery_window) if inbox else None
    message_ids = iter(range(1, 10**9))

    async def talk(chat_id: int, count: int) -> None:
        for i in range(count):
            text = f"message {i} from chat {chat_id}: how is the weather today?"
            message_id = next(message_ids)
            if kept is not None:
                await kept.keep([raw_update(message_id, chat_id, text)])
            incoming = Incoming(
                ChatKey(chat_id), text, Author(chat_id, "Ann"), message_id, "private"
            )
            await engine.respond(incoming, Delivered())
            if kept is not None:
                kept.mark_done(message_id)

    await asyncio.gather(*(talk(100_000 + c, 1) for c in range(50)))  # warm-up, uncounted
    started = cpu_seconds()
    await asyncio.gather(*(talk(c + 1, messages) for c in range(chats)))
    if kept is not None:
        await kept.close()  # the last done marks are part of the cost
    spent = cpu_seconds() - started
    await store.close()
    return spent / (chats * messages) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chats", type=int, default=500)
    parser.add_argument("--messages", type=int, default=4)
    parser.add_argument("--inbox", action="store_true", help="keep every message in the inbox")
    args = parser.parse_args()
    work = probe(args.chats, args.messages, args.inbox)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - the bot uses uvloop where it is installed
        spent = asyncio.run(work)
    else:
        spent = uvloop.run(work)
    print(f"{spent:.3f} ms CPU per reply (engine{' and inbox' if args.inbox else ' only'})")


if __name__ == "__main__":
    main()
