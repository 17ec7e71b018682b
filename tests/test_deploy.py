"""compose.yaml, deploy/Caddyfile and the Dockerfile hold together: what `docker compose up`
would start, read with PyYAML, and the file checked by a real Compose where one is installed
(`docker compose` v2, else the Python `docker-compose` 1.29 Debian ships). The images themselves
run in tests/real/test_docker_image.py, the Caddyfile in tests/real/test_caddy_replicas.py."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from telegram_bot.config import HEALTH_PATH

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {"BOT_DOMAIN": "bot.example.com", "POSTGRES_PASSWORD": "0123abcd"}


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
    return loaded


def default(value: str, variable: str) -> str:
    """The default `${VARIABLE:-default}` gives in `value`."""
    found = re.search(r"\$\{" + variable + r":-([^}]*)\}", value)
    assert found, f"{variable} has a default in {value!r}"
    return found.group(1)


def bots(services: dict[str, Any]) -> dict[str, Any]:
    return {name: s for name, s in services.items() if s.get("image", "").startswith("telegram")}


def test_the_default_profile_is_postgresql_two_webhook_replicas_and_caddy() -> None:
    services = compose()["services"]
    started = {name for name, s in services.items() if not s.get("profiles")}
    assert started == {"postgres", "bot1", "bot2", "caddy"}
    assert services["postgres"]["healthcheck"]["test"][:2] == ["CMD", "pg_isready"]
    assert services["postgres"]["volumes"] == ["postgres:/var/lib/postgresql/data"]

    replicas = bots(services)
    assert sorted(replicas) == ["bot1", "bot2"]
    for bot in replicas.values():
        env = bot["environment"]
        assert env["DATABASE_URL"].startswith("postgresql://bot:${POSTGRES_PASSWORD")
        assert env["DATABASE_URL"].endswith("@postgres:5432/bot")
        assert env["WEBHOOK_URL"].startswith("https://${BOT_DOMAIN")
        assert bot["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert bot["env_file"] == ".env", "secrets come from .env, never from compose.yaml"
        assert bot["build"]["args"]["BASE_IMAGE"] == "${BASE_IMAGE:-python:3.12-slim}"


def test_caddy_serves_the_webhook_path_of_every_replica_and_checks_their_health() -> None:
    services = compose()["services"]
    caddy = services["caddy"]
    upstreams = default(caddy["environment"]["BOT_UPSTREAMS"], "BOT_UPSTREAMS").split()
    for name, bot in bots(services).items():
        assert f"{name}:{bot['environment']['WEBHOOK_PORT']}" in upstreams, f"{name} unserved"
    path = default(caddy["environment"]["WEBHOOK_PATH"], "WEBHOOK_PATH")
    for bot in bots(services).values():
        assert bot["environment"]["WEBHOOK_URL"].endswith(f"${{WEBHOOK_PATH:-{path}}}")
    assert {"443:443", "80:80"} <= set(caddy["ports"])

    [mount] = [v for v in caddy["volumes"] if v.endswith(":/etc/caddy/Caddyfile:ro")]
    caddyfile = (ROOT / mount.split(":")[0]).read_text()
    assert f"health_uri {HEALTH_PATH}" in caddyfile
    assert "reverse_proxy {$BOT_UPSTREAMS}" in caddyfile
    assert "handle {$WEBHOOK_PATH}" in caddyfile


def test_the_local_profile_runs_ollama_with_a_set_context_and_pulls_the_model() -> None:
    services = compose()["services"]
    local = {name for name, s in services.items() if "local" in s.get("profiles", [])}
    assert local == {"ollama", "ollama-pull"}
    ollama = services["ollama"]
    assert int(default(ollama["environment"]["OLLAMA_CONTEXT_LENGTH"], "OLLAMA_CONTEXT_LENGTH"))
    assert services["ollama-pull"]["entrypoint"][:2] == ["ollama", "pull"]
    assert services["ollama-pull"]["depends_on"]["ollama"]["condition"] == "service_healthy"
    example = (ROOT / ".env.example").read_text()
    assert "#OPENAI_BASE_URL=http://ollama:11434/v1" in example


def test_every_compose_variable_is_in_env_example() -> None:
    text = (ROOT / "compose.yaml").read_text()
    variables = set(re.findall(r"\$\{([A-Z_]+)", text))
    example = (ROOT / ".env.example").read_text()
    missing = sorted(v for v in variables if f"{v}=" not in example)
    assert not missing, f"not in .env.example: {missing}"


def compose_command() -> list[str] | None:
    docker = shutil.which("docker")
    if docker is not None:
        version = subprocess.run([docker, "compose", "version"], capture_output=True, timeout=30)
        if version.returncode == 0:
            return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy is not None else None


@pytest.mark.parametrize("profile", ["default", "local"])
def test_compose_itself_accepts_the_file(tmp_path: Path, profile: str) -> None:
    command = compose_command()
    if command is None:
        pytest.skip("neither `docker compose` nor `docker-compose` is installed")
    shutil.copy(ROOT / "compose.yaml", tmp_path)
    (tmp_path / ".env").write_text("".join(f"{k}={v}\n" for k, v in SETTINGS.items()))
    profiles = ["--profile", "local"] if profile == "local" else []
    listed = subprocess.run(
        [*command, *profiles, "config", "--services"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listed.returncode == 0, listed.stderr
    assert {"postgres", "bot1", "bot2", "caddy"} <= set(listed.stdout.split())

    (tmp_path / ".env").write_text("BOT_DOMAIN=bot.example.com\n")
    refused = subprocess.run(
        [*command, "config"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert refused.returncode != 0 and "set POSTGRES_PASSWORD in .env" in refused.stderr
