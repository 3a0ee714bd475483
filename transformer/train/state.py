"""The resumable training state, in a sidecar `.safetensors` file next to the checkpoint (never a pickle).

Tensors: `model.<name>` (weights), `optim.<param index>.<key>` (AdamW moments and step),
`rng.torch` (the CPU generator). Metadata: the step, the run's plan (its arguments), AdamW's
param_groups, the evaluation history and the wall time so far, all as JSON. The learning rate
is a pure function of the step, so the step is the whole scheduler state.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from transformer.checkpoints.format import atomic_save_file, read_tagged

FORMAT = "attnviz-train-state/1"


@dataclass(frozen=True)
class TrainState:
    """Everything needed to continue a run exactly where it stopped."""

    step: int
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]  # a torch optimizer state_dict
    rng: torch.Tensor  # torch.get_rng_state()
    plan: dict[str, Any]
    history: list[dict[str, Any]]
    wall_time_s: float
    tokenizer: str  # the tokenizer's JSON, trained once at the start of the run


def state_path(checkpoint_path: str | os.PathLike) -> Path:
    """Default sidecar: `x.safetensors` -> `x.state.safetensors`."""
    p = Path(checkpoint_path)
    return p.with_name(p.name.removesuffix(".safetensors") + ".state.safetensors")


def save_train_state(path: str | os.PathLike, state: TrainState) -> Path:
    """Write the state atomically (temp file + rename)."""
    tensors = {f"model.{k}": v for k, v in state.model.items()}
    for idx, per_param in state.optimizer["state"].items():
        for key, value in per_param.items():
            tensors[f"optim.{idx}.{key}"] = value if isinstance(value, torch.Tensor) else torch.tensor(value)
    tensors["rng.torch"] = state.rng
    metadata = {
        "format": FORMAT,
        "step": str(state.step),
        "plan": json.dumps(state.plan, sort_keys=True),
        "param_groups": json.dumps(state.optimizer["param_groups"]),
        "history": json.dumps(state.history),
        "wall_time_s": repr(state.wall_time_s),
        "tokenizer": state.tokenizer,
    }
    return atomic_save_file(tensors, path, metadata)


def load_train_state(path: str | os.PathLike) -> TrainState:
    """Read a sidecar written by `save_train_state`; raises CheckpointError if it is not one."""
    path = Path(path)
    metadata, tensors = read_tagged(path, FORMAT, "training-state file")
    model = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    optim_state: dict[int, dict[str, torch.Tensor]] = {}
    for k, v in tensors.items():
        if k.startswith("optim."):
            _, idx, key = k.split(".", 2)
            optim_state.setdefault(int(idx), {})[key] = v
    return TrainState(
        step=int(metadata["step"]),
        model=model,
        optimizer={"state": optim_state, "param_groups": json.loads(metadata["param_groups"])},
        rng=tensors["rng.torch"],
        plan=json.loads(metadata["plan"]),
        history=json.loads(metadata["history"]),
        wall_time_s=float(metadata["wall_time_s"]),
        tokenizer=metadata["tokenizer"],
    )
