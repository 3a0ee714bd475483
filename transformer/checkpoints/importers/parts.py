"""What every importer is made of: how one of our weights is taken from a file, and how a family is described.

A family (one file beside this one) maps a Hugging Face config onto `ModelConfig` fields and names,
for each of our weights, the tensor of the file it comes from (`Take`), its shape there and how to
convert it. The folder reader in `__init__.py` does the rest the same way for every family.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from transformer.checkpoints.format import CheckpointError
from transformer.model.config import ModelConfig

CONFIG, SAFETENSORS, PICKLE, TOKENIZER = "config.json", "model.safetensors", "pytorch_model.bin", "tokenizer.json"

# Hugging Face's activation names -> ours. "gelu" is the exact (erf) GELU; GPT-2's "gelu_new" is the tanh one.
HF_ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "relu": "relu"}


@dataclass(frozen=True)
class Take:
    """Where one of our weights comes from: a tensor of the HF file, its shape there, and how to convert it."""

    name: str  # the tensor's name in the file, after the family prefix ("bert.", "transformer.", ...) is removed
    shape: tuple[int, ...]
    convert: Callable[[Tensor], Tensor] = lambda t: t


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


def activation(hf: dict[str, Any], key: str, default: str) -> str:
    name = hf.get(key, default)
    if name not in HF_ACTIVATIONS:
        raise CheckpointError(f"{CONFIG}: unsupported {key}={name!r} (supported: {', '.join(HF_ACTIVATIONS)})")
    return HF_ACTIVATIONS[name]


def linear(name: str, n_out: int, n_in: int) -> dict[str, Take]:
    """An nn.Linear stored as nn.Linear: weight (out, in) and bias (out,)."""
    return {"weight": Take(f"{name}.weight", (n_out, n_in)), "bias": Take(f"{name}.bias", (n_out,))}


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


def put(out: dict[str, Take], prefix: str, parts: dict[str, Take]) -> None:
    """Add a module's weights (`parts`) to the plan under our module name `prefix`."""
    for key, take in parts.items():
        out[f"{prefix}.{key}"] = take
