"""Training snapshots: the same model's weights at fixed steps, in one `.safetensors` file.

The app uses them to show how attention forms during training. Tensors are named
`step_000000.<parameter name>`; the metadata holds the format, config, tokenizer, training
facts and the JSON list of steps. Like checkpoints, the file is written atomically and read
without unpickling anything.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from transformer.checkpoints.format import (
    Checkpoint,
    CheckpointError,
    atomic_save_file,
    check_state_dict,
    read_header,
    read_tagged,
)
from transformer.checkpoints.tokenizer import Tokenizer, TokenizerError
from transformer.model.config import ConfigError, ModelConfig
from transformer.model.device import pick_device
from transformer.model.network import TransformerModel

FORMAT = "attnviz-snapshots/1"


def step_prefix(step: int) -> str:
    return f"step_{step:06d}."


def save_snapshots(
    path: str | os.PathLike,
    snapshots: list[tuple[int, dict[str, torch.Tensor]]],
    config: ModelConfig,
    tokenizer: Tokenizer,
    training: dict | None = None,
    dtype: torch.dtype = torch.float32,
) -> Path:
    """Write (step, state_dict) pairs into one file; `dtype` lets large models store float16."""
    steps = sorted({step for step, _ in snapshots})
    if len(steps) != len(snapshots):
        raise ValueError("each step may have only one snapshot")
    tensors = {step_prefix(step) + name: t.detach().to("cpu", dtype) for step, state in snapshots for name, t in state.items()}
    metadata = {
        "format": FORMAT,
        "config": config.to_json(),
        "tokenizer": tokenizer.to_json(),
        "training": json.dumps(training or {}, sort_keys=True),
        "steps": json.dumps(steps),
    }
    return atomic_save_file(tensors, path, metadata)


def read_snapshot_states(
    path: str | os.PathLike,
) -> tuple[ModelConfig, Tokenizer, dict, list[tuple[int, dict[str, torch.Tensor]]]]:
    """Parse a snapshots file: (config, tokenizer, training, [(step, state_dict), ...] in step order)."""
    path = Path(path)
    metadata, tensors = read_tagged(path, FORMAT, "snapshots file")
    try:
        config = ModelConfig.from_json(metadata["config"])
        tokenizer = Tokenizer.from_json(metadata["tokenizer"])
        training = json.loads(metadata.get("training", "{}"))
        steps = [int(s) for s in json.loads(metadata["steps"])]
    except (KeyError, ValueError, TypeError, ConfigError, TokenizerError) as e:
        raise CheckpointError(f"{path.name}: bad snapshots metadata: {e}") from e
    states = []
    for step in steps:
        prefix = step_prefix(step)
        states.append((step, {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}))
    n_used = sum(len(s) for _, s in states)
    if n_used != len(tensors):
        raise CheckpointError(f"{path.name}: {len(tensors) - n_used} tensor(s) belong to no listed step")
    return config, tokenizer, training, states


def stored_dtypes(path: str | os.PathLike) -> tuple[str, ...]:
    """The dtypes the snapshot tensors are stored in, e.g. ("float16",), read from the file's header alone.

    `load_snapshots` casts every tensor to float32, so the stored precision is only known here.
    """
    _, layout = read_header(Path(path))
    return tuple(sorted({str(dtype).removeprefix("torch.") for _, dtype in layout.values()}))


def load_snapshots(path: str | os.PathLike, device: str | torch.device | None = None) -> list[tuple[int, Checkpoint]]:
    """Every snapshot as (step, Checkpoint), in step order; models in eval mode, no grad, float32."""
    config, tokenizer, training, states = read_snapshot_states(path)
    stem = Path(path).name.split(".")[0]
    out = []
    for step, state in states:
        check_state_dict(config, state, f"{Path(path).name} step {step}")
        model = TransformerModel.from_weights(config, state)
        model.eval().requires_grad_(False)
        model.to(pick_device(device))
        info = {**training, "snapshot_step": step}
        out.append((step, Checkpoint(model=model, tokenizer=tokenizer, training=info, name=f"{stem}@{step}")))
    return out
