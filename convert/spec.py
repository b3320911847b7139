"""What a checkpoint *is*: hyper-parameters, activation, scalings, tensor table.

Every source (a Hugging Face folder, a GGUF file) is reduced to one ModelSpec
plus tensors under llama's GGUF names. The rest of the converter works only
on those, so the validation below (missing / extra / wrong-shaped tensors) is
the same for every input.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from .errors import ConvertError

ACTIVATIONS = ("silu", "gelu_tanh", "relu", "fatrelu", "relu2", "drelu")
FAMILIES = {  # config.json "architectures" entry -> family
    "LlamaForCausalLM": "llama",
    "SparseLlamaForCausalLM": "llama",   # ProSparse's own class name (custom code, llama weights)
    "MistralForCausalLM": "mistral",
    "MiniCPMForCausalLM": "minicpm",
    "Qwen2ForCausalLM": "qwen2",
    "Qwen3ForCausalLM": "qwen3",
    "Gemma3ForCausalLM": "gemma3",
}
# family -> the GGUF layer layout (llama.cpp's architecture name), which the engine
# reads as flags: NEOX RoPE (q/k rows unpermuted), q/k/v biases, q/k norms, Gemma's extras
LAYOUTS = {"llama": "llama", "mistral": "llama", "minicpm": "llama",
           "qwen2": "qwen2", "qwen3": "qwen3", "gemma3": "gemma3"}


@dataclass
class ModelSpec:
    family: str                 # "llama" | "mistral" | "minicpm"
    n_vocab: int
    n_embd: int
    n_ff: int
    n_layer: int
    n_head: int
    n_head_kv: int
    n_ctx: int
    rope_theta: float
    rms_eps: float
    tied: bool                  # output reuses token_embd (no output.weight)
    activation: str             # one of ACTIVATIONS
    threshold: float = 0.0      # FATReLU t (0 for the others)
    # MiniCPM scalings (1.0 = none): h0 = embd * embedding_scale;
    # h += residual_scale * block(h); logits = logit_scale * (norm(h) @ out)
    embedding_scale: float = 1.0
    residual_scale: float = 1.0
    logit_scale: float = 1.0
    name: str = ""
    notes: list[str] = field(default_factory=list)
    key_length: int = 0         # per-head width when not n_embd / n_head (qwen3, gemma3)
    rope_factors: tuple[float, ...] | None = None   # Llama 3: divisors of the RoPE frequencies
    rope_linear: float = 1.0    # linear RoPE scaling factor (global layers)
    attn_scale: float | None = None   # scores scale when not 1/sqrt(head_dim) (Gemma's query_pre_attn_scalar)
    sliding_window: int = 0     # Gemma 3's local layers' window (0: none)
    sliding_layers: tuple[bool, ...] = ()   # per layer: local (True) or global
    rope_theta_swa: float = 10000.0   # the local layers' RoPE base

    @property
    def head_dim(self) -> int:
        return self.key_length or self.n_embd // self.n_head

    @property
    def layout(self) -> str:
        return LAYOUTS[self.family]

    @property
    def q_dim(self) -> int:
        return self.n_head * self.head_dim

    @property
    def has_scalings(self) -> bool:
        return (self.embedding_scale, self.residual_scale, self.logit_scale) != (1.0, 1.0, 1.0)

    def expected_shapes(self) -> dict[str, tuple[int, ...]]:
        """llama tensor names -> numpy shape ([out, in] for matrices)."""
        e, f, kv, q, hd = self.n_embd, self.n_ff, self.n_head_kv * self.head_dim, self.q_dim, self.head_dim
        shapes: dict[str, tuple[int, ...]] = {
            "token_embd.weight": (self.n_vocab, e),
            "output_norm.weight": (e,),
        }
        if not self.tied:
            shapes["output.weight"] = (self.n_vocab, e)
        for i in range(self.n_layer):
            b = f"blk.{i}."
            shapes.update({
                b + "attn_norm.weight": (e,),
                b + "attn_q.weight": (q, e),
                b + "attn_k.weight": (kv, e),
                b + "attn_v.weight": (kv, e),
                b + "attn_output.weight": (e, q),
                b + "ffn_norm.weight": (e,),
                b + "ffn_gate.weight": (f, e),
                b + "ffn_up.weight": (f, e),
                b + "ffn_down.weight": (e, f),
            })
            shapes.update({b + n: shp for n, shp in layout_tensors(self.layout, q, kv, hd, e).items()})
        return shapes


def layout_tensors(layout: str, q_dim: int, kv_dim: int, head_dim: int, n_embd: int) -> dict[str, tuple[int]]:
    """A layout's per-layer tensors beyond llama's (GGUF names after blk.N.), all 1-D float32."""
    extra = {}
    if layout == "qwen2":
        extra.update({"attn_q.bias": (q_dim,), "attn_k.bias": (kv_dim,), "attn_v.bias": (kv_dim,)})
    if layout in ("qwen3", "gemma3"):
        extra.update({"attn_q_norm.weight": (head_dim,), "attn_k_norm.weight": (head_dim,)})
    if layout == "gemma3":
        extra.update({"post_attention_norm.weight": (n_embd,), "post_ffw_norm.weight": (n_embd,)})
    return extra


def check_tensor_table(spec: ModelSpec, shapes: dict[str, tuple[int, ...]], where: str) -> None:
    """Missing, extra or wrong-shaped tensors: one clear error, before any output."""
    want = spec.expected_shapes()
    missing = [n for n in want if n not in shapes]
    if missing:
        raise ConvertError(f"{where}: missing tensor {missing[0]}"
                           + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    extra = [n for n in shapes if n not in want]
    if extra:
        raise ConvertError(f"{where}: unexpected tensor {extra[0]}"
                           + (f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""))
    for n, shp in want.items():
        if tuple(shapes[n]) != shp:
            raise ConvertError(f"{where}: tensor {n} has shape {list(shapes[n])}, expected {list(shp)}")


def activation_from_config(cfg: dict) -> tuple[str, float]:
    """hidden_act (+ hidden_act_param) -> (activation, threshold).

    Accepted: silu/swish, relu, fatrelu (+ hidden_act_param, the published
    ProSparse checkpoints' format), relu2 (squared ReLU gate), drelu (ReLU on
    gate and up, TurboSparse) -- as written by prosparse-train.
    """
    act = str(cfg.get("hidden_act") or cfg.get("hidden_activation") or "silu").lower()
    act = {"swish": "silu", "relu_squared": "relu2", "relu²": "relu2", "gelu_pytorch_tanh": "gelu_tanh"}.get(act, act)
    if act not in ACTIVATIONS:
        raise ConvertError(f"unsupported activation hidden_act={act!r} "
                           f"(supported: {', '.join(ACTIVATIONS)})")
    threshold = 0.0
    if act == "fatrelu":
        p = cfg.get("hidden_act_param")
        if not isinstance(p, (int, float)) or isinstance(p, bool) or not math.isfinite(p) or p < 0:
            raise ConvertError("hidden_act fatrelu needs a finite, non-negative number in hidden_act_param")
        threshold = float(p)
    return act, threshold


def _rope(cfg: dict, params: dict | None = None, default_theta: float = 10000.0):
    """(theta, linear factor, Llama 3 divisors or None) of one RoPE (transformers 5's
    rope_parameters, or the older rope_theta + rope_scaling)."""
    rp = params if params is not None else (cfg.get("rope_parameters") or {})
    rs = dict(cfg.get("rope_scaling") or {}) if params is None else {}
    r = {**rs, **rp}
    theta = float(r.get("rope_theta", cfg.get("rope_theta", default_theta)))
    rtype = r.get("rope_type", r.get("type", "default"))
    if rtype in ("default", None):
        return theta, 1.0, None
    if rtype == "linear":
        return theta, float(r["factor"]), None
    if rtype == "llama3":
        return theta, 1.0, tuple(_llama3_divisors(cfg, r, theta))
    raise ConvertError(f"unsupported RoPE scaling {rtype!r} (supported: default, linear, llama3)")


def _llama3_divisors(cfg: dict, r: dict, theta: float) -> list[float]:
    """Llama 3's RoPE scaling as per-dimension divisors of the frequencies (llama.cpp's
    rope_freqs.weight): 1 for high frequencies, `factor` for low ones, smooth between."""
    try:
        factor, lo, hi = float(r["factor"]), float(r["low_freq_factor"]), float(r["high_freq_factor"])
        old_ctx = float(r["original_max_position_embeddings"])
    except (KeyError, TypeError, ValueError) as e:
        raise ConvertError(f"config.json: llama3 RoPE scaling needs factor, low_freq_factor, high_freq_factor, "
                           f"original_max_position_embeddings ({e})") from None
    hd = int(cfg.get("head_dim") or int(cfg["hidden_size"]) // int(cfg["num_attention_heads"]))
    out = []
    for i in range(0, hd, 2):
        wavelen = 2 * math.pi * theta ** (i / hd)
        if wavelen < old_ctx / hi:
            out.append(1.0)
        elif wavelen > old_ctx / lo:
            out.append(factor)
        else:
            smooth = (old_ctx / wavelen - lo) / (hi - lo)
            out.append(1.0 / ((1 - smooth) / factor + smooth))
    return out


def spec_from_hf_config(cfg: dict) -> ModelSpec:
    archs = cfg.get("architectures") or []
    fam = next((FAMILIES[a] for a in archs if a in FAMILIES), None)
    if fam is None:
        raise ConvertError(f"unsupported architecture {archs!r} "
                           f"(supported: {', '.join(FAMILIES)})")
    try:
        n_embd = int(cfg["hidden_size"])
        n_head = int(cfg["num_attention_heads"])
        spec = ModelSpec(
            family=fam,
            n_vocab=int(cfg["vocab_size"]),
            n_embd=n_embd,
            n_ff=int(cfg["intermediate_size"]),
            n_layer=int(cfg["num_hidden_layers"]),
            n_head=n_head,
            n_head_kv=int(cfg.get("num_key_value_heads") or n_head),
            n_ctx=int(cfg.get("max_position_embeddings", 2048)),
            rope_theta=10000.0,
            rms_eps=float(cfg.get("rms_norm_eps", 1e-6)),
            tied=bool(cfg.get("tie_word_embeddings", fam in ("minicpm", "gemma3"))),
            activation="silu",
            name=str(cfg.get("_name_or_path", "")),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise ConvertError(f"config.json: missing or bad field {e}") from None
    spec.activation, spec.threshold = activation_from_config(cfg)
    if n_head % spec.n_head_kv:
        raise ConvertError("config.json: heads / kv heads do not divide")
    hd = cfg.get("head_dim")
    if fam in ("qwen3", "gemma3") and hd is not None:
        spec.key_length = int(hd)
    elif hd is not None and int(hd) != n_embd // n_head:
        raise ConvertError(f"unsupported head_dim {hd} != hidden_size / num_attention_heads")
    if spec.key_length == 0 and n_embd % n_head:
        raise ConvertError("config.json: hidden_size is not a multiple of num_attention_heads")
    if cfg.get("attention_bias") or cfg.get("mlp_bias"):
        raise ConvertError("unsupported: attention or MLP biases")
    for key in ("attn_logit_softcapping", "final_logit_softcapping"):
        if cfg.get(key) is not None:
            raise ConvertError(f"unsupported: {key} = {cfg[key]} (logit soft-capping, Gemma 2)")
    if fam == "qwen2" and cfg.get("use_sliding_window"):
        raise ConvertError("unsupported: Qwen2 with use_sliding_window (sliding-window attention)")
    if fam == "gemma3":
        _gemma3(cfg, spec)
    else:
        spec.rope_theta, spec.rope_linear, spec.rope_factors = _rope(cfg)
        if spec.rope_factors is not None and fam not in ("llama", "mistral"):
            raise ConvertError(f"unsupported: llama3 RoPE scaling in a {fam} model")
    if fam == "minicpm":
        try:
            spec.embedding_scale = float(cfg["scale_emb"])
            spec.residual_scale = float(cfg["scale_depth"]) / math.sqrt(spec.n_layer)
            spec.logit_scale = 1.0 / (n_embd / float(cfg["dim_model_base"]))
        except (KeyError, TypeError, ValueError) as e:
            raise ConvertError(f"config.json: MiniCPM needs scale_emb, scale_depth, dim_model_base ({e})") from None
        if not spec.tied:
            raise ConvertError("MiniCPM with untied embeddings is not supported")
    sw = cfg.get("sliding_window")
    if fam == "mistral" and sw and int(sw) < spec.n_ctx:
        spec.notes.append(f"sliding_window={sw} is not applied: positions beyond {sw} "
                          "attend to the whole context")
    return spec


def _gemma3(cfg: dict, spec: ModelSpec) -> None:
    """Gemma 3 text: local (sliding-window) and global layers with their own RoPE,
    the query scale from query_pre_attn_scalar."""
    n = spec.n_layer
    types = cfg.get("layer_types")
    if types is None:
        pattern = int(cfg.get("sliding_window_pattern", 6))
        types = ["sliding_attention" if (i + 1) % pattern else "full_attention" for i in range(n)]
    if len(types) != n or any(t not in ("sliding_attention", "full_attention") for t in types):
        raise ConvertError(f"config.json: layer_types must name sliding_attention or full_attention for each of {n} layers")
    spec.sliding_layers = tuple(t == "sliding_attention" for t in types)
    spec.sliding_window = int(cfg.get("sliding_window") or 0) if any(spec.sliding_layers) else 0
    if any(spec.sliding_layers) and spec.sliding_window <= 0:
        raise ConvertError("config.json: Gemma 3 sliding layers need a sliding_window")
    rp = cfg.get("rope_parameters") or {}
    if "full_attention" in rp or "sliding_attention" in rp:   # transformers 5: one RoPE per layer type
        spec.rope_theta, spec.rope_linear, factors = _rope(cfg, rp.get("full_attention") or {}, 1e6)
        theta_swa, lin_swa, _ = _rope(cfg, rp.get("sliding_attention") or {}, 10000.0)
        if lin_swa != 1.0:
            raise ConvertError("unsupported: RoPE scaling on Gemma 3's sliding layers")
        spec.rope_theta_swa = theta_swa
    else:
        spec.rope_theta, spec.rope_linear, factors = _rope(cfg, None, 1e6)
        spec.rope_theta_swa = float(cfg.get("rope_local_base_freq", 10000.0))
    if factors is not None:
        raise ConvertError("unsupported: llama3 RoPE scaling in a Gemma 3 model")
    qs = float(cfg.get("query_pre_attn_scalar", spec.head_dim))
    spec.attn_scale = qs ** -0.5
