"""Import Hugging Face-format folders into our TransformerModel, one file per family beside this one.

A folder holds `config.json`, the weights (`model.safetensors`, or `pytorch_model.bin` read only through
`torch.load(weights_only=True)`) and `tokenizer.json`. Each family (`bert.py`: BERT and MiniLM,
`distilbert.py`, `gpt2.py`) maps its config onto `ModelConfig` and its tensor names onto ours
(`parts.py`: how); every weight the model needs must be present with the expected shape, every
weight it does not use must be a known head (BERT's pooler, an MLM head) and is listed in the training
metadata under "ignored". Anything else raises `CheckpointError` saying which field or tensor is the problem.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from transformer.checkpoints.budget import Budget
from transformer.checkpoints.format import (
    Checkpoint,
    CheckpointError,
    check_budget,
    check_state_dict,
    load_checkpoint,
    read_safetensors,
)
from transformer.checkpoints.importers import bert, distilbert, gpt2
from transformer.checkpoints.importers.parts import CONFIG, PICKLE, SAFETENSORS, TOKENIZER, Family
from transformer.checkpoints.tokenizer import PAD, Tokenizer, TokenizerError
from transformer.model.config import ConfigError, ModelConfig
from transformer.model.device import pick_device
from transformer.model.network import TransformerModel

FAMILIES = {f.model_type: f for f in (bert.FAMILY, distilbert.FAMILY, gpt2.FAMILY)}


def _read_config(folder: Path) -> dict[str, Any]:
    path = folder / CONFIG
    if not path.is_file():
        raise CheckpointError(f"{folder}: no {CONFIG} (not a Hugging Face model folder?)")
    try:
        hf = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{CONFIG} is not valid JSON: {e}") from e
    if not isinstance(hf, dict):
        raise CheckpointError(f"{CONFIG} must be a JSON object, got {type(hf).__name__}")
    return hf


def _family(hf: dict[str, Any]) -> Family:
    model_type = hf.get("model_type")
    if model_type not in FAMILIES:
        raise CheckpointError(f"{CONFIG}: unsupported model_type {model_type!r} (supported: {', '.join(FAMILIES)})")
    family = FAMILIES[model_type]
    architectures = hf.get("architectures") or []
    unknown = [a for a in architectures if a not in family.architectures]
    if unknown:
        raise CheckpointError(
            f"{CONFIG}: unsupported architectures {unknown} (supported for {model_type}: {', '.join(family.architectures)})"
        )
    return family


def _read_weights(folder: Path) -> tuple[str, dict[str, Tensor]]:
    if (folder / SAFETENSORS).is_file():
        return SAFETENSORS, read_safetensors(folder / SAFETENSORS)[1]
    if (folder / PICKLE).is_file():
        try:
            obj = torch.load(folder / PICKLE, map_location="cpu", weights_only=True)
        except Exception as e:
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise CheckpointError(
                f"{PICKLE} was refused: torch.load(weights_only=True) does not accept it (it may contain code). {first}"
            ) from e
        if not isinstance(obj, dict) or not all(isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items()):
            raise CheckpointError(f"{PICKLE} must hold a dict of named tensors")
        return PICKLE, obj
    if any(folder.glob("*.index.json")):
        raise CheckpointError(f"{folder}: sharded weights (*.index.json) are not supported; expected one {SAFETENSORS}")
    raise CheckpointError(f"{folder}: no weights: expected {SAFETENSORS} or {PICKLE}")


def _read_tokenizer(folder: Path) -> Tokenizer:
    path = folder / TOKENIZER
    if not path.is_file():
        raise CheckpointError(f"{folder}: no {TOKENIZER} (only the fast-tokenizer JSON format is supported)")
    try:
        tok = Tokenizer.from_json(path.read_text(encoding="utf-8"))
    except (TokenizerError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{TOKENIZER}: {e}") from e
    # A saved tokenizer may pad every text to a fixed length or cut it (MiniLM's: both at 128). We show one
    # text at a time and our Tokenizer.encode truncates at the model's max_len itself, recording how much.
    tok.inner.no_padding()
    tok.inner.no_truncation()
    return tok


def _normalise_names(tensors: dict[str, Tensor], family: Family) -> dict[str, Tensor]:
    """Drop the family prefix of task-head models and rename TF-era LayerNorm gamma/beta to weight/bias."""
    out = {}
    for name, t in tensors.items():
        if name.startswith(family.prefix):
            name = name[len(family.prefix) :]
        name = re.sub(r"(LayerNorm|layer_norm)\.gamma$", r"\1.weight", re.sub(r"(LayerNorm|layer_norm)\.beta$", r"\1.bias", name))
        out[name] = t
    return out


def _map_weights(cfg: ModelConfig, family: Family, tensors: dict[str, Tensor], source: str) -> tuple[dict[str, Tensor], list]:
    """Our state dict from the HF tensors, plus the names of the HF tensors we leave out."""
    plan = family.weights(cfg)
    ours = {}
    for name, take in plan.items():
        if take.name not in tensors:
            raise CheckpointError(f"{source}: missing weight {take.name!r} (needed for our {name})")
        t = tensors[take.name]
        if tuple(t.shape) != take.shape:
            raise CheckpointError(f"{source}: {take.name} has shape {tuple(t.shape)}, but {CONFIG} implies {take.shape}")
        if not t.is_floating_point():
            raise CheckpointError(f"{source}: {take.name} has dtype {t.dtype}, expected a floating-point tensor")
        ours[name] = take.convert(t.float())
    used = {take.name for take in plan.values()}
    rest = sorted(set(tensors) - used)
    unknown = [n for n in rest if not re.fullmatch(family.ignorable, n)]
    if unknown:
        more = " …" if len(unknown) > 5 else ""
        raise CheckpointError(f"{source}: unexpected weight(s) {', '.join(unknown[:5])}{more} (an unsupported head?)")
    return ours, rest


def load_hf_dir(path: str | os.PathLike, device: str | torch.device | None = None, budget: Budget | None = None) -> Checkpoint:
    """Load a Hugging Face-format folder as our model (eval mode, no grad) with its tokenizer.

    The config is judged against `budget` (default: this server's, see `budget.py`) before the weights are read.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise CheckpointError(f"no model folder at {folder}")
    hf = _read_config(folder)
    family = _family(hf)
    tokenizer = _read_tokenizer(folder)
    pad = tokenizer.token_id(PAD)
    try:
        cfg = ModelConfig(**family.config(hf), dropout=0.0, positional="learned", scale_embeddings=False,
                          pad_id=0 if pad is None else pad)  # fmt: skip
    except (ConfigError, TypeError) as e:
        raise CheckpointError(f"{CONFIG}: cannot describe a working model: {e}") from e
    if tokenizer.vocab_size > cfg.vocab_size:
        raise CheckpointError(f"{TOKENIZER} has {tokenizer.vocab_size} tokens, {CONFIG} vocab_size is {cfg.vocab_size}")
    check_budget(cfg, CONFIG, budget)  # the weights are read only for a model this server can hold
    source, raw = _read_weights(folder)
    state, ignored = _map_weights(cfg, family, _normalise_names(raw, family), source)
    check_state_dict(cfg, state, source)  # also refuses NaN/inf weights
    model = TransformerModel(cfg)
    model.load_state_dict(state, strict=True)
    model.eval().requires_grad_(False)
    model.to(pick_device(device))
    training = {
        "source": "huggingface",
        "model_type": family.model_type,
        "architecture": (hf.get("architectures") or [family.architectures[0]])[0],
        "weights": source,
        "ignored": ignored,
        **family.facts(hf),
    }
    return Checkpoint(model=model, tokenizer=tokenizer, training=training, name=folder.name)


def load_any(path: str | os.PathLike, device: str | torch.device | None = None, budget: Budget | None = None) -> Checkpoint:
    """The app's one entry point: a Hugging Face folder or one of our `.safetensors` checkpoints."""
    return load_hf_dir(path, device, budget) if Path(path).is_dir() else load_checkpoint(path, device, budget)
