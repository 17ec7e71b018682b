"""A terminal chat on the same engine and database as the bot (`python -m telegram_bot chat`).

Tokens stream to stdout as the model writes. `/reset` starts a fresh conversation, `/retry`
answers the last question again, `/memory` shows what is kept of it, and `/exit` (or end of
input) leaves; any other /command is refused rather than sent to the model. Reads stdin line
by line, so it can also be scripted.
"""

from __future__ import annotations

import asyncio
import sys
from typing import TextIO

from . import tokens
from .config import Settings
from .engine.conversation import Conversation, Incoming
from .engine.turns import AT_LIMIT, Reply
from .errors import BotError
from .llm.client import LLM
from .memory.status import describe
from .models import CONSOLE_CHAT, Author, Status
from .storage import open_store

COMMANDS = (
    "/reset starts over, /retry answers the last question again, /continue goes on with an "
    "answer that stopped early, /memory shows what is kept, /exit leaves."
)


class ConsoleSink:
    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.printed = 0
        self.thinking_shown = False

    def partial(self, text: str) -> None:
        if self.thinking_shown and text:
            self.out.write("\n")
            self.thinking_shown = False
        self.out.write(text[self.printed :])
        self.out.flush()
        self.printed = len(text)

    def thinking(self, thought: str) -> None:
        if not self.thinking_shown and not self.printed:
            self.out.write("(thinking…)")
            self.out.flush()
            self.thinking_shown = True

    async def final(self, text: str, status: Status) -> int | None:
        self.partial(text)
        if status is not Status.COMPLETE:
            self.out.write(f"\n[{status.value}]")
        self.out.write("\n")
        self.out.flush()
        return None

    async def send_notice(self, text: str) -> None:
        self.out.write(f"{text}\n")
        self.out.flush()


async def run_console(
    settings: Settings, stdin: TextIO = sys.stdin, out: TextIO = sys.stdout
) -> int:
    tokens.set_cache_dir(settings.token_cache_dir)
    store = open_store(settings)
    await store.open()
    llm = LLM(settings)
    engine = Conversation(store, llm, settings)
    await engine.discover_window()
    loop = asyncio.get_running_loop()
    out.write(f"Console chat with {settings.openai_model}. {COMMANDS}\n")
    try:
        while True:
            out.write("you> ")
            out.flush()
            line = await loop.run_in_executor(None, stdin.readline)
            if not line:
                break
            text = line.strip()
            if not text:
                continue
            if text in {"/exit", "/quit"}:
                break
            if text == "/memory":
                out.write(describe(await engine.memory_status(CONSOLE_CHAT)) + "\n")
                continue
            if text == "/reset":
                count = await engine.reset(CONSOLE_CHAT)
                out.write(f"Started a fresh conversation ({count} messages archived).\n")
                continue
            if text.startswith("/") and text not in {"/retry", "/continue"}:
                # Never a question for the model: a typo'd command would cost a call.
                out.write(f"Unknown command {text.split()[0]}. {COMMANDS}\n")
                continue
            out.write("bot> ")
            reply: Reply | None
            try:
                if text == "/retry":
                    reply = await engine.retry(CONSOLE_CHAT, ConsoleSink(out))
                elif text == "/continue":
                    reply = await engine.continue_(CONSOLE_CHAT, ConsoleSink(out))
                else:
                    reply = await engine.respond(
                        Incoming(CONSOLE_CHAT, text, Author(None, "you"), chat_kind="console"),
                        ConsoleSink(out),
                    )
                if reply is not None and reply.at_limit:
                    out.write(f"{AT_LIMIT}\n")
            except BotError as exc:
                out.write(f"\n[error] {exc.user_message()}\n")
    finally:
        await llm.close()
        await store.close()
    return 0
