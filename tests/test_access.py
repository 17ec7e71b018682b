"""The pure rules behind groups and admin control: allowlists, rights, pacing, presets."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from telegram_bot.engine.access import AdminCache, Policy, RefusalLimiter, Verdict
from telegram_bot.engine.personas import load_presets
from telegram_bot.errors import ConfigError
from telegram_bot.telegram_adapter.addressing import strip_mentions
from telegram_bot.telegram_adapter.handlers.commands import ADMIN, GROUP, PRIVATE, menu_for
from telegram_bot.telegram_adapter.handlers.membership import privacy_note
from telegram_bot.telegram_adapter.updates import command_for

OWNER, ALICE, BOB = 1, 10, 20
LISTED, OTHER = -100_1, -100_2
ROOT = Path(__file__).resolve().parent.parent


def decide(policy: Policy, chat: int | None, user: int | None) -> Verdict:
    private = chat is not None and chat > 0
    return policy.decide(chat_id=chat, private=private, user_id=user)


def test_everything_is_open_when_both_lists_are_empty() -> None:
    policy = Policy()
    assert decide(policy, BOB, BOB) is Verdict.ALLOW
    assert decide(policy, OTHER, BOB) is Verdict.ALLOW
    assert decide(policy, OTHER, None) is Verdict.ALLOW  # anonymous admin


def test_allowed_users_restrict_private_chats_and_unlisted_groups() -> None:
    policy = Policy(owners=frozenset({OWNER}), allowed_users=frozenset({ALICE}))
    assert decide(policy, ALICE, ALICE) is Verdict.ALLOW
    assert decide(policy, BOB, BOB) is Verdict.REFUSE_USER
    assert decide(policy, OWNER, OWNER) is Verdict.ALLOW, "owners are always allowed"
    assert decide(policy, OTHER, ALICE) is Verdict.ALLOW
    assert decide(policy, OTHER, BOB) is Verdict.REFUSE_USER
    assert decide(policy, OTHER, None) is Verdict.REFUSE_USER, "nobody to vouch for"


def test_a_listed_group_is_open_to_its_members_and_others_are_left() -> None:
    policy = Policy(allowed_users=frozenset({ALICE}), allowed_chats=frozenset({LISTED}))
    assert decide(policy, LISTED, BOB) is Verdict.ALLOW
    assert decide(policy, LISTED, None) is Verdict.ALLOW
    assert decide(policy, OTHER, ALICE) is Verdict.LEAVE_CHAT
    assert decide(policy, BOB, BOB) is Verdict.REFUSE_USER
    assert decide(Policy(allowed_chats=frozenset({LISTED})), BOB, BOB) is Verdict.ALLOW
    assert (
        decide(Policy(allowed_users=frozenset({ALICE}), allowed_chats=frozenset({BOB})), BOB, BOB)
        is Verdict.ALLOW
    )


def test_who_may_manage_a_chat() -> None:
    policy = Policy(owners=frozenset({OWNER}))

    def may(private: bool, user: int | None, admin: bool = False, as_chat: bool = False) -> bool:
        return policy.may_manage(private=private, user_id=user, is_admin=admin, as_the_chat=as_chat)

    assert may(True, BOB)
    assert not may(False, BOB)
    assert may(False, BOB, admin=True)
    assert may(False, None, as_chat=True)
    assert may(False, OWNER)


def test_refusals_are_answered_at_most_once_per_interval() -> None:
    now = [0.0]
    limiter = RefusalLimiter(600.0, clock=lambda: now[0])
    assert limiter.should_answer(BOB)
    assert not limiter.should_answer(BOB)
    assert limiter.should_answer(ALICE)
    now[0] = 601.0
    assert limiter.should_answer(BOB)


async def test_admin_lists_are_cached_and_rechecked_for_a_new_admin() -> None:
    now = [0.0]
    admins = {ALICE}
    fetched: list[int] = []

    async def fetch(chat_id: int) -> frozenset[int]:
        fetched.append(chat_id)
        return frozenset(admins)

    cache = AdminCache(300.0, clock=lambda: now[0])
    assert await cache.is_admin(LISTED, ALICE, fetch)
    assert not await cache.is_admin(LISTED, BOB, fetch)
    assert fetched == [LISTED], "one call serves the whole group"
    admins.add(BOB)  # promoted
    now[0] = 30.0
    assert await cache.is_admin(LISTED, BOB, fetch), "a refusal re-asks once the list is 10 s old"
    assert await cache.is_admin(LISTED, ALICE, fetch)
    assert len(fetched) == 2
    now[0] = 400.0
    assert await cache.is_admin(LISTED, ALICE, fetch)
    assert len(fetched) == 3, "expired after ADMIN_CACHE_SECONDS"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("@bot what do you think?", "what do you think?"),
        ("@bot, what now", "what now"),
        ("what do you think, @bot?", "what do you think?"),
        ("thanks @bot!", "thanks!"),
        ("I told @bot about it", "I told Bot about it"),
        ("@bot", ""),
    ],
)
def test_mentions_are_stripped_sensibly(text: str, expected: str) -> None:
    start = text.index("@bot")
    assert strip_mentions(text, [(start, start + 4)], "Bot") == expected


def test_commands_for_this_bot_or_for_everyone_but_not_for_others() -> None:
    assert command_for("/ask hi", "test_bot") == "ask"
    assert command_for("/ask@Test_Bot hi", "test_bot") == "ask"
    assert command_for("/reset@other_bot", "test_bot") is None
    assert command_for("not a command", "test_bot") is None


def test_the_shipped_presets_load(tmp_path: Path) -> None:
    presets = load_presets()
    assert {"pirate", "tutor", "concise"} <= set(presets)
    assert all(p.prompt and p.description for p in presets.values())


@pytest.mark.parametrize(
    ("content", "complaint"),
    [
        ("[pirate\nprompt = 'x'", "not valid TOML"),
        ("[pirate]\ndescription = 'no prompt'", "needs a prompt"),
        ('["two words"]\nprompt = "x"', "preset name"),
        ("[long]\nprompt = '" + "x" * 50 + "'", "1 to 40 characters"),
    ],
)
def test_a_broken_personas_file_is_a_clear_config_error(
    tmp_path: Path, content: str, complaint: str
) -> None:
    path = tmp_path / "personas.toml"
    path.write_text(content)
    with pytest.raises(ConfigError, match="PERSONAS_FILE") as error:
        load_presets(path, max_chars=40)
    assert complaint in str(error.value)
    with pytest.raises(ConfigError, match="cannot read"):
        load_presets(tmp_path / "missing.toml")


def test_privacy_note_says_what_works_and_how_to_change_it() -> None:
    assert "ON" in privacy_note(False, 20) and "Turn off" in privacy_note(False, 20)
    assert "OFF" in privacy_note(True, 20) and "last 20" in privacy_note(True, 20)
    assert "keep none" in privacy_note(True, 0)


def test_each_scope_sees_the_commands_that_apply_to_it() -> None:
    everyone = ["memory", "stop", "retry", "continue", "usage"]
    assert [name for name, _ in menu_for(PRIVATE)] == ["help", "reset", "persona", *everyone]
    assert [name for name, _ in menu_for(GROUP)] == ["help", "ask", "persona", *everyone]
    assert [name for name, _ in menu_for(ADMIN)] == [
        "help",
        "ask",
        "reset",
        "persona",
        *everyone,
    ]
    assert dict(menu_for(ADMIN))["persona"] == "Show or change my persona"
    assert dict(menu_for(GROUP))["persona"].startswith("Show the persona")


def test_cli_check_rejects_a_broken_personas_file_with_one_line(tmp_path: Path) -> None:
    broken = tmp_path / "personas.toml"
    broken.write_text("[pirate]\ndescription = 'no prompt'\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TELEGRAM_", "OPENAI_"))}
    env.update(
        PYTHONPATH=str(ROOT),
        TELEGRAM_BOT_TOKEN="123456:ABCDEFGHIJKLMNOP",
        OPENAI_API_KEY="sk-x",
        PERSONAS_FILE=str(broken),
        OWNER_IDS="1, 2",
    )
    result = subprocess.run(
        [sys.executable, "-m", "telegram_bot", "check"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "PERSONAS_FILE" in lines[0] and "pirate" in lines[0]


def test_the_new_settings_parse_from_the_environment() -> None:
    from telegram_bot.config import load_settings

    s = load_settings(
        {
            "TELEGRAM_BOT_TOKEN": "123456:ABCDEFGHIJKLMNOP",
            "OPENAI_API_KEY": "k",
            "OWNER_IDS": "1,2",
            "ALLOWED_USER_IDS": "3; 4",
            "ALLOWED_CHAT_IDS": "-1001",
            "GROUP_CONTEXT_MESSAGES": "0",
        },
        None,
    )
    assert s.owner_ids == {1, 2} and s.allowed_user_ids == {3, 4}
    assert s.allowed_chat_ids == {-1001} and s.group_context_messages == 0
    assert (s.max_persona_chars, s.admin_cache_seconds, s.refusal_interval) == (4000, 300, 600)


def test_mentions_are_found_by_utf16_offsets_and_only_for_this_bot() -> None:
    from datetime import UTC, datetime

    from telegram import Chat, Message, MessageEntity, User

    from telegram_bot.telegram_adapter.addressing import mention_spans

    text = "😀 привет @other_bot и @Test_Bot, как дела? TestBot"
    utf16 = text.encode("utf-16-le")

    def offset(part: str) -> int:
        return utf16.index(part.encode("utf-16-le")) // 2

    me = User(42, "TestBot", is_bot=True, username="test_bot")
    entities = [
        MessageEntity(MessageEntity.MENTION, offset("@other_bot"), 10),
        MessageEntity(MessageEntity.MENTION, offset("@Test_Bot"), 9),
        MessageEntity(MessageEntity.TEXT_MENTION, offset("TestBot"), 7, user=me),
    ]
    message = Message(1, datetime.now(UTC), Chat(-5, "group"), text=text, entities=entities)
    spans = mention_spans(message, 42, "test_bot")
    assert [text[a:b] for a, b in spans] == ["@Test_Bot", "TestBot"]
    assert strip_mentions(text, spans, "TestBot") == "😀 привет @other_bot и TestBot, как дела?"
