"""Synthetic prosparse models for speed measurements.

Writes, streaming with gguf-py (one tensor in memory at a time):
  OUT/prosparse-<shape>.gguf   `prosparse`, FATReLU, ffn_down_t, a low-rank
                               predictor, Q4_0 weights;
  OUT/llama-<shape>.gguf       its --llama-compat twin: a plain `llama` file of
                               the same shapes and types (ffn_down, no
                               predictor) that llama.cpp runs at dense cost.
--type q4_k_m writes prosparse-<shape>-q4_k_m.gguf and llama-<shape>-q4_k_m.gguf
instead: each matrix in the type llama.cpp's Q4_K_M mix gives it for these shapes
(convert/mix.py's rules: Q4_K, Q6_K for output and some layers' attn_v / ffn_down,
Q5_0 / Q8_0 for rows not a multiple of 256), the random ones written directly as
random well-formed blocks (no float weights are quantized but the shared gate);
the predictor keeps --pred-type, as the converter does.
The weights are random (a speed model; its tokens mean nothing), built so the
sparse structure is realistic:
  - every matrix is random zero-mean blocks (synth_gguf.random_blocks) whose
    outputs have unit spread, so the residual stream stays tame through the layers;
  - the gate is W_g = P_out P_in (quantized to the gate's type), so the gate outputs of a
    token are ~N(0, s_i^2) across neurons; the FATReLU threshold t is set so
    that a share --active (default 11%) of neurons fire per token;
  - the predictor is (P_in, P_out) themselves (input: the normed FFN input),
    its logit cut t - margin chosen on sampled inputs so that its recall is
    --recall (default 0.99): it keeps the truly active neurons plus some;
  - --hot-skew S gives neuron i a spread s_i = exp(S z_i) (hot and cold
    neurons, as in real ReLU LLMs); --hot-first stores them hottest first
    (prosparse.ffn.reordered), for measuring locality.
Layers share one gate/predictor (rows rolled per layer); other matrices are
fresh random bytes per layer.

    python scripts/synth_sparse_model.py --shape 7b --out /work/cache/synth
    python scripts/synth_sparse_model.py --shape 1b --type q4_k_m --out /work/cache/synth

--kv-bytes N_CTX writes nothing: it prints the session KV allocation at
n_ctx N_CTX per cache type for the shape (the formula `inspect` states and
the engine allocates by), e.g. for the 7B shape without building its file.

--format powerinfer writes the same shapes as PowerInfer's own files instead
(magic PWRI, ReLU, fc1/fc2 predictor; scripts/synth_powerinfer.py).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import gguf
import numpy as np
from gguf import GGMLQuantizationType as Q

sys.path.insert(0, str(Path(__file__).resolve().parent))
from synth_gguf import deq, quant, random_blocks, write_files  # noqa: E402

from prosparse_cpu.convert.mix import MIXES, mix_type  # noqa: E402

SHAPES = {  # n_embd, n_ff, n_layer, n_head, n_head_kv, rank
    "7b": (4096, 11008, 32, 32, 32, 1024),
    "1b": (2048, 5632, 22, 32, 4, 512),
    "tiny": (256, 704, 4, 8, 4, 64),
}
N_VOCAB = 32000
TYPES = ("q4_0", "q4_k_m")   # q4_0: every matrix Q4_0; the other names: convert/mix.py's mixes


def vocab(n_vocab: int = N_VOCAB) -> tuple[list[str], list[int]]:
    """GPT-2 byte-level tokens (as tests/support/vocab.py's byte_vocab), padded with filler tokens."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    extra, toks = 0, []
    for b in range(256):
        if b in keep:
            toks.append(chr(b))
        else:
            toks.append(chr(256 + extra))
            extra += 1
    toks += ["<|endoftext|>"] + [f"<f{i}>" for i in range(n_vocab - 257)]
    types = [int(gguf.TokenType.NORMAL)] * n_vocab
    types[256] = int(gguf.TokenType.CONTROL)
    return toks, types


def build_gate(rng, n_embd, n_ff, rank, skew, pred_type, active, want_recall, gate_type=Q.Q4_0):
    """Gate (gate_type bytes), predictor bytes, FATReLU t, predictor cut, stats."""
    p_in = rng.standard_normal((rank, n_embd), dtype=np.float32) / np.sqrt(n_embd)
    scale = np.exp(skew * rng.standard_normal(n_ff)).astype(np.float32)
    p_out = rng.standard_normal((n_ff, rank), dtype=np.float32) / np.sqrt(rank) * scale[:, None]
    gate_q = quant(p_out @ p_in, gate_type)
    pin_q, pout_q = quant(p_in, pred_type), quant(p_out, pred_type)
    # calibrate on random unit-rms inputs (what the normed FFN input looks like)
    x = rng.standard_normal((64, n_embd), dtype=np.float32)
    x *= np.sqrt(n_embd) / np.linalg.norm(x, axis=1, keepdims=True)
    g = x @ deq(gate_q, gate_type).reshape(n_ff, n_embd).T
    logit = (x @ deq(pin_q, pred_type).T) @ deq(pout_q, pred_type).T
    t = float(np.quantile(g, 1.0 - active))
    truly = g >= t
    # the cut: the largest value keeping want_recall of the truly active neurons
    cut = float(np.quantile(logit[truly], 1.0 - want_recall))
    kept = logit > cut
    stats = {"t": t, "cut": cut, "active": truly.mean(), "kept": kept.mean(),
             "recall": (kept & truly).sum() / truly.sum(), "freq": truly.mean(axis=0)}
    return gate_q, pin_q, pout_q, stats


def write(args) -> None:
    n_embd, n_ff, n_layer, n_head, n_head_kv, rank = SHAPES[args.shape]
    if args.rank:
        rank = args.rank
    pred_type = Q[args.pred_type.upper()]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    n_vocab = args.vocab or N_VOCAB
    kv_dim = n_embd // n_head * n_head_kv

    def wtype(name: str, n_cols: int) -> Q:
        """The matrix's type: Q4_0, or what llama.cpp's mix gives it in a file of these shapes."""
        if args.type == "q4_0":
            return Q.Q4_0
        return mix_type(args.type, name, n_cols, n_layer=n_layer, n_head=n_head, n_head_kv=n_head_kv,
                        tied=False)[0]

    rng = np.random.default_rng(args.seed)
    gate_type = wtype("blk.0.ffn_gate.weight", n_embd)   # the same in every layer (bulk type)
    gate_q, pin_q, pout_q, st = build_gate(rng, n_embd, n_ff, rank, args.hot_skew, pred_type,
                                           args.active, args.recall, gate_type)
    print(f"gate: FATReLU t={st['t']:.4f}, active {st['active']:.3f}; predictor cut {st['cut']:.4f}: "
          f"keeps {st['kept']:.3f}, recall {st['recall']:.4f} (on sampled inputs)")
    if args.hot_first:  # hottest neurons first, consistently for gate, predictor rows (and all of up/down are random)
        order = np.argsort(-st["freq"], kind="stable")
        gate_q, pout_q = gate_q[order], pout_q[order]
    suffix = "" if args.type == "q4_0" else f"-{args.type}"
    tag = args.shape + (f"-skew{args.hot_skew:g}" if args.hot_skew else "") + ("-hot" if args.hot_first else "")
    paths = {"prosparse": out / f"prosparse-{tag}{suffix}.gguf"}
    if not args.no_twin:
        paths["llama"] = out / f"llama-{args.shape}{suffix}.gguf"
    writers = {}
    toks, types = vocab(n_vocab)
    for arch, path in paths.items():
        w = gguf.GGUFWriter(str(path) + ".tmp", arch)
        w.add_name(f"synthetic {args.shape} ({arch})")
        w.add_context_length(4096)
        w.add_embedding_length(n_embd)
        w.add_block_count(n_layer)
        w.add_feed_forward_length(n_ff)
        w.add_head_count(n_head)
        w.add_head_count_kv(n_head_kv)
        w.add_rope_freq_base(10000.0)
        w.add_rope_dimension_count(n_embd // n_head)
        w.add_layer_norm_rms_eps(1e-5)
        w.add_vocab_size(n_vocab)
        w.add_file_type(gguf.LlamaFileType.MOSTLY_Q4_0 if args.type == "q4_0" else MIXES[args.type][1])
        w.add_quantization_version(gguf.GGML_QUANT_VERSION)
        if arch == "prosparse":
            w.add_string("prosparse.ffn.activation", "fatrelu")
            w.add_float32("prosparse.ffn.activation_threshold", st["t"])
            w.add_bool("prosparse.ffn.reordered", bool(args.hot_first))
            w.add_float32("prosparse.predictor.threshold", st["cut"])
            w.add_string("prosparse.predictor.input", "ffn_norm")
            w.add_string("prosparse.predictor.hidden_act", "none")
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre("default")
        w.add_token_list(toks)
        w.add_token_types(types)
        w.add_token_merges(["Ġ t"])
        w.add_bos_token_id(256)
        w.add_eos_token_id(256)
        w.add_add_bos_token(False)
        writers[arch] = w

    # the tensor list: (name, rows, cols, type, which files, producer)
    ones = np.ones(n_embd, np.float32)
    roll = lambda a, il: np.roll(a, il * 337, axis=0)  # noqa: E731
    both, sp, ll = ("prosparse", "llama"), ("prosparse",), ("llama",)

    def rand(name, rows, cols, files):
        """A random matrix of its type: (name, rows, cols, type, files, producer)."""
        qt = wtype(name, cols)
        return name, rows, cols, qt, files, lambda: random_blocks(rng, qt, rows, cols)

    plan = [rand("token_embd.weight", n_vocab, n_embd, both)]
    for il in range(n_layer):
        b = f"blk.{il}."
        plan += [
            (b + "attn_norm.weight", 1, n_embd, Q.F32, both, lambda: ones),
            rand(b + "attn_q.weight", n_embd, n_embd, both),
            rand(b + "attn_k.weight", kv_dim, n_embd, both),
            rand(b + "attn_v.weight", kv_dim, n_embd, both),
            rand(b + "attn_output.weight", n_embd, n_embd, both),
            (b + "ffn_norm.weight", 1, n_embd, Q.F32, both, lambda: ones),
            (b + "ffn_gate.weight", n_ff, n_embd, gate_type, both, lambda il=il: roll(gate_q, il)),
            rand(b + "ffn_up.weight", n_ff, n_embd, both),
            rand(b + "ffn_down_t.weight", n_ff, n_embd, sp),
            rand(b + "ffn_down.weight", n_embd, n_ff, ll),
            (b + "ffn_pred_in.weight", rank, n_embd, pred_type, sp, lambda: pin_q),
            (b + "ffn_pred_out.weight", n_ff, rank, pred_type, sp, lambda il=il: roll(pout_q, il)),
        ]
    plan += [("output_norm.weight", 1, n_embd, Q.F32, both, lambda: ones),
             rand("output.weight", n_vocab, n_embd, both)]
    if args.type != "q4_0":
        for k, path in paths.items():
            mix = {}
            for p in plan:
                if k in p[4] and p[3] != Q.F32:
                    mix[p[3].name] = mix.get(p[3].name, 0) + 1
            print(f"{path.name}: " + ", ".join(f"{v} {t}" for t, v in sorted(mix.items())) + " matrices")
    write_files(writers, paths, plan, progress=True)


def print_kv_bytes(shape: str, n_ctx: int) -> None:
    from prosparse_cpu._lib import CACHE_TYPES
    from prosparse_cpu.model import kv_bytes_per_token

    n_embd, _, n_layer, n_head, n_head_kv, _ = SHAPES[shape]
    hd = n_embd // n_head
    print(f"{shape}: {n_layer} layers x {n_head_kv} kv heads x head_dim {hd}; session KV allocation at n_ctx {n_ctx}:")
    for t in CACHE_TYPES:
        if t != "q8_0" or hd % 32 == 0:
            b = kv_bytes_per_token(n_layer, n_head_kv, hd, t) * n_ctx
            print(f"  {t:5s} {b} bytes ({b / 2**20:.1f} MiB)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shape", choices=SHAPES, default="7b")
    ap.add_argument("--out", default="/work/cache/synth")
    ap.add_argument("--active", type=float, default=0.11, help="share of neurons active per token")
    ap.add_argument("--recall", type=float, default=0.99, help="predictor recall the cut aims for")
    ap.add_argument("--rank", type=int, default=0, help="predictor rank (default by shape)")
    ap.add_argument("--pred-type", default="q4_0", choices=["q4_0", "q8_0", "f16"])
    ap.add_argument("--hot-skew", type=float, default=0.0)
    ap.add_argument("--hot-first", action="store_true")
    ap.add_argument("--no-twin", action="store_true", help="skip the llama twin")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--format", choices=["prosparse", "powerinfer"], default="prosparse",
                    help="powerinfer: PowerInfer's PWRI layout (ReLU, fc1/fc2 predictor, Q4_0)")
    ap.add_argument("--type", choices=TYPES, default="q4_0",
                    help="weight types: q4_0, or llama.cpp's Q4_K_M mix (--format prosparse)")
    ap.add_argument("--vocab", type=int, default=0, help="vocabulary size (default 32000; at least 257)")
    ap.add_argument("--output-type", choices=["q4_0", "q6_k"], default="q4_0",
                    help="--format powerinfer: output.weight type (q6_k: PowerInfer's default Q4_0 mix)")
    ap.add_argument("--kv-bytes", type=int, default=0, metavar="N_CTX",
                    help="print the shape's session KV allocation at n_ctx N_CTX per cache type; write nothing")
    args = ap.parse_args()
    if args.kv_bytes:
        print_kv_bytes(args.shape, args.kv_bytes)
        return
    if args.vocab and args.vocab < 257:
        ap.error("--vocab must be at least 257 (the byte tokens and <|endoftext|>)")
    if args.type != "q4_0" and args.format != "prosparse":
        ap.error("--type: only --format prosparse writes K-quant mixes")
    if args.format == "powerinfer":
        from synth_powerinfer import write as write_powerinfer
        write_powerinfer(args, SHAPES)
    else:
        write(args)


if __name__ == "__main__":
    main()
