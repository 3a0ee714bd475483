"""What every importer is made of: how one of our weights is taken from a file, and how a family is described.

A family (one file beside this one) maps a Hugging Face config onto `ModelConfig` fields and names,
for each of our weights, the tensor of the file it comes from (`Take`), its shape there and how to
convert it. The folder reader in `__init__.py` does the rest the same way for every family.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from transformer.checkpoints.format import CheckpointError
from transformer.model.config import ModelConfig

CONFIG, SAFETENSORS, PICKLE, TOKENIZER = "config.json", "model.safetensors", "pytorch_model.bin", "tokenizer.json"

# Hugging Face's activation names -> ours. "gelu" is the exact (erf) GELU; GPT-2's "gelu_new" is the tanh one.
HF_ACTIVATIONS = {
    "gelu": "gelu",
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "relu": "relu",
    "silu": "silu",
    "swish": "silu",  # transformers' "swish" is the same nn.SiLU
}


@dataclass(frozen=True)
class Take:
    """Where one of our weights comes from: a tensor of the HF file, its shape there, and how to convert it."""

    name: str  # the tensor's name in the file, after the family prefix ("bert.", "transformer.", ...) is removed
    shape: tuple[int, ...]
    convert: Callable[[Tensor], Tensor] = lambda t: t
    fallback: str | None = None  # the tensor to take when the file has no `name` (T5: lm_head, else the embedding)

    def source(self, names) -> str:
        """The file's tensor this weight comes from, given the names the file holds."""
        return self.fallback if self.name not in names and self.fallback is not None else self.name


@dataclass(frozen=True)
class Family:
    """One supported architecture family."""

    model_type: str
    architectures: tuple[str, ...]
    prefix: str  # stripped from the tensor names when the file has it (task heads wrap the base model)
    ignorable: str  # regex of tensors we knowingly do not use (pooler, LM heads, buffers)
    config: Callable[[dict[str, Any]], dict[str, Any]]  # HF config -> ModelConfig fields
    weights: Callable[[ModelConfig], dict[str, Take]]  # our name -> where it comes from
    facts: Callable[[dict[str, Any]], dict[str, Any]] = field(default=lambda hf: {})  # extra training metadata
    # encoder-decoders: the family config class's defaults of the generation fields a config.json may leave out
    generation: dict[str, Any] = field(default_factory=dict)
    # run on the read tensors (names without the prefix): refuse what shapes cannot show (a differing tied copy)
    check: Callable[[ModelConfig, dict[str, Tensor], str], None] = field(default=lambda cfg, tensors, source: None)


def get(hf: dict[str, Any], key: str, default: Any = ...) -> Any:
    """A config field, or `default`; a required field (no default) that is missing is refused by name."""
    if key in hf and hf[key] is not None:
        return hf[key]
    if default is ...:
        raise CheckpointError(f"{CONFIG}: required field {key!r} is missing")
    return default


def require(hf: dict[str, Any], key: str, allowed: tuple, default: Any) -> None:
    """Refuse an option whose value would change the computation in a way our model cannot reproduce."""
    value = hf.get(key, default)
    if value not in allowed:
        raise CheckpointError(f"{CONFIG}: unsupported {key}={value!r} (supported: {', '.join(map(repr, allowed))})")


def activation(hf: dict[str, Any], key: str, default: Any = ...) -> str:
    """Our name for the activation in `hf[key]`; one we do not compute is refused by name."""
    name = get(hf, key, default)
    if name not in HF_ACTIVATIONS:
        raise CheckpointError(f"{CONFIG}: unsupported {key}={name!r} (supported: {', '.join(HF_ACTIVATIONS)})")
    return HF_ACTIVATIONS[name]


def linear(name: str, n_out: int, n_in: int, bias: bool = True) -> dict[str, Take]:
    """An nn.Linear stored as nn.Linear: weight (out, in) and, when it has one, bias (out,)."""
    weight = {"weight": Take(f"{name}.weight", (n_out, n_in))}
    return {**weight, "bias": Take(f"{name}.bias", (n_out,))} if bias else weight


