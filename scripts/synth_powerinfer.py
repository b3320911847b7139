"""Synthetic sparse ReLU models in PowerInfer's own file layout, for speed tests.

Writes (streaming with gguf-py, one tensor in memory at a time):
  OUT/powerinfer-<shape>.powerinfer.gguf  magic PWRI, arch llama, ReLU, ffn_down_t,
                                          PowerInfer's fc1/fc2 predictor, Q4_0
                                          throughout (PowerInfer's `quantize --pure`
                                          layout; --output-type q6_k: its default
                                          Q4_0 mix, output.weight Q6_K), keys and
                                          tensor order as
                                          PowerInfer's convert.py + quantize write them;
  OUT/powerinfer-<shape>.llama.gguf       its llama twin (ffn_down, no predictor,
                                          same types) that llama.cpp runs at dense cost.
The weights are random (tokens mean nothing); the sparse structure is real:
  - dim 0 of the residual stream is a constant C (the embedding's column 0; row 0
    of attn_output and column 0 of ffn_down_t are zero), and the other outputs
    are small, so the normed FFN input keeps x0 ~ C / rms(x) nearly fixed;
  - gate = P_out P_in + b e0^T: b_i x0 shifts neuron i so a share --active
    (default 11%) of neurons has gate > 0 per token, relu(gate) * up;
  - the predictor is exact up to rounding: fc1 = [P_in; -P_in; e0; 0],
    fc2 = [P_out, -P_out, b, 0], so fc2 relu(fc1 x) = rms(x) * gate on the
    residual x; powerinfer.sparse_threshold (a small negative logit) is set on
    sampled inputs so that the recall is --recall (default 0.99).
Layers share one gate/predictor (rows rolled per layer); other matrices are fresh
random bytes per layer. Run through scripts/synth_sparse_model.py --format powerinfer.
"""
from __future__ import annotations

from pathlib import Path
from statistics import NormalDist

import gguf
import numpy as np
from gguf import GGMLQuantizationType as Q

from synth_gguf import QK, deq, quant, random_q4, write_files

C = 4.0          # the residual's constant channel
OUT_GAIN = 0.1   # spread of the attention and FFN outputs added to the residual
N_VOCAB = 32000

def random_q6k(rng, rows: int, cols: int, gain: float = 1.0) -> np.ndarray:
    """(rows, cols/256*210) uint8: Q6_K blocks (ql[128], qh[64], int8 scales[16], f16 d) with
    random 6-bit values, all sub-block scales 1, products of unit-rms inputs spread `gain`."""
    nb = cols // 256
    out = np.empty((rows, nb, 210), np.uint8)
    out[:, :, :192] = rng.integers(0, 256, size=(rows, nb, 192), dtype=np.uint8)
    out[:, :, 192:208] = 1
    out[:, :, 208:210] = np.frombuffer(np.float16(gain / np.sqrt(341.0 * cols)).tobytes(), np.uint8)
    return out.reshape(rows, nb * 210)


def spm_vocab(n_vocab: int):
    """A SentencePiece-style vocabulary as PowerInfer's convert.py writes it: <unk> <s> </s>,
    the 256 byte pieces, then pieces (only the token ids matter in a speed model)."""
    toks = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    types = [2, 3, 3] + [6] * 256
    toks += ["\u2581"] + [f"\u2581t{i}" for i in range(n_vocab - len(toks) - 1)]
    types += [1] * (n_vocab - len(types))
    scores = [0.0, 0.0, 0.0] + [0.0] * 256 + [-float(i) for i in range(n_vocab - 259)]
    return toks, scores, types


