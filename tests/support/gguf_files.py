"""Tiny GGUF files for the engine, the API, the CLI and the converter tests.

- `write_tiny_llama`: tensors made by hand (all F32) with tiny_vocab(): small
  random weights (shapes, determinism, argmax chains), or a *successor* model
  (one-hot embeddings, zero attention/FFN weights and an output matrix that
  maps token t to a chosen next token, so greedy generation follows a chain the
  test wrote); optionally a `prosparse` file with ffn_down_t, ffn_freq and a
  predictor; tensors left out or misshapen for the bad-file tests.
- `write_gguf`: a Hugging Face LlamaForCausalLM written the way
  convert_hf_to_gguf does (q/k rows permuted for adjacent-pair RoPE) as a
  `llama` file, or as a `prosparse` file with an activation, `ffn_down_t` and
  the MiniCPM scale keys; weights in F32, F16, BF16, Q8_0, Q4_0 or Q4_1
  (gguf.quants). `dequantized_copy` is the model with the file's rounding.
"""
from __future__ import annotations

import copy
from pathlib import Path

import gguf
import numpy as np
from gguf import GGMLQuantizationType as QT

from .vocab import CHATML, SPECIALS, TINY_MERGES, byte_vocab, tiny_vocab

def write_tiny_llama(path, *, n_embd: int = 32, n_ff: int = 64, n_layer: int = 2, n_head: int = 4,
                     n_head_kv: int = 2, seed: int = 0, successor: dict[int, int] | None = None,
                     tied: bool = False, chat_template: str | None = CHATML, drop: tuple = (),
                     shapes: dict | None = None, scale: float = 0.3, activation: str | None = None,
                     predictor_rank: int = 0, qtypes: dict | None = None, dequantize_back: bool = False,
                     heavy_tails: bool = False) -> Path:
    """Write a tiny `llama` GGUF (all F32). drop: tensor names to leave out;
    shapes: tensor name -> numpy shape to use instead of the right one;
    qtypes: tensor name -> GGML type to store it in (gguf-py's quantize, or
    random_kquant blocks for the K-quants), with dequantize_back the same
    values written as F32 (the reference copy of such a mixed file);
    heavy_tails: Student-t (3 degrees of freedom) weights, outliers as in real models.
    activation (relu, fatrelu, ...): a `prosparse` file instead, with ffn_down_t,
    ffn_freq and, with predictor_rank, predictor tensors."""
    tokens = tiny_vocab()
    n_vocab = len(tokens)
    rng = np.random.default_rng(seed)
    head_dim = n_embd // n_head
    kv = n_head_kv * head_dim
    if successor is not None:
        assert n_embd >= n_vocab, "successor models need one-hot embeddings (n_embd >= n_vocab)"
        tied = False

    def rand(*shape):
        w = rng.standard_t(3, shape) if heavy_tails else rng.standard_normal(shape)
        return (w * scale).astype(np.float32)

    def proj(*shape):  # zero in successor models: attention and FFN add nothing to the residual
        return np.zeros(shape, np.float32) if successor is not None else rand(*shape)

    tensors: dict[str, np.ndarray] = {}
    if successor is not None:
        embd = np.zeros((n_vocab, n_embd), np.float32)
        embd[np.arange(n_vocab), np.arange(n_vocab)] = 1.0
        out = np.zeros((n_vocab, n_embd), np.float32)
        for t, nxt in successor.items():
            out[nxt, t] = 1.0   # logits[nxt] = h[t] = sqrt(n_embd) after the final RMSNorm
        tensors["token_embd.weight"] = embd
        tensors["output.weight"] = out
    else:
        tensors["token_embd.weight"] = rand(n_vocab, n_embd)
        if not tied:
            tensors["output.weight"] = rand(n_vocab, n_embd)
    tensors["output_norm.weight"] = np.ones(n_embd, np.float32)
    for i in range(n_layer):
        b = f"blk.{i}."
        tensors[b + "attn_norm.weight"] = np.ones(n_embd, np.float32)
        tensors[b + "attn_q.weight"] = proj(n_embd, n_embd)
        tensors[b + "attn_k.weight"] = proj(kv, n_embd)
        tensors[b + "attn_v.weight"] = proj(kv, n_embd)
        tensors[b + "attn_output.weight"] = proj(n_embd, n_embd)
        tensors[b + "ffn_norm.weight"] = np.ones(n_embd, np.float32)
        tensors[b + "ffn_gate.weight"] = proj(n_ff, n_embd)
        tensors[b + "ffn_up.weight"] = proj(n_ff, n_embd)
        if activation is None:
            tensors[b + "ffn_down.weight"] = proj(n_embd, n_ff)
        else:
            tensors[b + "ffn_down_t.weight"] = proj(n_ff, n_embd)  # one row per neuron
            tensors[b + "ffn_freq"] = rng.uniform(0, 1, n_ff).astype(np.float32)
            if predictor_rank:
                tensors[b + "ffn_pred_in.weight"] = rand(predictor_rank, n_embd)
                tensors[b + "ffn_pred_out.weight"] = rand(n_ff, predictor_rank)
    for name, shape in (shapes or {}).items():
        tensors[name] = rand(*shape)

    raw_tensors: dict[str, tuple[np.ndarray, QT]] = {}
    for name, qt in (qtypes or {}).items():
        arr = tensors[name]
        if qt in K_QUANT_SCALES:
            raw = random_kquant(qt, arr.shape[0], arr.shape[1], np.random.default_rng([seed, int(qt), arr.size]))
        else:
            raw = gguf.quants.quantize(arr, qt)
        if dequantize_back:
            tensors[name] = gguf.quants.dequantize(raw, qt).reshape(arr.shape).astype(np.float32)
        else:
            raw_tensors[name] = (raw, qt)

    w = gguf.GGUFWriter(str(path), "llama" if activation is None else "prosparse")
    if activation is not None:
        w.add_string("prosparse.ffn.activation", activation)
        w.add_float32("prosparse.ffn.activation_threshold", 0.1 if activation == "fatrelu" else 0.0)
        if predictor_rank:
            w.add_float32("prosparse.predictor.threshold", 0.0)
            w.add_string("prosparse.predictor.input", "residual")
    w.add_name("tiny-test")
    w.add_block_count(n_layer)
    w.add_context_length(256)
    w.add_embedding_length(n_embd)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head_kv)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(head_dim)
    w.add_vocab_size(n_vocab)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list(tokens)
    w.add_token_types([3] * len(SPECIALS) + [1] * (n_vocab - len(SPECIALS)))
    w.add_token_merges(TINY_MERGES)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_add_bos_token(False)
    if chat_template:
        w.add_chat_template(chat_template)
    for name, arr in tensors.items():
        if name in drop:
            continue
        if name in raw_tensors:
            raw, qt = raw_tensors[name]
            w.add_tensor(name, raw, raw_shape=raw.shape, raw_dtype=qt)
        else:
            w.add_tensor(name, arr)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return Path(path)