def norm(name: str, d: int) -> dict[str, Take]:
    return {"weight": Take(f"{name}.weight", (d,)), "bias": Take(f"{name}.bias", (d,))}


def conv1d(name: str, n_in: int, n_out: int, part: int = 0, n_parts: int = 1) -> dict[str, Take]:
    """GPT-2's Conv1D stores weight as (in, out): transpose it; a fused q|k|v is cut into n_parts along out."""
    width = n_out // n_parts
    cols = slice(part * width, (part + 1) * width)
    return {
        "weight": Take(f"{name}.weight", (n_in, n_out), lambda t: t[:, cols].t().contiguous()),
        "bias": Take(f"{name}.bias", (n_out,), lambda t: t[cols].clone()),
    }


def check_stack_embeddings(tensors: dict[str, Tensor], source: str) -> None:
    """An encoder-decoder's file may hold copies of shared.weight per stack: refuse one that differs (transformers
    would use it for that stack; our model has one token embedding)."""
    shared = tensors["shared.weight"]
    for name in ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight"):
        copy = tensors.get(name)
        if copy is not None and not torch.equal(copy, shared):
            raise CheckpointError(
                f"{source}: {name} differs from shared.weight (transformers would use it for that stack; "
                "this model has one token embedding)"
            )


def put(out: dict[str, Take], prefix: str, parts: dict[str, Take]) -> None:
    """Add a module's weights (`parts`) to the plan under our module name `prefix`."""
    for key, take in parts.items():
        out[f"{prefix}.{key}"] = take


# --- what the rotary families share -----------------------------------------------------------------------------

ROPE_TYPES = ("default", "linear", "dynamic", "llama3")
ROPE_KEYS = {
    "rope_type", "type", "rope_theta", "factor", "partial_rotary_factor",
    "low_freq_factor", "high_freq_factor", "original_max_position_embeddings",
}  # fmt: skip
# The longest text the app reads from a rotary model (whose context may be 128 000 tokens): the model view's
# 2048-token figure; `load_hf_dir` lowers it further when the server's trace budget cannot hold that many.
ROPE_MAX_LEN = 2048


def rope(hf: dict[str, Any], default_theta: float = 10000.0) -> dict[str, Any]:
    """ModelConfig's rotary fields from a config of either layout.

    transformers ≥ 5 writes `rope_parameters` {rope_type, rope_theta, partial_rotary_factor, factor, …};
    older configs (most checkpoints in people's caches) write `rope_theta` and `rope_scaling` {type or
    rope_type, factor, …}, GPT-NeoX `rotary_emb_base` and `rotary_pct`, Phi-3 `partial_rotary_factor`.
    A scaling type or a parameter we do not compute is refused by name.
    """
    params = hf.get("rope_parameters") or {}
    scaling = hf.get("rope_scaling") or {}
    if not isinstance(params, dict) or not isinstance(scaling, dict):
        raise CheckpointError(f"{CONFIG}: rope_parameters / rope_scaling must be JSON objects")
    if any(isinstance(v, dict) for v in params.values()):
        raise CheckpointError(f"{CONFIG}: per-layer rope_parameters ({', '.join(params)}) are not supported")
    merged = {**scaling, **params}
    unknown = sorted(set(merged) - ROPE_KEYS)
    if unknown:
        raise CheckpointError(f"{CONFIG}: unsupported rope parameter(s) {', '.join(map(repr, unknown))}")
    kind = merged.get("rope_type", merged.get("type", "default"))
    if kind not in ROPE_TYPES:
        raise CheckpointError(f"{CONFIG}: unsupported rope scaling type {kind!r} (supported: {', '.join(ROPE_TYPES)})")
    theta = merged.get("rope_theta", hf.get("rope_theta", hf.get("rotary_emb_base", default_theta)))
    fraction = merged.get("partial_rotary_factor", hf.get("partial_rotary_factor", hf.get("rotary_pct", 1.0)))
    fields: dict[str, Any] = dict(positional="rope", rope_theta=float(theta), rotary_fraction=float(fraction), rope_scaling=kind)
    if kind != "default":
        fields["rope_factor"] = float(get(merged, "factor"))
    if kind == "dynamic":  # transformers grows the base past max_position_embeddings
        fields["rope_original_max_len"] = int(get(hf, "max_position_embeddings"))
    if kind == "llama3":
        fields["rope_original_max_len"] = int(get(merged, "original_max_position_embeddings"))
        fields["rope_low_freq_factor"] = float(get(merged, "low_freq_factor"))
        fields["rope_high_freq_factor"] = float(get(merged, "high_freq_factor"))
    return fields