def build_ffn(rng, n_embd, n_ff, rank, active, want_recall):
    """Gate bytes, fc1/fc2 bytes, the predictor's cut, and sampled figures."""
    half = rank // 2
    p_in = rng.standard_normal((half, n_embd), dtype=np.float32) / np.sqrt(n_embd)
    p_in[:, 0] = 0.0
    p_out = rng.standard_normal((n_ff, half), dtype=np.float32) / np.sqrt(half)
    # sampled residuals: x0 = C, the rest ~ N(0, 1); the gate sees them normed
    x = rng.standard_normal((256, n_embd), dtype=np.float32)
    x[:, 0] = C
    xn = x / np.sqrt((x * x).mean(1, keepdims=True))
    lin = xn @ (p_out @ p_in).T
    z = NormalDist().inv_cdf(1.0 - active)
    b = (-z * lin.std(0) / xn[:, 0].mean()).astype(np.float32)
    gate = p_out @ p_in
    gate[:, 0] = b
    gate_q = quant(gate)
    r_pad = 2 * half + QK
    fc1 = np.zeros((r_pad, n_embd), np.float32)
    fc1[:half], fc1[half:2 * half], fc1[2 * half, 0] = p_in, -p_in, 1.0
    fc2 = np.zeros((n_ff, r_pad), np.float32)
    fc2[:, :half], fc2[:, half:2 * half], fc2[:, 2 * half] = p_out, -p_out, b
    fc1_q, fc2_q = quant(fc1), quant(fc2)
    g = xn @ deq(gate_q).T
    logit = np.maximum(x @ deq(fc1_q).T, 0) @ deq(fc2_q).T
    truly = g > 0
    cut = float(np.quantile(logit[truly], 1.0 - want_recall))
    kept = logit >= cut
    stats = {"cut": cut, "active": truly.mean(), "kept": kept.mean(),
             "recall": (kept & truly).sum() / truly.sum(), "rank": r_pad}
    return gate_q, fc1_q, fc2_q, stats


