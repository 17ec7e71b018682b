"""The one Settings object, and the only module that reads the environment.

Settings come from the process environment, then from a `.env` file (the environment wins, so a
deployment can override a checked-in file). Every value is parsed and validated once, at start-up:
a bad value ends the process with exit code 2 and one line naming the setting and what is
expected, never a traceback. Everything else in the bot receives a frozen `Settings`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

from .errors import ConfigError
from .memory.budget import context_window_for

OPENAI_DEFAULT_BASE_URL = "https://api.openai.com/v1"
TELEGRAM_DEFAULT_BASE_URL = "https://api.telegram.org/bot"
HEALTH_PATH = "/healthz"
DEFAULT_SYSTEM_PROMPT = (
    "You are a helpful, friendly assistant chatting on Telegram. Answer concisely and "
    "accurately; use Markdown sparingly. If you don't know something, say so."
)

T = TypeVar("T")


def _text(value: str) -> str:
    return value


def _int(low: int | None = None, high: int | None = None) -> Callable[[str], int]:
    def parse(value: str) -> int:
        try:
            number = int(value.strip().replace("_", ""))
        except ValueError:
            raise ValueError("a whole number") from None
        if (low is not None and number < low) or (high is not None and number > high):
            raise ValueError(f"a whole number from {low} to {high}" if high else f"≥ {low}")
        return number

    return parse


def _float(low: float = 0.0) -> Callable[[str], float]:
    def parse(value: str) -> float:
        try:
            number = float(value.strip())
        except ValueError:
            raise ValueError("a number of seconds, e.g. 1.5") from None
        if number < low:
            raise ValueError(f"a number ≥ {low}")
        return number

    return parse


def _bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError("true or false")


def _show_reasoning(value: str) -> str:
    lowered = value.strip().lower()
    if lowered not in {"off", "collapsed"}:
        raise ValueError("off or collapsed")
    return lowered


def _url(value: str) -> str:
    stripped = value.strip()
    if not stripped.startswith(("http://", "https://")):
        raise ValueError("a URL starting with http:// or https://")
    return stripped.rstrip("/")


def _ids(value: str) -> frozenset[int]:
    try:
        return frozenset(int(part) for part in value.replace(";", ",").split(",") if part.strip())
    except ValueError:
        raise ValueError("a comma-separated list of numeric Telegram ids") from None


def _log_level(value: str) -> str:
    level = value.strip().upper()
    if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
        raise ValueError("one of DEBUG, INFO, WARNING, ERROR")
    return level


def _token(value: str) -> str:
    stripped = value.strip()
    head, _, tail = stripped.partition(":")
    if not head.isdigit() or len(tail) < 10:
        raise ValueError("the token from @BotFather, like 123456789:AAH...")
    return stripped


def _secret_token(value: str) -> str:
    stripped = value.strip()
    if not 1 <= len(stripped) <= 256 or not re.fullmatch(r"[A-Za-z0-9_-]+", stripped):
        raise ValueError("1 to 256 characters A-Z, a-z, 0-9, _ and - (Telegram's rule)")
    return stripped


def _webhook_url(value: str) -> str:
    url = _url(value)
    path = urlsplit(url).path or "/"
    if path == HEALTH_PATH:
        raise ValueError(f"a URL whose path is not {HEALTH_PATH} (the health check's)")
    return url


def parse_database_url(value: str) -> str:
    """A PostgreSQL URL (`postgresql://user:password@host:5432/dbname`); its password is never
    echoed back in the error."""
    stripped = value.strip()
    try:
        parts = urlsplit(stripped)
        _ = parts.port  # raises ValueError on a port that is not a number
    except ValueError:
        raise ValueError("a postgresql:// URL with a numeric port") from None
    if parts.scheme not in ("postgresql", "postgres"):
        raise ValueError(
            "a postgresql://user:password@host:5432/dbname URL (unset: SQLite at DATABASE_PATH)"
        )
    if not (parts.hostname or "host=" in parts.query) or not parts.path.strip("/"):
        raise ValueError("a postgresql:// URL naming a host and a database")
    return stripped


def database_url_secrets(url: str) -> tuple[str, ...]:
    """What of a database URL must never be logged: its password, as written and decoded."""
    password = urlsplit(url).password if url else None
    return (password, unquote(password)) if password else ()


def describe_database_url(url: str) -> str:
    """host:port/dbname of a database URL, for a log line: no user, no password."""
    parts = urlsplit(url)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.hostname or 'localhost'}{port}{parts.path}"


def _setting(env: str, parse: Callable[[str], Any], default: Any = None, **kw: Any) -> Any:
    """Declares a field together with its environment name and parser."""
    return field(default=default, metadata={"env": env, "parse": parse}, **kw)


@dataclass(frozen=True, slots=True)
class Settings:
    telegram_bot_token: str = _setting("TELEGRAM_BOT_TOKEN", _token, "", repr=False)
    openai_api_key: str = _setting("OPENAI_API_KEY", _text, "", repr=False)
    openai_base_url: str = _setting("OPENAI_BASE_URL", _url, OPENAI_DEFAULT_BASE_URL)
    openai_model: str = _setting("OPENAI_MODEL", _text, "gpt-4o-mini")
    openai_timeout: float = _setting("OPENAI_TIMEOUT", _float(1.0), 300.0)
    openai_max_retries: int = _setting("OPENAI_MAX_RETRIES", _int(0, 10), 2)
    telegram_api_base_url: str = _setting("TELEGRAM_API_BASE_URL", _url, TELEGRAM_DEFAULT_BASE_URL)
    database_path: Path = _setting("DATABASE_PATH", Path, Path("data/bot.sqlite3"))
    system_prompt: str = _setting("SYSTEM_PROMPT", _text, DEFAULT_SYSTEM_PROMPT)
    log_level: str = _setting("LOG_LEVEL", _log_level, "INFO")
    streaming: bool = _setting("STREAMING", _bool, True)
    stream_edit_interval: float = _setting("STREAM_EDIT_INTERVAL", _float(0.05), 1.0)
    # The longest answer per model call (`max_tokens`), at most half the window; an answer
    # that reaches it is delivered with a line offering /continue.
    max_output_tokens: int = _setting("MAX_OUTPUT_TOKENS", _int(16, 1_000_000), 4096)
    history_token_budget: int = _setting("HISTORY_TOKEN_BUDGET", _int(100), 3000)
    max_input_chars: int = _setting("MAX_INPUT_CHARS", _int(1, 1_000_000), 16_000)
    tiktoken_cache_dir: Path | None = _setting("TIKTOKEN_CACHE_DIR", Path, None)
    # Updates being handled at once across all chats; one waiting for its chat's turn holds no
    # slot. 256 covers the 200-chat burst of the benchmark; every update in progress costs
    # memory (about 17 KB at peak), kept by the allocator after a burst.
    max_concurrent_updates: int = _setting("MAX_CONCURRENT_UPDATES", _int(1, 100_000), 256)
    # Group chats, personas and admin control (issue 4).
    owner_ids: frozenset[int] = _setting("OWNER_IDS", _ids, frozenset())
    allowed_user_ids: frozenset[int] = _setting("ALLOWED_USER_IDS", _ids, frozenset())
    allowed_chat_ids: frozenset[int] = _setting("ALLOWED_CHAT_IDS", _ids, frozenset())
    group_context_messages: int = _setting("GROUP_CONTEXT_MESSAGES", _int(0, 1000), 20)
    admin_cache_seconds: float = _setting("ADMIN_CACHE_SECONDS", _float(0.0), 300.0)
    personas_file: Path | None = _setting("PERSONAS_FILE", Path, None)
    max_persona_chars: int = _setting("MAX_PERSONA_CHARS", _int(1, 100_000), 4000)
    refusal_interval: float = _setting("REFUSAL_INTERVAL", _float(0.0), 600.0)
    # Reliability (issue 5): usage limits, the Stop button, shutdown.
    rate_limit_per_minute: int = _setting("RATE_LIMIT_PER_MINUTE", _int(0, 100_000), 0)
    daily_token_limit_user: int = _setting("DAILY_TOKEN_LIMIT_USER", _int(0), 0)
    daily_token_limit_chat: int = _setting("DAILY_TOKEN_LIMIT_CHAT", _int(0), 0)
    stop_button: bool = _setting("STOP_BUTTON", _bool, False)
    shutdown_grace: float = _setting("SHUTDOWN_GRACE", _float(0.0), 5.0)

    # --- PostgreSQL instead of SQLite (issue 15) ---------------------------------------------
    # Set: the store is PostgreSQL at this URL (DATABASE_PATH is then unused).
    database_url: str = _setting("DATABASE_URL", parse_database_url, "", repr=False)
    # Connections the process keeps to PostgreSQL at most; a reply holds one only per query.
    database_pool_size: int = _setting("DATABASE_POOL_SIZE", _int(1, 1000), 10)
    # PgBouncer in transaction mode between the bot and PostgreSQL: no prepared statements.
    database_pgbouncer: bool = _setting("DATABASE_PGBOUNCER", _bool, False)
    # Several replicas on one PostgreSQL (issue 15): LISTEN needs a session of its own; behind
    # PgBouncer in transaction mode, point this straight at PostgreSQL. Unset: DATABASE_URL.
    database_listen_url: str = _setting("DATABASE_LISTEN_URL", parse_database_url, "", repr=False)
    # A replica silent this long is dead: its chats and pending updates are taken over.
    replica_lease_seconds: float = _setting("REPLICA_LEASE_SECONDS", _float(1.0), 10.0)

    # --- Process life: webhook mode, the durable inbox (issues 15 and 16) --------------------
    # WEBHOOK_URL set: Telegram posts updates to it (served on WEBHOOK_LISTEN:WEBHOOK_PORT at
    # the URL's path, with /healthz beside it); unset: long polling.
    webhook_url: str = _setting("WEBHOOK_URL", _webhook_url, "")
    webhook_listen: str = _setting("WEBHOOK_LISTEN", _text, "0.0.0.0")
    webhook_port: int = _setting("WEBHOOK_PORT", _int(1, 65535), 8080)
    webhook_secret_token: str = _setting("WEBHOOK_SECRET_TOKEN", _secret_token, "", repr=False)
    # Updates acknowledged but not handled before a crash are handled after the restart if
    # they are at most this many seconds old; older ones get one line asking to send again.
    recovery_window: float = _setting("RECOVERY_WINDOW", _float(0.0), 900.0)

    # --- Long conversations and memory (issue 3) ---------------------------------------------
    # MODEL_CONTEXT_WINDOW unset: what the server says at start-up (`llm/server_info.py`), else a
    # default for the model family (see `budget.context_window_for`).
    model_context_window: int | None = _setting("MODEL_CONTEXT_WINDOW", _int(256), None)
    # 0 turns summaries off (oldest turns are then only dropped from the prompt).
    summary_token_budget: int = _setting("SUMMARY_TOKEN_BUDGET", _int(0, 100_000), 600)
    # 0 turns recall of archived snippets off.
    recall_token_budget: int = _setting("RECALL_TOKEN_BUDGET", _int(0, 100_000), 500)
    # Empty: the main model (OPENAI_MODEL) writes the summaries.
    summary_model: str = _setting("SUMMARY_MODEL", _text, "")

    # --- Voice, photos and files (issue 14) ------------------------------------------------
    # Speech-to-text: an OpenAI-compatible POST /audio/transcriptions. Empty URL: the chat
    # endpoint's (OPENAI_BASE_URL; Ollama has none, so point it elsewhere). Empty key: the chat
    # key for the chat server only; a server elsewhere gets none unless given its own.
    transcription_model: str = _setting("TRANSCRIPTION_MODEL", _text, "whisper-1")
    transcription_base_url: str = _setting("TRANSCRIPTION_BASE_URL", _url, "")
    transcription_api_key: str = _setting("TRANSCRIPTION_API_KEY", _text, "", repr=False)
    # Longer voice notes, audio files and video notes are refused before they are downloaded.
    max_voice_seconds: int = _setting("MAX_VOICE_SECONDS", _int(1, 86_400), 600)
    # The model for turns with images; empty: OPENAI_MODEL.
    vision_model: str = _setting("VISION_MODEL", _text, "")
    # The longest text a file (text-like or PDF) may have to be read.
    max_document_chars: int = _setting("MAX_DOCUMENT_CHARS", _int(1, 10_000_000), 40_000)

    # --- Reasoning models (issue 13) ---------------------------------------------------------
    # A reasoning model's thought: off (only "Thinking…" while it thinks) or collapsed (the
    # answer starts with the thought in a quote the reader can expand). Never stored.
    show_reasoning: str = _setting("SHOW_REASONING", _show_reasoning, "off")

    # --- Bounded work (issue 16) ---------------------------------------------------------------
    # One answer, first byte to last; unset: 3 × OPENAI_TIMEOUT (which bounds each read only).
    answer_timeout: float | None = _setting("ANSWER_TIMEOUT", _float(1.0), None)
    # The longest answer kept; unset: 16 characters per MAX_OUTPUT_TOKENS token.
    max_answer_chars: int | None = _setting("MAX_ANSWER_CHARS", _int(100, 100_000_000), None)
    # How long a write may wait for a database another process holds locked.
    database_busy_timeout: float = _setting("DATABASE_BUSY_TIMEOUT", _float(0.0), 5.0)

    @property
    def context_window(self) -> int:
        """MODEL_CONTEXT_WINDOW, or the known window of the model family (8192 otherwise)."""
        return self.model_context_window or context_window_for(self.openai_model)

    @property
    def answer_deadline(self) -> float:
        """ANSWER_TIMEOUT, or three times OPENAI_TIMEOUT."""
        return self.answer_timeout or 3 * self.openai_timeout

    @property
    def answer_chars(self) -> int:
        """MAX_ANSWER_CHARS, or 16 characters per MAX_OUTPUT_TOKENS token."""
        return self.max_answer_chars or 16 * self.max_output_tokens

    @property
    def summariser_model(self) -> str:
        return self.summary_model.strip() or self.openai_model

    @property
    def token_cache_dir(self) -> Path:
        """TIKTOKEN_CACHE_DIR; else a private `tiktoken` folder beside the SQLite database, or on
        PostgreSQL (no database file) one in the user's cache directory."""
        if self.tiktoken_cache_dir is not None:
            return self.tiktoken_cache_dir
        if not self.database_url:
            return self.database_path.parent / "tiktoken"
        cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        return Path(cache) / "telegram-bot" / "tiktoken"

    @property
    def webhook_path(self) -> str:
        """The path the webhook is served at: WEBHOOK_URL's (`/` when it has none)."""
        return urlsplit(self.webhook_url).path or "/"

    @property
    def transcriber_base_url(self) -> str:
        return self.transcription_base_url or self.openai_base_url

    @property
    def transcriber_api_key(self) -> str:
        """TRANSCRIPTION_API_KEY; unset, the chat key, but only for the chat server itself:
        a speech-to-text server elsewhere (another host or port) never gets OPENAI_API_KEY."""
        if self.transcription_api_key:
            return self.transcription_api_key
        if _origin(self.transcriber_base_url) == _origin(self.openai_base_url):
            return self.openai_api_key
        return ""

    @property
    def image_model(self) -> str:
        """VISION_MODEL, or the chat model."""
        return self.vision_model.strip() or self.openai_model

    @property
    def uses_openai(self) -> bool:
        """True when talking to OpenAI itself, where an API key is mandatory."""
        return self.openai_base_url == OPENAI_DEFAULT_BASE_URL


