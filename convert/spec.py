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

ACTIVATIONS = ("silu", "relu", "fatrelu", "relu2", "drelu")
FAMILIES = {  # config.json "architectures" entry -> family
    "LlamaForCausalLM": "llama",
    "SparseLlamaForCausalLM": "llama",   # ProSparse's own class name (custom code, llama weights)
    "MistralForCausalLM": "mistral",
    "MiniCPMForCausalLM": "minicpm",
}


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

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def has_scalings(self) -> bool:
        return (self.embedding_scale, self.residual_scale, self.logit_scale) != (1.0, 1.0, 1.0)

    def expected_shapes(self) -> dict[str, tuple[int, ...]]:
        """llama tensor names -> numpy shape ([out, in] for matrices)."""
        e, f, kv = self.n_embd, self.n_ff, self.n_head_kv * self.head_dim
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
                b + "attn_q.weight": (e, e),
                b + "attn_k.weight": (kv, e),
                b + "attn_v.weight": (kv, e),
                b + "attn_output.weight": (e, e),
                b + "ffn_norm.weight": (e,),
                b + "ffn_gate.weight": (f, e),
                b + "ffn_up.weight": (f, e),
                b + "ffn_down.weight": (e, f),
            })
        return shapes


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
    act = str(cfg.get("hidden_act", cfg.get("hidden_activation", "silu"))).lower()
    act = {"swish": "silu", "relu_squared": "relu2", "relu²": "relu2"}.get(act, act)
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


def _rope_theta(cfg: dict) -> float:
    rp = cfg.get("rope_parameters") or {}
    rs = cfg.get("rope_scaling")
    for r in (rp, rs or {}):
        rtype = r.get("rope_type", r.get("type", "default"))
        if rtype not in ("default", None):
            raise ConvertError(f"unsupported RoPE scaling {rtype!r} (only plain RoPE)")
    return float(rp.get("rope_theta", cfg.get("rope_theta", 10000.0)))


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
            rope_theta=_rope_theta(cfg),
            rms_eps=float(cfg.get("rms_norm_eps", 1e-6)),
            tied=bool(cfg.get("tie_word_embeddings", fam == "minicpm")),
            activation="silu",
            name=str(cfg.get("_name_or_path", "")),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise ConvertError(f"config.json: missing or bad field {e}") from None
    spec.activation, spec.threshold = activation_from_config(cfg)
    if n_embd % n_head or n_head % spec.n_head_kv:
        raise ConvertError("config.json: hidden_size / heads / kv heads do not divide")
    hd = cfg.get("head_dim")
    if hd is not None and int(hd) != n_embd // n_head:
        raise ConvertError(f"unsupported head_dim {hd} != hidden_size / num_attention_heads")
    if cfg.get("attention_bias") or cfg.get("mlp_bias"):
        raise ConvertError("unsupported: attention or MLP biases")
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
