"""Is this bot process taking updates? `telegram-bot health`, the Docker image's HEALTHCHECK.

Webhook mode (WEBHOOK_URL set) asks the process itself: GET /healthz on the local
WEBHOOK_PORT, which says 200 only while updates are taken (503 while starting or draining,
`telegram_adapter/webhook.py`).

Long polling serves no HTTP, so a polling process keeps a heartbeat instead: a file beside the
database, `<DATABASE_PATH>.alive`. `Heartbeat.beat` is called when a getUpdates call comes back
and sets the file's modification time at most once every BEAT_EVERY seconds: one metadata
write, nothing read, cheap even on a Raspberry Pi's SD card. The lifecycle removes the file when
the process starts (a previous run's must not vouch for this one) and when it drains. A
getUpdates call is parked for at most 10 s (python-telegram-bot's timeout), so a process that
polls beats at least every BEAT_EVERY + 12 s; the check says unhealthy when the file is missing
(starting, draining, stopped) or older than STALE_AFTER (Telegram unreachable, or the event loop
stuck). After a kill -9 the file stays: it turns stale within STALE_AFTER.

The check prints one line and exits 0 (healthy) or 1 (unhealthy, also for a setting it cannot
read): Docker reserves exit code 2.
"""

from __future__ import annotations

import logging
import math
import os
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from .config import HEALTH_PATH, Settings, load_settings
from .errors import ConfigError

log = logging.getLogger(__name__)

BEAT_EVERY = 15.0
STALE_AFTER = 60.0
ASK_TIMEOUT = 3.0


def heartbeat_path(settings: Settings) -> Path:
    database = settings.database_path
    return database.with_name(database.name + ".alive")


@dataclass
class Heartbeat:
    """The polling process's sign of life (see the module docstring)."""

    path: Path
    every: float = BEAT_EVERY
    _last: float = field(default=-math.inf, repr=False)
    _stopped: bool = field(default=False, repr=False)
    _failed: bool = field(default=False, repr=False)

    def beat(self) -> None:
        now = time.monotonic()
        if self._stopped or now - self._last < self.every:
            return
        self._last = now
        try:
            try:
                os.utime(self.path)
            except FileNotFoundError:
                self._create()
        except OSError as exc:
            if not self._failed:
                self._failed = True
                log.warning(
                    "Heartbeat: cannot write %s (%s); `telegram-bot health` will say unhealthy",
                    self.path,
                    exc.strerror or exc,
                )

    def _create(self) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        os.close(os.open(self.path, flags, 0o600))

    def clear(self) -> None:
        """Removes the file (a previous run's, at start); the next beat writes it again."""
        self._last = -math.inf
        try:
            self.path.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("Heartbeat: cannot remove %s (%s)", self.path, exc.strerror or exc)

    def stop(self) -> None:
        """No more beats: the process drains, so health says unhealthy from now on."""
        self._stopped = True
        self.clear()


def check(settings: Settings) -> tuple[bool, str]:
    """Whether the bot these settings describe takes updates, and the line that says why."""
    if settings.webhook_url:
        return _ask_webhook(settings)
    return _read_heartbeat(heartbeat_path(settings), time.time())


def _ask_webhook(settings: Settings) -> tuple[bool, str]:
    host = settings.webhook_listen
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    elif ":" in host:
        host = f"[{host}]"
    url = f"http://{host}:{settings.webhook_port}{HEALTH_PATH}"
    # No proxy: HTTP_PROXY in the environment must not send a local check elsewhere.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=ASK_TIMEOUT) as response:
            status, body = response.status, response.read(64)
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read(64)
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return False, f"unhealthy: nothing answers at {url} ({reason}): not running or starting"
    said = body.decode(errors="replace").strip() or "no reason"
    if status == 200:
        return True, f"healthy: {url} says 200 ({said})"
    return False, f"unhealthy: {url} says {status} ({said})"


def _read_heartbeat(path: Path, now: float) -> tuple[bool, str]:
    try:
        age = now - path.stat().st_mtime
    except FileNotFoundError:
        return False, f"unhealthy: no heartbeat at {path}: starting, draining or not running"
    except OSError as exc:
        return False, f"unhealthy: cannot read the heartbeat {path} ({exc.strerror or exc})"
    if age > STALE_AFTER:
        return False, (
            f"unhealthy: the last getUpdates answer was {age:.0f} s ago (more than "
            f"{STALE_AFTER:.0f} s): Telegram unreachable, or the process stuck or gone"
        )
    return True, f"healthy: polling (last getUpdates answer {max(age, 0):.0f} s ago)"


def main() -> int:
    """`telegram-bot health`: prints one line; 0 healthy, 1 unhealthy."""
    try:
        settings = load_settings(require_token=False, require_model=False)
    except ConfigError as exc:
        print(f"unhealthy: configuration error: {exc}")
        return 1
    healthy, line = check(settings)
    print(line)
    return 0 if healthy else 1
