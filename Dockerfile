# A small image: slim Python, no compiler, non-root, the database on a volume, and the token
# encodings baked in so the bot never needs the network for them.
#
# BASE_IMAGE: another registry's copy of the same image (a mirror, a pinned digest), e.g.
#   docker build --build-arg BASE_IMAGE=mirror.example/library/python:3.12-slim .
ARG BASE_IMAGE=python:3.12-slim
FROM ${BASE_IMAGE}

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
# The postgres extra (asyncpg, a wheel: no compiler) so DATABASE_URL works in the same image.
RUN pip install '.[postgres]' \
    && rm -rf build telegram_llm_bot.egg-info \
    && python -c "from pathlib import Path; from telegram_bot import tokens; tokens.set_cache_dir(Path('/opt/tiktoken')); tokens.count_text('ok')" \
    && chmod -R a+rX /opt/tiktoken \
    && useradd --system --uid 10001 --home-dir /app bot \
    && mkdir -p /data && chown bot /data && chmod 700 /data

USER bot
VOLUME ["/data"]
# Webhook mode (WEBHOOK_URL set) listens here; long polling opens no port.
EXPOSE 8080
# True in both modes: webhook mode asks the bot's /healthz (200 only while it takes updates);
# long polling reads the heartbeat the poller keeps beside the database (`telegram_bot/health.py`).
# Python is already here, so no curl: one short process every 30 s.
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD ["telegram-bot", "health"]
CMD ["telegram-bot"]
