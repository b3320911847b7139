"""Tiny random transformers models written as GGUF files, for tests.

- `make_hf_llama` builds a small random `LlamaForCausalLM` (float32, GQA,
  optionally tied embeddings).
- `write_gguf` writes it the way convert_hf_to_gguf does (q/k rows permuted for
  adjacent-pair RoPE) as a `llama` file, or as a `prosparse` file with an
  activation, `ffn_down_t` and the MiniCPM scale keys; weights in F32, F16,
  BF16, Q8_0, Q4_0 or Q4_1 (gguf.quants).
- `reference_logits` runs the HF model, patched for the prosparse activations
  and scales, as the independent reference; `dequantized_copy` gives the
  reference for a quantized file (the same rounded weights, in float).
- `byte_vocab` is a small GPT-2 byte-level vocabulary so the files are complete.
"""
from __future__ import annotations

import copy
from pathlib import Path

import gguf
import numpy as np
import torch
from conftest import byte_to_unicode
from gguf import GGMLQuantizationType as QT

WEIGHT_TYPES = {
    "f32": QT.F32, "f16": QT.F16, "bf16": QT.BF16,
    "q8_0": QT.Q8_0, "q4_0": QT.Q4_0, "q4_1": QT.Q4_1,
}
ACTIVATIONS = ("silu", "relu", "fatrelu", "relu2", "drelu")
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
MERGES = [("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("i", "n"), ("e", "r"), ("a", "n")]


# ---- vocabulary ---------------------------------------------------------------

def byte_vocab() -> tuple[list[str], list[int], list[str]]:
    """(tokens, token types, merges): 256 byte tokens, a few merges, 3 specials."""
    b2u = byte_to_unicode()
    tokens = [b2u[b] for b in range(256)]
    merges = []
    for a, b in MERGES:
        tokens.append(a + b)
        merges.append(f"{a} {b}")
    types = [int(gguf.TokenType.NORMAL)] * len(tokens)
    tokens += SPECIALS
    types += [int(gguf.TokenType.CONTROL)] * len(SPECIALS)
    return tokens, types, merges


N_VOCAB = len(byte_vocab()[0])


# ---- the model ----------------------------------------------------------------

def make_hf_llama(seed: int = 0, n_layer: int = 2, n_embd: int = 64, n_head: int = 4, n_head_kv: int = 2,
                  n_ff: int = 96, tied: bool = False, rope_theta: float = 10000.0, std: float = 0.08,
                  max_pos: int = 512, rope_linear_factor: float | None = None):
    """A random float32 LlamaForCausalLM; weights drawn with a larger spread than
    HF's default so logits are far from uniform, norms randomised around 1."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=N_VOCAB, hidden_size=n_embd, intermediate_size=n_ff,
                      num_hidden_layers=n_layer, num_attention_heads=n_head, num_key_value_heads=n_head_kv,
                      rms_norm_eps=1e-5, max_position_embeddings=max_pos,
                      rope_parameters={"rope_type": "linear", "factor": rope_linear_factor, "rope_theta": rope_theta}
                      if rope_linear_factor else {"rope_type": "default", "rope_theta": rope_theta},
                      tie_word_embeddings=tied, hidden_act="silu", bos_token_id=0, eos_token_id=0)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg).float().eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(std * torch.randn(p.shape, generator=gen))
    return model


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


# ---- the reference ------------------------------------------------------------

class _Act(torch.nn.Module):
    """The gate activation of a prosparse file, as a module HF's MLP can hold."""

    def __init__(self, activation: str, threshold: float):
        super().__init__()
        self.activation, self.threshold = activation, threshold

    def forward(self, x):
        if self.activation == "silu":
            return torch.nn.functional.silu(x)
        if self.activation == "relu":
            return torch.relu(x)
        if self.activation == "fatrelu":
            return torch.where(x >= self.threshold, x, torch.zeros_like(x))
        if self.activation == "relu2":
            return torch.relu(x) ** 2
        raise ValueError(self.activation)


def reference_logits(model, tokens, activation: str = "silu", threshold: float = 0.0,
                     embedding_scale: float | None = None, residual_scale: float | None = None,
                     logit_scale: float | None = None) -> np.ndarray:
    """Logits (n, n_vocab) of the HF model on tokens, with its MLP activation
    replaced and MiniCPM-style scalings added by forward hooks."""
    model = copy.deepcopy(model)
    hooks = []
    for layer in model.model.layers:
        mlp = layer.mlp
        if activation == "drelu":
            mlp.forward = (lambda m: lambda x: m.down_proj(torch.relu(m.gate_proj(x)) * torch.relu(m.up_proj(x))))(mlp)
        else:
            mlp.act_fn = _Act(activation, threshold)
        if residual_scale is not None:
            rs = float(residual_scale)
            hooks.append(layer.self_attn.register_forward_hook(lambda mod, inp, out: (out[0] * rs,) + tuple(out[1:])))
            hooks.append(mlp.register_forward_hook(lambda mod, inp, out: out * rs))
    if embedding_scale is not None:
        es = float(embedding_scale)
        hooks.append(model.model.embed_tokens.register_forward_hook(lambda mod, inp, out: out * es))
    if logit_scale is not None:
        ls = float(logit_scale)
        hooks.append(model.model.norm.register_forward_hook(lambda mod, inp, out: out * ls))
    with torch.no_grad():
        out = model(torch.tensor([list(tokens)], dtype=torch.long)).logits[0]
    for h in hooks:
        h.remove()
    return out.double().numpy()
