# A small image: slim Python, no compiler, non-root, the database on a volume, and the token
# encodings baked in so the bot never needs the network for them.
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DATABASE_PATH=/data/bot.sqlite3 \
    TIKTOKEN_CACHE_DIR=/opt/tiktoken \
    MALLOC_ARENA_MAX=2

WORKDIR /app
COPY pyproject.toml README.md ./
COPY telegram_bot ./telegram_bot
RUN pip install . \
    && python -c "from pathlib import Path; from telegram_bot import tokens; tokens.set_cache_dir(Path('/opt/tiktoken')); tokens.count_text('ok')" \
    && chmod -R a+rX /opt/tiktoken \
    && useradd --system --uid 10001 --home-dir /app bot \
    && mkdir -p /data && chown bot /data && chmod 700 /data

USER bot
VOLUME ["/data"]
CMD ["telegram-bot"]
