"""Command line: run the bot (default), chat in the terminal, or check the configuration.

    python -m telegram_bot            run the bot with long polling
    python -m telegram_bot chat       talk to the model from the terminal, same memory
    python -m telegram_bot check      validate the settings and exit

A missing or malformed setting exits with code 2 and one line naming it; never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from .config import Settings, load_settings
from .errors import ConfigError

log = logging.getLogger("telegram_bot")


def _settings(require_token: bool) -> Settings:
    try:
        return load_settings(require_token=require_token)
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
    application.run_polling(
        allowed_updates=Update.ALL_TYPES, drop_pending_updates=False, stop_signals=None
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="telegram-bot", description=__doc__.splitlines()[0])
    parser.add_argument("command", nargs="?", default="run", choices=("run", "chat", "check"))
    args = parser.parse_args(argv)
    settings = _settings(require_token=args.command != "chat")
    from .logs import setup_logging

    setup_logging(settings.log_level, (settings.telegram_bot_token, settings.openai_api_key))
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
