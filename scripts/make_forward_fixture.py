"""Write the tiny models and reference logits of native/tests/test_forward.c.

Each model is a random Hugging Face LlamaForCausalLM (tests/support) written
as a GGUF file; its reference logits come from transformers on the same
weights rounded through the file's type (float32 arithmetic in torch, an
engine independent of ours). test_forward.c runs the engine on every SIMD
level the CPU has (make test-neon: the NEON levels under qemu) against them.

    python scripts/make_forward_fixture.py   # rewrites native/tests/data/fwd_*
"""
from __future__ import annotations

import struct
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from support.gguf_files import dequantized_copy, write_gguf  # noqa: E402
from support.hf_models import make_hf_llama  # noqa: E402
from support.torch_reference import reference_logits  # noqa: E402
from support.vocab import N_VOCAB  # noqa: E402

# name: (weight type, arch, activation)
MODELS = {
    "fwd_f32": ("f32", "llama", "silu"),
    "fwd_q8_0": ("q8_0", "llama", "silu"),
    "fwd_q4_0": ("q4_0", "llama", "silu"),
    "fwd_q4_1": ("q4_1", "llama", "silu"),
    # ffn_down_t, the accum_rows/axpy path (in F32: quantized, its blocks run
    # along the other axis than in the reference's down matrix)
    "fwd_f32_relu": ("f32", "prosparse", "relu"),
}
N_TOKENS = 12


def main() -> None:
    out = ROOT / "native" / "tests" / "data"
    out.mkdir(parents=True, exist_ok=True)
    tokens = [int(t) for t in np.random.default_rng(7).integers(0, N_VOCAB, N_TOKENS)]
    for i, (name, (wtype, arch, act)) in enumerate(MODELS.items()):
        model = make_hf_llama(seed=20 + i, n_embd=64, n_ff=96, n_layer=2, n_head=4, n_head_kv=2)
        write_gguf(model, out / f"{name}.gguf", wtype=wtype, arch=arch, activation=act, n_ctx=64)
        ref = reference_logits(dequantized_copy(model, wtype), tokens, activation=act).astype(np.float32)
        with open(out / f"{name}.logits", "wb") as f:  # n_tok, n_vocab, tokens, logits (little-endian)
            f.write(struct.pack(f"<2i{N_TOKENS}i", N_TOKENS, ref.shape[1], *tokens))
            f.write(ref.astype("<f4").tobytes())
        print(name, (out / f"{name}.gguf").stat().st_size, "bytes")


if __name__ == "__main__":
    main()
