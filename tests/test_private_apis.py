"""The private parts of our dependencies that the bot relies on, checked so an upgrade that
changes them fails here, loudly and by name, instead of silently costing memory or a leak.

Each is pinned below the next release line in pyproject.toml; aiosqlite's is checked in
tests/test_sqlite.py next to the one function that uses it.
"""

from __future__ import annotations

import inspect

import tiktoken
from telegram.ext import Application

from telegram_bot import tokens
from telegram_bot.telegram_adapter.services import BotApplication


def test_ptb_still_marks_chats_for_persistence_through_the_method_we_override() -> None:
    method = getattr(Application, "_mark_for_persistence_update", None)
    assert method is not None, (
        "python-telegram-bot no longer has Application._mark_for_persistence_update: "
        "BotApplication's leak fix (telegram_adapter/services.py) does nothing now; "
        "find where PTB marks chat and user ids and move the override there"
    )
    ours = inspect.signature(BotApplication._mark_for_persistence_update)
    assert inspect.signature(method).parameters.keys() == ours.parameters.keys(), (
        "the signature of Application._mark_for_persistence_update changed: update "
        "BotApplication's override to match"
    )


def test_tiktoken_keeps_the_rank_table_where_tokens_drops_it() -> None:
    fresh = tiktoken.Encoding(
        "probe", pat_str=r"\w+|\s+", mergeable_ranks={b"a": 0, b"b": 1}, special_tokens={}
    )
    assert getattr(fresh, "_mergeable_ranks", None) == {b"a": 0, b"b": 1}, (
        "tiktoken.Encoding no longer keeps its ranks in _mergeable_ranks: tokens.encoding() "
        "would keep ~28 MB it means to drop; find the new attribute"
    )
    loaded = tokens.encoding("cl100k_base")
    assert loaded._mergeable_ranks == {}, "tokens.encoding() drops the Python copy"
    assert tokens.count_text("Hello, world!", "gpt-4") == 4, "and counting still works"
