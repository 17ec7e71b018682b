"""A tiny LLaVA-style multimodal projector (`--mmproj`) for the tiny text model, generated offline.

llama.cpp's `llama-server` reads images only with a projector file next to the model. No real
one can be downloaded here, and the tests only need the server to *take* an image (decode the
`data:` URL, run the vision encoder, put the image's tokens in the prompt), not to understand
it. So, like `tinymodel.py`, this writes its own: a CLIP-style vision tower with projector type
`mlp` (LLaVA 1.5's: `mm.0` → GELU → `mm.2`), seeded random F32 weights, tiny dimensions (a few
hundred KB).

The keys and tensors are the ones llama.cpp's loader (`tools/mtmd/clip.cpp` and `clip-impl.h`
of the llama.cpp that llama-cpp-python 0.3.36 vendors) reads for `mlp`:

* `clip.has_vision_encoder`, `clip.projector_type = "mlp"`, `clip.use_gelu`;
* `clip.vision.{embedding_length, feed_forward_length, block_count, projection_dim,
  attention.head_count, attention.layer_norm_epsilon, image_size, patch_size, image_mean,
  image_std}` (all required but `use_gelu`; mean and std need three values each);
* `v.patch_embd.weight` (a conv kernel, ggml `[patch, patch, 3, n_embd]`) and its bias,
  `v.position_embd.weight` (one row per patch: no class embedding), per block
  `v.blk.N.{attn_q, attn_k, attn_v, attn_out, ffn_up, ffn_down, ln1, ln2}` with biases,
  `v.post_ln`, then `mm.0` (vision width → text width) and `mm.2` (text width → text width).
  The server checks that `mm.2`'s output width equals the text model's `n_embd`.

With no `image_grid_pinpoints`, llama.cpp resizes every image to one `image_size` square, so an
image costs exactly `(image_size / patch_size)²` prompt tokens whatever its size:
`TinyProjectorSpec.image_tokens`, 576 with LLaVA 1.5's 336 px and 14 px patches, kept here so
the tests see the count a real LLaVA 1.5 projector gives. LLaVA runs the tower up to its
next-to-last block, so the one block that computes needs `block_count = 2`. Files are cached
by a hash of the spec; bump `GENERATOR_VERSION` when this code changes what it writes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

from tests.real.tinymodel import TinyModelSpec

GENERATOR_VERSION = 1


@dataclasses.dataclass(frozen=True)
class TinyProjectorSpec:
    """Everything that decides the bytes of the generated projector (its cache key)."""

    text_n_embd: int = TinyModelSpec().n_embd
    # LLaVA 1.5's geometry (CLIP ViT-L/14 at 336 px), so an image costs here what it costs
    # with that model family: 24 × 24 = 576 tokens, whatever the photo's size.
    image_size: int = 336
    patch_size: int = 14
    n_embd: int = 32
    n_ff: int = 64
    n_head: int = 4
    n_layer: int = 2
    seed: int = 20240602

    @property
    def image_tokens(self) -> int:
        """Prompt tokens every image costs with this projector (one per patch)."""
        return (self.image_size // self.patch_size) ** 2

    def key(self) -> str:
        payload = json.dumps(
            {"generator": GENERATOR_VERSION, **dataclasses.asdict(self)}, sort_keys=True
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:12]


def write_projector(spec: TinyProjectorSpec, path: Path) -> None:
    """Writes the mmproj GGUF for `spec` to `path` (atomically: a temp file, then a rename)."""
    import gguf
    import numpy as np

    rng = np.random.default_rng(spec.seed)

    def weight(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    def zeros(n: int) -> np.ndarray:
        return np.zeros(n, dtype=np.float32)

    def ones(n: int) -> np.ndarray:
        return np.ones(n, dtype=np.float32)

    width, text = spec.n_embd, spec.text_n_embd
    n_patches = spec.image_tokens
    partial = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    writer = gguf.GGUFWriter(str(partial), arch="clip")
    writer.add_name(f"tlb-tiny-mmproj-{spec.key()}")
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_bool("clip.has_vision_encoder", True)
    writer.add_string("clip.projector_type", "mlp")
    writer.add_bool("clip.use_gelu", True)
    writer.add_uint32("clip.vision.embedding_length", width)
    writer.add_uint32("clip.vision.feed_forward_length", spec.n_ff)
    writer.add_uint32("clip.vision.block_count", spec.n_layer)
    writer.add_uint32("clip.vision.projection_dim", text)
    writer.add_uint32("clip.vision.attention.head_count", spec.n_head)
    writer.add_float32("clip.vision.attention.layer_norm_epsilon", 1e-5)
    writer.add_uint32("clip.vision.image_size", spec.image_size)
    writer.add_uint32("clip.vision.patch_size", spec.patch_size)
    writer.add_array("clip.vision.image_mean", [0.5, 0.5, 0.5])
    writer.add_array("clip.vision.image_std", [0.5, 0.5, 0.5])

    # numpy shapes are ggml's reversed: (rows, columns) is ggml [columns, rows].
    patch = spec.patch_size
    writer.add_tensor("v.patch_embd.weight", weight(width, 3, patch, patch))
    writer.add_tensor("v.patch_embd.bias", zeros(width))
    writer.add_tensor("v.position_embd.weight", weight(n_patches, width))
    for i in range(spec.n_layer):
        block = f"v.blk.{i}"
        for name in ("attn_q", "attn_k", "attn_v", "attn_out"):
            writer.add_tensor(f"{block}.{name}.weight", weight(width, width))
            writer.add_tensor(f"{block}.{name}.bias", zeros(width))
        for norm in ("ln1", "ln2"):
            writer.add_tensor(f"{block}.{norm}.weight", ones(width))
            writer.add_tensor(f"{block}.{norm}.bias", zeros(width))
        writer.add_tensor(f"{block}.ffn_up.weight", weight(spec.n_ff, width))
        writer.add_tensor(f"{block}.ffn_up.bias", zeros(spec.n_ff))
        writer.add_tensor(f"{block}.ffn_down.weight", weight(width, spec.n_ff))
        writer.add_tensor(f"{block}.ffn_down.bias", zeros(width))
    writer.add_tensor("v.post_ln.weight", ones(width))
    writer.add_tensor("v.post_ln.bias", zeros(width))
    writer.add_tensor("mm.0.weight", weight(text, width))
    writer.add_tensor("mm.0.bias", zeros(text))
    writer.add_tensor("mm.2.weight", weight(text, text))
    writer.add_tensor("mm.2.bias", zeros(text))

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    partial.replace(path)


def ensure_projector(models_dir: Path, spec: TinyProjectorSpec | None = None) -> Path:
    """The cached mmproj GGUF for `spec`, generated on first use. Callers hold the cache lock."""
    spec = spec or TinyProjectorSpec()
    path = models_dir / f"tiny-mmproj-{spec.key()}.gguf"
    if not path.exists():
        models_dir.mkdir(parents=True, exist_ok=True)
        write_projector(spec, path)
    return path