def embedding(rng, n_vocab, n_embd) -> np.ndarray:
    """Q4_0 rows with elements of spread ~1 and element 0 = C."""
    e = random_q4(rng, n_vocab, n_embd, gain=np.sqrt(n_embd)).reshape(n_vocab, n_embd // QK, 18)
    e[:, 0, 0:2] = np.frombuffer(np.float16(C / 7).tobytes(), np.uint8)
    # block 0: element 0 at +7 steps (= C), the other 31 within one step of 0
    e[:, 0, 2:] = rng.choice(np.array([0x77, 0x78, 0x87, 0x88, 0x89, 0x98, 0x99, 0x97, 0x79], np.uint8),
                             size=(n_vocab, 16))
    e[:, 0, 2] = (e[:, 0, 2] & 0xF0) | 0x0F
    return e.reshape(n_vocab, -1)


def zero_row0(a: np.ndarray) -> np.ndarray:
    a = a.reshape(a.shape[0], -1, 18).copy()
    a[0, :, 0:2] = 0   # scale 0: the whole row is 0
    return a.reshape(a.shape[0], -1)


def zero_col0(a: np.ndarray) -> np.ndarray:
    a = a.reshape(a.shape[0], -1, 18).copy()
    a[:, 0, 2] = (a[:, 0, 2] & 0xF0) | 0x08   # element 0 of each row: nibble 8 = 0
    return a.reshape(a.shape[0], -1)


def write(args, shapes) -> None:
    n_embd, n_ff, n_layer, n_head, n_head_kv, rank = shapes[args.shape]
    rank = args.rank or rank
    n_vocab = args.vocab or N_VOCAB
    out_type = Q[args.output_type.upper()]
    if out_type == Q.Q6_K and n_embd % 256:
        raise SystemExit(f"--output-type q6_k needs n_embd a multiple of 256 (shape {args.shape}: {n_embd})")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    gate_q, fc1_q, fc2_q, st = build_ffn(rng, n_embd, n_ff, rank, args.active, args.recall)
    print(f"gate: ReLU, active {st['active']:.3f}; predictor rank {st['rank']}, cut {st['cut']:.4f}: "
          f"keeps {st['kept']:.3f}, recall {st['recall']:.4f} (on sampled inputs)")
    kv_dim = n_embd // n_head * n_head_kv
    paths = {"pwri": out / f"powerinfer-{args.shape}.powerinfer.gguf"}
    if not args.no_twin:
        paths["llama"] = out / f"powerinfer-{args.shape}.llama.gguf"
    toks, scores, types = spm_vocab(n_vocab)
    writers = {}
    for kind, path in paths.items():
        w = gguf.GGUFWriter(str(path) + ".tmp", "llama")
        # PowerInfer's key order (convert.py, then quantize adds quantization_version)
        w.add_name(f"synthetic {args.shape}")
        w.add_context_length(2048)
        w.add_embedding_length(n_embd)
        w.add_block_count(n_layer)
        w.add_feed_forward_length(n_ff)
        w.add_rope_dimension_count(n_embd // n_head)
        w.add_head_count(n_head)
        w.add_head_count_kv(n_head_kv)
        w.add_layer_norm_rms_eps(1e-5)
        w.add_rope_freq_base(10000.0)
        w.add_file_type(gguf.LlamaFileType.MOSTLY_Q4_0)
        if kind == "pwri":
            w.add_float32("powerinfer.sparse_threshold", st["cut"])
        w.add_tokenizer_model("llama")
        w.add_token_list(toks)
        w.add_token_scores(scores)
        w.add_token_types(types)
        w.add_bos_token_id(1)
        w.add_eos_token_id(2)
        w.add_quantization_version(gguf.GGML_QUANT_VERSION)
        writers[kind] = w

    ones = np.ones(n_embd, np.float32)
    q4 = lambda rows, cols, gain=1.0: (lambda: random_q4(rng, rows, cols, gain))  # noqa: E731
    roll = lambda a, il: np.roll(a, il * 337, axis=0)  # noqa: E731
    both, pw, ll = ("pwri", "llama"), ("pwri",), ("llama",)
    # (name, rows, cols, type, files, producer), in PowerInfer's tensor order
    out_w = (lambda: random_q6k(rng, n_vocab, n_embd)) if out_type == Q.Q6_K else q4(n_vocab, n_embd)
    plan = [("output.weight", n_vocab, n_embd, out_type, both, out_w),
            ("token_embd.weight", n_vocab, n_embd, Q.Q4_0, both, lambda: embedding(rng, n_vocab, n_embd))]
    for il in range(n_layer):
        b = f"blk.{il}."
        plan += [
            (b + "attn_norm.weight", 1, n_embd, Q.F32, both, lambda: ones),
            (b + "ffn_down_t.weight", n_ff, n_embd, Q.Q4_0, pw,
             lambda: zero_col0(random_q4(rng, n_ff, n_embd, OUT_GAIN * np.sqrt(n_embd / (args.active * n_ff))))),
            (b + "ffn_down.weight", n_embd, n_ff, Q.Q4_0, ll, lambda: zero_row0(random_q4(rng, n_embd, n_ff))),
            (b + "ffn_gate.weight", n_ff, n_embd, Q.Q4_0, both, lambda il=il: roll(gate_q, il)),
            (b + "ffn_up.weight", n_ff, n_embd, Q.Q4_0, both, q4(n_ff, n_embd)),
            (b + "ffn_norm.weight", 1, n_embd, Q.F32, both, lambda: ones),
            (b + "attn_k.weight", kv_dim, n_embd, Q.Q4_0, both, q4(kv_dim, n_embd)),
            (b + "attn_output.weight", n_embd, n_embd, Q.Q4_0, both,
             lambda: zero_row0(random_q4(rng, n_embd, n_embd, OUT_GAIN))),
            (b + "attn_q.weight", n_embd, n_embd, Q.Q4_0, both, q4(n_embd, n_embd)),
            (b + "attn_v.weight", kv_dim, n_embd, Q.Q4_0, both, q4(kv_dim, n_embd)),
        ]
    plan.append(("output_norm.weight", 1, n_embd, Q.F32, both, lambda: ones))
    for il in range(n_layer):
        plan += [(f"blk.{il}.fc1.weight", st["rank"], n_embd, Q.Q4_0, pw, lambda: fc1_q),
                 (f"blk.{il}.fc2.weight", n_ff, st["rank"], Q.Q4_0, pw, lambda il=il: roll(fc2_q, il))]
    write_files(writers, paths, plan, magic={"pwri": b"PWRI"})   # PowerInfer's magic; the rest is GGUF v3
