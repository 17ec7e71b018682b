"""Settings: defaults that work, clear one-line errors, and the CLI's exit code 2."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from telegram_bot.config import (
    OPENAI_DEFAULT_BASE_URL,
    Settings,
    database_url_secrets,
    load_settings,
)
from telegram_bot.errors import ConfigError
from telegram_bot.logs import RedactSecrets

TOKEN = "123456:ABCDEFGHIJKLMNOP"
ROOT = Path(__file__).resolve().parent.parent


def test_defaults_with_only_the_two_keys() -> None:
    s = load_settings({"TELEGRAM_BOT_TOKEN": TOKEN, "OPENAI_API_KEY": "sk-x"}, None)
    assert s.openai_model == "gpt-4o-mini"
    assert s.openai_base_url == OPENAI_DEFAULT_BASE_URL
    assert s.database_path == Path("data/bot.sqlite3")
    assert s.streaming is True


def test_local_server_needs_no_api_key() -> None:
    s = load_settings(
        {"TELEGRAM_BOT_TOKEN": TOKEN, "OPENAI_BASE_URL": "http://localhost:11434/v1/"}, None
    )
    assert s.openai_base_url == "http://localhost:11434/v1"
    assert s.openai_api_key == ""


def test_dotenv_file_is_read_and_environment_wins(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(f"TELEGRAM_BOT_TOKEN={TOKEN}\nOPENAI_API_KEY=sk-file\nOPENAI_MODEL=a\n")
    s = load_settings({"OPENAI_MODEL": "b"}, env_file)
    assert (s.openai_api_key, s.openai_model) == ("sk-file", "b")


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({}, "TELEGRAM_BOT_TOKEN"),
        ({"TELEGRAM_BOT_TOKEN": "nonsense"}, "TELEGRAM_BOT_TOKEN"),
        ({"TELEGRAM_BOT_TOKEN": TOKEN}, "OPENAI_API_KEY"),
        ({"TELEGRAM_BOT_TOKEN": TOKEN, "OPENAI_API_KEY": "k", "STREAMING": "maybe"}, "STREAMING"),
        ({"TELEGRAM_BOT_TOKEN": TOKEN, "OPENAI_API_KEY": "k", "OPENAI_BASE_URL": "x"}, "BASE_URL"),
        ({"TELEGRAM_BOT_TOKEN": TOKEN, "OPENAI_API_KEY": "k", "MAX_OUTPUT_TOKENS": "lots"}, "MAX"),
    ],
)
def test_bad_settings_name_the_setting(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        load_settings(env, None)


def test_secrets_are_not_in_the_repr() -> None:
    s = load_settings({"TELEGRAM_BOT_TOKEN": TOKEN, "OPENAI_API_KEY": "sk-secret-value"}, None)
    assert TOKEN not in repr(s) and "sk-secret-value" not in repr(s)


def test_cli_exits_2_with_one_line_when_the_token_is_missing(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TELEGRAM_", "OPENAI_"))}
    env["PYTHONPATH"] = str(ROOT)
    result = subprocess.run(
        [sys.executable, "-m", "telegram_bot"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "TELEGRAM_BOT_TOKEN" in lines[0]
    assert "Traceback" not in result.stderr


def test_reliability_settings_parse_from_the_environment() -> None:
    settings = load_settings(
        {
            "TELEGRAM_BOT_TOKEN": "123456789:AAH-abcdefghijklmnop",
            "OPENAI_API_KEY": "sk-x",
            "OWNER_IDS": "1001, 2002;3003",
            "RATE_LIMIT_PER_MINUTE": "6",
            "DAILY_TOKEN_LIMIT_USER": "50_000",
            "DAILY_TOKEN_LIMIT_CHAT": "200000",
            "STOP_BUTTON": "yes",
            "SHUTDOWN_GRACE": "2.5",
        },
        dotenv_path=None,
    )
    assert settings.owner_ids == frozenset({1001, 2002, 3003})
    assert (settings.rate_limit_per_minute, settings.daily_token_limit_user) == (6, 50_000)
    assert settings.daily_token_limit_chat == 200_000
    assert settings.stop_button and settings.shutdown_grace == 2.5


def test_every_setting_is_documented_in_the_readme_and_env_example() -> None:
    readme = (ROOT / "README.md").read_text()
    example = (ROOT / ".env.example").read_text()
    for f in fields(Settings):
        name = f.metadata["env"]
        assert f"| `{name}` |" in readme, f"{name} has no row in README's Settings table"
        assert f"{name}=" in example, f"{name} is missing from .env.example"


def test_memory_settings_default_by_model_and_parse() -> None:
    keys = {"TELEGRAM_BOT_TOKEN": TOKEN, "OPENAI_API_KEY": "sk-x"}
    s = load_settings(keys, None)
    assert s.context_window == 128_000, "gpt-4o-mini's window"
    assert (s.summary_token_budget, s.recall_token_budget) == (600, 500)
    assert s.summariser_model == "gpt-4o-mini"
    s = load_settings(
        {
            **keys,
            "OPENAI_MODEL": "some-local-model",
            "MODEL_CONTEXT_WINDOW": "4096",
            "SUMMARY_MODEL": "tiny",
            "SUMMARY_TOKEN_BUDGET": "0",
        },
        None,
    )
    assert (s.context_window, s.summariser_model, s.summary_token_budget) == (4096, "tiny", 0)
    assert load_settings({**keys, "OPENAI_MODEL": "mystery"}, None).context_window == 8192
    with pytest.raises(ConfigError, match="MODEL_CONTEXT_WINDOW"):
        load_settings({**keys, "MODEL_CONTEXT_WINDOW": "lots"}, None)


def test_database_settings_parse_and_a_bad_url_is_named_without_its_password() -> None:
    keys = {"TELEGRAM_BOT_TOKEN": TOKEN, "OPENAI_API_KEY": "sk-x"}
    s = load_settings(keys, None)
    assert (s.database_url, s.database_pool_size, s.database_pgbouncer) == ("", 10, False)
    url = "postgresql://bot:pw-secret-123@db.example:6432/bot"
    s = load_settings(
        {**keys, "DATABASE_URL": url, "DATABASE_POOL_SIZE": "4", "DATABASE_PGBOUNCER": "true"},
        None,
    )
    assert (s.database_url, s.database_pool_size, s.database_pgbouncer) == (url, 4, True)
    assert "pw-secret-123" not in repr(s)
    for bad in ("mysql://bot:pw-secret-123@db/bot", "postgresql://bot:pw-secret-123@db:x/bot"):
        with pytest.raises(ConfigError, match="DATABASE_URL") as raised:
            load_settings({**keys, "DATABASE_URL": bad}, None)
        assert "pw-secret-123" not in str(raised.value)


def test_the_log_never_shows_a_database_password() -> None:
    url = "postgresql://bot:pw-secret-123@db.example:6432/bot"
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "cannot reach %s", (url,), None)
    RedactSecrets(database_url_secrets(url)).filter(record)
    assert record.getMessage() == "cannot reach postgresql://bot:[redacted]@db.example:6432/bot"
    # A short password is not a literal secret (too common a string), but in a URL it goes too.
    short = "postgres://bot:pw@db/bot and more"
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, short, None, None)
    RedactSecrets(()).filter(record)
    assert record.getMessage() == "postgres://bot:[redacted]@db/bot and more"
