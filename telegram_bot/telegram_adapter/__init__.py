"""The Telegram side: everything that knows python-telegram-bot, and nothing the engine needs.

Read it bottom-up: `services` (typed wiring), `updates` and `addressing` (what a handler reads
from an update), `render` and `sender` (what goes back), `sinks`/`replies`/`migration`
(running one reply), `handlers/` (one module per feature), and `app` (builds the Application).
"""
