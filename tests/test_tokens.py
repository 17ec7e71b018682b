"""Token counting works offline, for any model name."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from telegram_bot import tokens
from telegram_bot.errors import ConfigError

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


# -- the cache: a private directory, files written exclusively ------------------------------------


def target_of(cache: Path, name: str = "cl100k_base") -> Path:
    return cache / hashlib.sha1(tokens._BLOB_URL.format(name).encode()).hexdigest()


def test_the_cache_replaces_a_planted_symlink_instead_of_writing_through_it(
    tmp_path: Path,
) -> None:
    cache = tmp_path / "cache"
    tokens.private_dir(cache)
    victim = tmp_path / "victim"
    victim.write_text("precious")
    target_of(cache).symlink_to(victim)
    tokens.seed_cache(cache)
    assert victim.read_text() == "precious"
    target = target_of(cache)
    assert not target.is_symlink() and stat.S_IMODE(target.stat().st_mode) == 0o600
    assert [p.name for p in cache.iterdir() if p.name.endswith(".tmp")] == []


def test_a_new_cache_directory_is_private_with_its_missing_parents(tmp_path: Path) -> None:
    cache = tmp_path / "data" / "tiktoken"
    tokens.private_dir(cache)
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    assert stat.S_IMODE(cache.parent.stat().st_mode) == 0o700


@pytest.mark.parametrize("how", ["world-writable", "someone else's", "a symlink"])
def test_a_cache_directory_others_control_is_refused(tmp_path: Path, how: str) -> None:
    cache = tmp_path / "cache"
    if how == "a symlink":
        (tmp_path / "elsewhere").mkdir(mode=0o700)
        cache.symlink_to(tmp_path / "elsewhere")
    else:
        cache.mkdir(mode=0o700)
        if how == "world-writable":
            os.chmod(cache, 0o1777)  # like /tmp
        elif os.geteuid() == 0:
            os.chown(cache, 65534, 65534)  # nobody
        else:
            pytest.skip("only root can give a directory away")
    with pytest.raises(ConfigError, match=f"TIKTOKEN_CACHE_DIR: {cache} is not"):
        tokens.set_cache_dir(cache)


def test_a_read_only_cache_baked_by_root_is_accepted(tmp_path: Path) -> None:
    """The Docker image's /opt/tiktoken: owned by root, readable by all, writable by root."""
    cache = tmp_path / "baked"
    tokens.private_dir(cache)
    tokens.seed_cache(cache)
    os.chmod(cache, 0o755)
    tokens.private_dir(cache)  # no error: nobody but its owner (root here) can write to it


def test_without_a_directory_the_cache_is_a_fresh_private_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(tokens, "_cache_dir", None)
    cache = tokens._effective_cache_dir()
    try:
        assert cache.name.startswith("telegram-bot-tiktoken-") and cache.name != (
            "telegram-bot-tiktoken"
        ), "not a predictable shared name"
        assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    finally:
        cache.rmdir()
