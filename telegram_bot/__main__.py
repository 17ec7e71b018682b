"""Command line: run the bot (default), chat in the terminal, or check the configuration.

    python -m telegram_bot            run the bot with long polling
    python -m telegram_bot chat       talk to the model from the terminal, same memory
    python -m telegram_bot check      validate the settings and exit
    python -m telegram_bot migrate-db --to postgresql://...
                                      copy the SQLite database (DATABASE_PATH) into PostgreSQL

A missing or malformed setting exits with code 2 and one line naming it; never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
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


def use_uvloop() -> bool:
    """Runs the bot on uvloop where it is installed (Linux, macOS): the same asyncio, with
    about a sixth less CPU per reply (measured: docs/benchmarks.md). Elsewhere, plain asyncio."""
    try:
        import uvloop
    except ImportError:
        return False
    asyncio.set_event_loop(uvloop.new_event_loop())
    return True


def run_bot(settings: Settings) -> int:
    from telegram import Update

    from .telegram_adapter.app import build_application, stop_gracefully_on_signals

    if use_uvloop():
        log.debug("Event loop: uvloop")
    try:
        application = build_application(settings)
    except ConfigError as exc:  # e.g. a broken PERSONAS_FILE
        print(f"Configuration error: {exc}", file=sys.stderr)
        return 2
    stop_gracefully_on_signals(application)
    try:
        application.run_polling(
            allowed_updates=Update.ALL_TYPES, drop_pending_updates=False, stop_signals=None
        )
    except DatabaseUnavailable as exc:  # at start-up: a wrong DATABASE_URL, a server down
        print(f"Database error: {exc}", file=sys.stderr)
        return 1
    return 0


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
    parser.add_argument(
        "command", nargs="?", default="run", choices=("run", "chat", "check", "migrate-db")
    )
    parser.add_argument("--to", metavar="POSTGRESQL_URL", help="migrate-db: the target database")
    parser.add_argument(
        "--from", dest="source", type=Path, metavar="SQLITE_FILE", help="migrate-db: the source"
    )
    args = parser.parse_args(argv)
    migrating = args.command == "migrate-db"
    settings = _settings(
        require_token=args.command not in ("chat", "migrate-db"), require_model=not migrating
    )
    from .logs import setup_logging

    secrets = [settings.telegram_bot_token, settings.openai_api_key]
    for url in (settings.database_url, args.to or ""):
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
