"""Persona presets: named system prompts read from a TOML file.

The bot ships `personas.toml` next to this module; a deployer points `PERSONAS_FILE` at their
own file, which then replaces the shipped list (so a removed preset really is gone). The file is
read once at start-up with the standard library's `tomllib`; a malformed file stops the bot
with a one-line `ConfigError`, like any other bad setting. A chat's persona itself is stored as
text (store.set_persona), so editing or removing a preset never changes a chat that used it.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError

SHIPPED_FILE = Path(__file__).with_name("personas.toml")
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")


@dataclass(frozen=True, slots=True)
class Preset:
    name: str
    description: str
    prompt: str


def load_presets(path: Path | None = None, *, max_chars: int = 100_000) -> dict[str, Preset]:
    """Reads presets from `path` (default: the shipped file); raises ConfigError on any flaw."""
    path = path or SHIPPED_FILE
    where = f"PERSONAS_FILE ({path})"
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read it ({exc.strerror or exc})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{where}: not valid TOML ({exc})") from None
    presets: dict[str, Preset] = {}
    for name, table in data.items():
        key = name.lower()
        if not _NAME.fullmatch(key):
            raise ConfigError(
                f"{where}: preset name {name!r} must be 1-32 letters, digits, '-' or '_'"
            )
        if not isinstance(table, dict) or not isinstance(table.get("prompt"), str):
            raise ConfigError(f'{where}: preset {name!r} needs a prompt = "..." string')
        prompt = table["prompt"].strip()
        if not prompt or len(prompt) > max_chars:
            raise ConfigError(
                f"{where}: the prompt of preset {name!r} must have 1 to {max_chars} characters"
            )
        description = str(table.get("description") or "").strip()
        presets[key] = Preset(key, description, prompt)
    return presets


def preset_named(presets: dict[str, Preset], prompt: str) -> Preset | None:
    """The preset whose prompt this is, to show a chat's persona by name."""
    return next((p for p in presets.values() if p.prompt == prompt.strip()), None)