# ---- a Hugging Face model as a GGUF file ----------------------------------------

WEIGHT_TYPES = {
    "f32": QT.F32, "f16": QT.F16, "bf16": QT.BF16,
    "q8_0": QT.Q8_0, "q4_0": QT.Q4_0, "q4_1": QT.Q4_1,
}


# ---- K-quant blocks ------------------------------------------------------------

# byte offsets of the fp16 scales in a K-quant block (d, and dmin where it has one),
# and a d that gives weights of about unit size (d * typical scale * typical quant)
K_QUANT_SCALES = {QT.Q2_K: ((80, 82), 0.05), QT.Q3_K: ((108,), 0.02), QT.Q4_K: ((0, 2), 0.004),
                  QT.Q5_K: ((0, 2), 0.002), QT.Q6_K: ((208,), 0.001)}


def random_kquant(qtype: QT, n_rows: int, n_cols: int, rng, scale: float = 1.0) -> np.ndarray:
    """Random valid K-quant rows (uint8, n_rows x row bytes): random bytes are
    valid blocks once their fp16 scales are finite (gguf-py cannot quantize
    K-quants); d is positive, dmin of either sign; scale sizes the weights."""
    bsize, bbytes = gguf.GGML_QUANT_SIZES[qtype]
    offsets, unit = K_QUANT_SCALES[qtype]
    raw = rng.integers(0, 256, (n_rows, n_cols // bsize, bbytes), dtype=np.uint8)
    for k, off in enumerate(offsets):
        v = rng.uniform(0.25, 1.0, raw.shape[:2]) * unit * scale
        if k:
            v = v * 0.1 * rng.choice([-1, 1], raw.shape[:2])
        raw[:, :, off : off + 2] = v.astype(np.float16).view(np.uint8).reshape(*raw.shape[:2], 2)
    return raw.reshape(n_rows, -1)


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """convert_hf_to_gguf's q/k row permutation: HF rotate-half pairs (i, i+d/2)
    become adjacent rows (2i, 2i+1) within each head."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _roundtrip(w: np.ndarray, qtype: QT) -> np.ndarray:
    if qtype == QT.F32:
        return w
    return gguf.quants.dequantize(gguf.quants.quantize(w, qtype), qtype).reshape(w.shape).astype(np.float32)


def dequantized_copy(model, wtype: str):
    """The HF model with every matrix rounded through wtype, exactly as it is in
    the file (blocks run along rows in both layouts; norms stay float32)."""
    import torch

    qtype = WEIGHT_TYPES[wtype]
    ref = copy.deepcopy(model)
    with torch.no_grad():
        for name, p in ref.named_parameters():
            if p.ndim == 2:
                p.copy_(torch.from_numpy(_roundtrip(p.detach().numpy().astype(np.float32), qtype)))
    return ref


def write_gguf(model, path, wtype: str = "f32", arch: str = "llama", activation: str = "silu",
               threshold: float = 0.0, embedding_scale: float | None = None,
               residual_scale: float | None = None, logit_scale: float | None = None,
               down_t: bool | None = None, n_ctx: int = 512, predictor=None,
               predictor_threshold: float = 0.0, predictor_input: str = "residual",
               predictor_hidden_act: str = "none", cutoffs=None) -> Path:
    """Write model as a GGUF file. arch "prosparse" uses ffn_down_t unless
    down_t=False, and carries the activation and scale keys. predictor: a list
    of per-layer (P_in [rank, n_embd], P_out [n_ff, rank]) float arrays
    (ffn_pred_in/out, in wtype) with the predictor keys; cutoffs: per-layer
    threshold-mode cut-offs (prosparse.ffn.cutoffs)."""
    import torch

    cfg = model.config
    qtype = WEIGHT_TYPES[wtype]
    if down_t is None:
        down_t = arch == "prosparse"
    path = Path(path)
    w = gguf.GGUFWriter(str(path), arch)
    w.add_context_length(n_ctx)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_rope_freq_base(float(cfg.rope_parameters["rope_theta"]))
    w.add_rope_dimension_count(cfg.head_dim)
    if cfg.rope_parameters.get("rope_type") == "linear":
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(float(cfg.rope_parameters["factor"]))
    w.add_layer_norm_rms_eps(float(cfg.rms_norm_eps))
    w.add_vocab_size(cfg.vocab_size)
    if arch == "prosparse":
        w.add_string("prosparse.ffn.activation", activation)
        w.add_float32("prosparse.ffn.activation_threshold", float(threshold))
        for key, val in (("embedding_scale", embedding_scale), ("residual_scale", residual_scale),
                         ("logit_scale", logit_scale)):
            if val is not None:
                w.add_float32(f"prosparse.{key}", float(val))
        if predictor is not None:
            w.add_float32("prosparse.predictor.threshold", float(predictor_threshold))
            w.add_string("prosparse.predictor.input", predictor_input)
            w.add_string("prosparse.predictor.hidden_act", predictor_hidden_act)
        if cutoffs is not None:
            w.add_array("prosparse.ffn.cutoffs", [float(c) for c in cutoffs])
    tokens, types, merges = byte_vocab()
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt-2")  # llama.cpp's name for the GPT-2 split
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(tokens.index("<|endoftext|>"))
    w.add_eos_token_id(tokens.index("<|endoftext|>"))
    w.add_add_bos_token(False)

    def put(name, t, quantize=True):
        a = t.detach().numpy().astype(np.float32)
        if a.ndim == 2 and quantize and qtype != QT.F32:
            w.add_tensor(name, gguf.quants.quantize(a, qtype), raw_dtype=qtype)
        else:
            w.add_tensor(name, np.ascontiguousarray(a))

    m = model.model
    put("token_embd.weight", m.embed_tokens.weight)
    for i, layer in enumerate(m.layers):
        at, mlp = layer.self_attn, layer.mlp
        put(f"blk.{i}.attn_norm.weight", layer.input_layernorm.weight)
        q = _permute(at.q_proj.weight.detach().numpy(), cfg.num_attention_heads)
        k = _permute(at.k_proj.weight.detach().numpy(), cfg.num_key_value_heads)
        put(f"blk.{i}.attn_q.weight", torch.from_numpy(np.ascontiguousarray(q)))
        put(f"blk.{i}.attn_k.weight", torch.from_numpy(np.ascontiguousarray(k)))
        put(f"blk.{i}.attn_v.weight", at.v_proj.weight)
        put(f"blk.{i}.attn_output.weight", at.o_proj.weight)
        put(f"blk.{i}.ffn_norm.weight", layer.post_attention_layernorm.weight)
        put(f"blk.{i}.ffn_gate.weight", mlp.gate_proj.weight)
        put(f"blk.{i}.ffn_up.weight", mlp.up_proj.weight)
        if down_t:
            put(f"blk.{i}.ffn_down_t.weight", mlp.down_proj.weight.t().contiguous())
        else:
            put(f"blk.{i}.ffn_down.weight", mlp.down_proj.weight)
        if predictor is not None:
            put(f"blk.{i}.ffn_pred_in.weight", torch.as_tensor(np.asarray(predictor[i][0], np.float32)))
            put(f"blk.{i}.ffn_pred_out.weight", torch.as_tensor(np.asarray(predictor[i][1], np.float32)))
    put("output_norm.weight", m.norm.weight)
    if not model.config.tie_word_embeddings:
        put("output.weight", model.lm_head.weight)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