def read_dotenv(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    from dotenv import dotenv_values  # small, but only needed when a file exists

    return {k: v for k, v in dotenv_values(path).items() if v is not None}


def load_settings(
    environ: Mapping[str, str] | None = None,
    dotenv_path: Path | None = Path(".env"),
    *,
    require_token: bool = True,
    require_model: bool = True,
) -> Settings:
    """Builds Settings from `.env` overlaid by the environment; raises ConfigError.

    `require_model=False` (commands that never call the model, e.g. migrate-db) skips the
    check that OpenAI itself is given an API key."""
    source: dict[str, str] = read_dotenv(dotenv_path) if dotenv_path else {}
    source.update(os.environ if environ is None else environ)
    values: dict[str, Any] = {}
    for f in fields(Settings):
        name = f.metadata["env"]
        raw = source.get(name)
        if raw is None or raw.strip() == "":
            continue
        try:
            values[f.name] = f.metadata["parse"](raw)
        except ValueError as exc:
            raise ConfigError(f"{name}: expected {exc}") from None
    settings = Settings(**values)
    _check_required(settings, require_token=require_token, require_model=require_model)
    return settings


def _check_required(settings: Settings, *, require_token: bool, require_model: bool) -> None:
    if require_token and not settings.telegram_bot_token:
        raise ConfigError(
            "TELEGRAM_BOT_TOKEN: expected the token from @BotFather "
            "(set it in .env or the environment)"
        )
    if settings.webhook_url and not settings.webhook_secret_token:
        raise ConfigError(
            "WEBHOOK_SECRET_TOKEN: expected a secret (1-256 characters A-Z, a-z, 0-9, _, -) "
            "when WEBHOOK_URL is set: Telegram sends it with every update, and requests "
            "without it are refused"
        )
    if require_model and settings.uses_openai and not settings.openai_api_key:
        raise ConfigError(
            "OPENAI_API_KEY: expected an API key for OpenAI "
            "(or set OPENAI_BASE_URL to a local server such as Ollama)"
        )


def _origin(url: str) -> tuple[str, str, int]:
    """Scheme, host and port: where a request goes, whatever the path."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or (443 if scheme == "https" else 80)
