"""Command line: run the bot (default), chat in the terminal, or check the configuration.

    python -m telegram_bot            run the bot (long polling, or a webhook with WEBHOOK_URL)
    python -m telegram_bot chat       talk to the model from the terminal, same memory
    python -m telegram_bot check      validate the settings and exit
    python -m telegram_bot health     is the running bot taking updates? (exit 0 or 1; the
                                      Docker image's HEALTHCHECK, `health.py`)
    python -m telegram_bot migrate-db --to postgresql://...
                                      copy the SQLite database (DATABASE_PATH) into PostgreSQL

A missing or malformed setting, or a token Telegram rejects, exits with code 2 and one line
naming it; a database that cannot be used, another process on it, or a fatal Telegram error
exits with code 1 and one line; never a traceback, never a secret
(`telegram_adapter/lifecycle.py`).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from .config import (
    Settings,
    database_url_secrets,
    describe_database_url,
    load_settings,
    parse_database_url,
)
from .errors import ConfigError, DatabaseCopyRefused, DatabaseUnavailable

log = logging.getLogger("telegram_bot")


def _settings(require_token: bool, require_model: bool = True) -> Settings:
    try:
        return load_settings(require_token=require_token, require_model=require_model)
    except ConfigError as exc:
        print(f"Configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop where it is installed (Linux, macOS): the same asyncio, with about a sixth less
    CPU per reply (measured: docs/benchmarks.md). Elsewhere, plain asyncio."""
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run_bot(settings: Settings) -> int:
    from .telegram_adapter.lifecycle import run

    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        code = runner.run(run(settings))
    return exit_now_if_stuck(code)


def exit_now_if_stuck(code: int) -> int:
    """Returns `code`, or ends the process with it at once if a thread some library started
    (not a daemon) is still alive: the interpreter would wait for it for ever, and a process
    that has said it stops must stop."""
    stuck = [t for t in threading.enumerate() if not t.daemon and t is not threading.main_thread()]
    if stuck:
        log.warning("Threads still running at exit (%s); ending the process", stuck[0].name)
        logging.shutdown()
        os._exit(code)
    return code


def migrate_db(settings: Settings, to: str | None, source: Path | None) -> int:
    """Copies the SQLite database into PostgreSQL and prints the counts, table by table."""
    from .storage.postgres.from_sqlite import copy_sqlite_to_postgres

    try:
        url = parse_database_url(to or "")
    except ValueError as exc:
        print(f"migrate-db --to: expected {exc}", file=sys.stderr)
        return 2
    path = source or settings.database_path
    print(f"Copying {path} into PostgreSQL at {describe_database_url(url)}")
    try:
        report = copy_sqlite_to_postgres(path, url)
    except (DatabaseCopyRefused, DatabaseUnavailable) as exc:
        print(f"Cannot copy: {exc}", file=sys.stderr)
        return 1
    print("\n".join(report.lines()))
    return 0 if report.matches else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="telegram-bot", description=__doc__.splitlines()[0])
    commands = ("run", "chat", "check", "health", "migrate-db")
    parser.add_argument("command", nargs="?", default="run", choices=commands)
    parser.add_argument("--to", metavar="POSTGRESQL_URL", help="migrate-db: the target database")
    parser.add_argument(
        "--from", dest="source", type=Path, metavar="SQLITE_FILE", help="migrate-db: the source"
    )
    args = parser.parse_args(argv)
    if args.command == "health":  # before the settings: a bad one is exit 1 here, not 2
        from .health import main as health

        return health()
    migrating = args.command == "migrate-db"
    settings = _settings(
        require_token=args.command not in ("chat", "migrate-db"), require_model=not migrating
    )
    from .logs import setup_logging

    secrets = [settings.telegram_bot_token, settings.openai_api_key]
    for url in (settings.database_url, settings.database_listen_url, args.to or ""):
        secrets += database_url_secrets(url)
    setup_logging(settings.log_level, secrets)
    if migrating:
        return migrate_db(settings, args.to, args.source)
    if args.command == "check":
        from .engine.personas import load_presets

        try:
            load_presets(settings.personas_file, max_chars=settings.max_persona_chars)
        except ConfigError as exc:
            print(f"Configuration error: {exc}", file=sys.stderr)
            return 2
        print(f"Settings OK: model {settings.openai_model} at {settings.openai_base_url}")
        return 0
    if args.command == "chat":
        from .console import run_console

        logging.getLogger().setLevel(max(logging.WARNING, logging.getLogger().level))
        return asyncio.run(run_console(settings))
    return run_bot(settings)


if __name__ == "__main__":
    sys.exit(main())
