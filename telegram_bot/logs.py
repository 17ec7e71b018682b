"""Logging set-up: one format, quiet HTTP loggers, and secrets scrubbed from every record.

Bot API URLs contain the bot token, so httpx's request lines are kept at WARNING (as
python-telegram-bot's examples do). As a second line of defence a filter on the handler replaces
the token, the API key and the database password wherever they would appear in a formatted
record, tracebacks included, and the password of any URL written `scheme://user:password@host`.
An exception that escapes everything (to the interpreter, or out of a thread) is printed
through the same scrubbing: python-telegram-bot's InvalidToken, for one, carries the token.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import traceback
from collections.abc import Iterable
from types import TracebackType

# The password part of `scheme://user:password@host` (a DATABASE_URL in a driver's message).
_URL_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^\s:/@]*:)[^\s/@]+@", re.IGNORECASE)


class RedactSecrets(logging.Filter):
    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self._secrets = [s for s in secrets if s and len(s) >= 8]

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        scrubbed = self.scrub(message)
        if scrubbed != message:
            record.msg, record.args = scrubbed, None
        if record.exc_text:
            record.exc_text = self.scrub(record.exc_text)
        return True

    def scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "[redacted]")
        # A function, not a template: a template is compiled on first use, which fails in
        # a record logged while the interpreter shuts down.
        return _URL_PASSWORD.sub(lambda match: f"{match[1]}[redacted]@", text)


def setup_logging(level: str, secrets: Iterable[str] = ()) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    redact = RedactSecrets(secrets)
    handler.addFilter(redact)
    scrub_uncaught_exceptions(redact)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("httpx", "httpx2", "httpcore", "openai", "aiosqlite", "asyncpg"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


def scrub_uncaught_exceptions(redact: RedactSecrets) -> None:
    """Prints an exception that reaches the interpreter (or ends a thread) without secrets."""

    def print_scrubbed(
        kind: type[BaseException], exc: BaseException, tb: TracebackType | None
    ) -> None:
        text = "".join(traceback.format_exception(kind, exc, tb))
        sys.stderr.write(redact.scrub(text))
        sys.stderr.flush()

    def print_thread(args: threading.ExceptHookArgs) -> None:
        if args.exc_type is SystemExit or args.exc_value is None:
            return
        print_scrubbed(args.exc_type, args.exc_value, args.exc_traceback)

    sys.excepthook = print_scrubbed
    threading.excepthook = print_thread
