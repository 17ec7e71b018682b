"""Logging set-up: one format, quiet HTTP loggers, and secrets scrubbed from every record.

Bot API URLs contain the bot token, so httpx's request lines are kept at WARNING (as
python-telegram-bot's examples do). As a second line of defence a filter on the handler replaces
the token, the API key and the database password wherever they would appear in a formatted
record, tracebacks included, and the password of any URL written `scheme://user:password@host`.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable

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
        scrubbed = self._scrub(message)
        if scrubbed != message:
            record.msg, record.args = scrubbed, None
        if record.exc_text:
            record.exc_text = self._scrub(record.exc_text)
        return True

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "[redacted]")
        # A function, not a template: a template is compiled on first use, which fails in
        # a record logged while the interpreter shuts down.
        return _URL_PASSWORD.sub(lambda match: f"{match[1]}[redacted]@", text)


def setup_logging(level: str, secrets: Iterable[str] = ()) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactSecrets(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("httpx", "httpx2", "httpcore", "openai", "aiosqlite", "asyncpg"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