def context(hf: dict[str, Any], rotary: dict[str, Any] | None = None) -> int:
    """max_len for a rotary model: its context, at most ROPE_MAX_LEN tokens (the facts record the full one).

    With dynamic scaling (`rotary`: `rope(hf)`'s fields) up to factor × that context: max_position_embeddings
    is where the base starts to grow, and reading past it is what dynamic scaling is for.
    """
    n = int(get(hf, "max_position_embeddings"))
    if rotary is not None and rotary["rope_scaling"] == "dynamic":
        n = int(rotary["rope_factor"] * n)
    return min(n, ROPE_MAX_LEN)


def without(hf: dict[str, Any], *keys: str) -> dict[str, Any]:
    """`hf` without `keys`: fields another family's layout gives a meaning that this family's transformers code ignores."""
    return {k: v for k, v in hf.items() if k not in keys}


def rotary_facts(hf: dict[str, Any], fields: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """What the Checkpoint page shows beside a rotary model: its full context, how its positions and window work."""
    out: dict[str, Any] = {
        "context": int(get({**defaults, **hf}, "max_position_embeddings")),
        "rope_theta": fields["rope_theta"],
    }
    if fields["rotary_fraction"] != 1.0:
        out["rotary_fraction"] = fields["rotary_fraction"]
    if fields["rope_scaling"] != "default":
        out["rope_scaling"] = {"type": fields["rope_scaling"], "factor": fields["rope_factor"]}
        if fields["rope_scaling"] in ("dynamic", "llama3"):
            out["rope_scaling"]["original_context"] = fields["rope_original_max_len"]
    if fields.get("sliding_window"):
        out["sliding_window"] = fields["sliding_window"]
        if fields.get("full_attention_layers"):
            out["full_attention_layers"] = ", ".join(map(str, fields["full_attention_layers"]))
    if fields.get("parallel_residual"):
        out["parallel_residual"] = True
    return out


def sliding(hf: dict[str, Any], n_layers: int) -> dict[str, Any]:
    """sliding_window and full_attention_layers from `layer_types` (transformers ≥ 5), or Qwen2's
    `use_sliding_window` + `max_window_layers` (lower layers full), or a plain `sliding_window` (Mistral, Phi-3)."""
    window = hf.get("sliding_window")
    if "use_sliding_window" in hf and not hf["use_sliding_window"]:
        window = None
    if not window:
        return {}
    if not isinstance(window, int) or isinstance(window, bool) or window < 1:
        raise CheckpointError(f"{CONFIG}: sliding_window must be a positive integer, got {window!r}")
    types = hf.get("layer_types")
    if types is not None:
        if not isinstance(types, list) or len(types) != n_layers or set(types) - {"full_attention", "sliding_attention"}:
            raise CheckpointError(f"{CONFIG}: layer_types must list 'full_attention' or 'sliding_attention' per layer")
        full = tuple(i for i, t in enumerate(types) if t == "full_attention")
    elif "max_window_layers" in hf:
        full = tuple(range(min(int(hf["max_window_layers"]), n_layers)))
    else:
        full = ()
    return dict(sliding_window=window, full_attention_layers=full)
