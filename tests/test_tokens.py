"""Token counting works offline, for any model name."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from telegram_bot import tokens

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("model", "encoding"),
    [
        ("gpt-4o-mini", "o200k_base"),
        ("gpt-4", "cl100k_base"),
        ("gpt-3.5-turbo", "cl100k_base"),
        ("llama3.1:8b", "cl100k_base"),
        ("qwen2.5-coder", "cl100k_base"),
        ("openai/gpt-4o", "o200k_base"),
        ("", "cl100k_base"),
        ("text-davinci-003", "cl100k_base"),  # p50k is not available offline: fall back
    ],
)
def test_every_model_name_gets_an_offline_encoding(model: str, encoding: str) -> None:
    assert tokens.encoding_name_for(model) == encoding
    assert tokens.count_text("The quick brown fox", model) > 0


def test_counts_match_the_real_tokenizer() -> None:
    # Known values of tiktoken's o200k_base / cl100k_base for this sentence.
    assert tokens.count_text("hello world", "gpt-4o") == 2
    assert tokens.count_text("tiktoken is great!", "gpt-4") == 6


def test_chat_format_overhead_is_counted() -> None:
    messages = [{"role": "system", "content": "hi"}, {"role": "user", "content": "hi"}]
    bare = 2 * tokens.count_text("hi")
    assert tokens.count_messages(messages) == bare + 2 * tokens.TOKENS_PER_MESSAGE + 3


def test_special_token_text_is_counted_not_refused() -> None:
    assert tokens.count_text("<|endoftext|> is just text here") > 3


def test_counting_works_with_networking_disabled(tmp_path: Path) -> None:
    """A fresh process with sockets disabled and an empty cache still counts tokens."""
    script = f"""
import socket
def refuse(*a, **k):
    raise OSError("network disabled in this test")
socket.socket.connect = refuse
socket.create_connection = refuse
socket.getaddrinfo = refuse
from pathlib import Path
from telegram_bot import tokens
tokens.set_cache_dir(Path({str(tmp_path / "cache")!r}))
print(tokens.count_text("hello world", "gpt-4o"), tokens.count_text("hello world", "gpt-4"))
"""
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["2", "2"]


def test_a_local_model_loads_one_encoding_only() -> None:
    """A bot on a local model never pays for o200k_base's tables (48 MB), summaries included."""
    script = """
from datetime import datetime, timezone
from telegram_bot import tokens
from telegram_bot.memory import compaction
from telegram_bot.models import Author, ChatKey, Role, Turn
turn = Turn(id=1, chat=ChatKey(1), role=Role.USER, text="word " * 5000, tokens=5000,
            created_at=datetime.now(timezone.utc), author=Author(1, "Ann"))
compaction.summariser_messages("", [turn], max_tokens=100, group=False, line_cap=50,
                               model="llama3.2")
compaction.take_chunk([turn], 200, "llama3.2")
tokens.count_messages([{"role": "user", "content": "hi"}], "llama3.2")
print(*sorted(tokens._encodings))
"""
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["cl100k_base"]
