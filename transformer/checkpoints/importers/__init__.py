"""Import Hugging Face-format BERT, MiniLM, DistilBERT and GPT-2 folders into our TransformerModel.

A folder holds `config.json`, the weights (`model.safetensors`, or `pytorch_model.bin` read only through
`torch.load(weights_only=True)`) and `tokenizer.json`. Each family maps its config onto `ModelConfig` and
its tensor names onto ours; every weight the model needs must be present with the expected shape, every
weight it does not use must be a known head (BERT's pooler, an MLM head) and is listed in the training
metadata under "ignored". Anything else raises `CheckpointError` saying which field or tensor is the problem.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
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
from transformer.checkpoints.tokenizer import PAD, Tokenizer, TokenizerError
from transformer.model.config import ConfigError, ModelConfig
from transformer.model.device import pick_device
from transformer.model.network import TransformerModel

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


def _get(hf: dict[str, Any], key: str, default: Any = ...) -> Any:
    if key in hf and hf[key] is not None:
        return hf[key]
    if default is ...:
        raise CheckpointError(f"{CONFIG}: required field {key!r} is missing")
    return default


def _require(hf: dict[str, Any], key: str, allowed: tuple, default: Any) -> None:
    """Refuse an option whose value would change the computation in a way our model cannot reproduce."""
    value = hf.get(key, default)
    if value not in allowed:
        raise CheckpointError(f"{CONFIG}: unsupported {key}={value!r} (supported: {', '.join(map(repr, allowed))})")


def _activation(hf: dict[str, Any], key: str, default: str) -> str:
    name = hf.get(key, default)
    if name not in HF_ACTIVATIONS:
        raise CheckpointError(f"{CONFIG}: unsupported {key}={name!r} (supported: {', '.join(HF_ACTIVATIONS)})")
    return HF_ACTIVATIONS[name]


def _linear(name: str, n_out: int, n_in: int) -> dict[str, Take]:
    """An nn.Linear stored as nn.Linear: weight (out, in) and bias (out,)."""
    return {"weight": Take(f"{name}.weight", (n_out, n_in)), "bias": Take(f"{name}.bias", (n_out,))}


def _norm(name: str, d: int) -> dict[str, Take]:
    return {"weight": Take(f"{name}.weight", (d,)), "bias": Take(f"{name}.bias", (d,))}


def _conv1d(name: str, n_in: int, n_out: int, part: int = 0, n_parts: int = 1) -> dict[str, Take]:
    """GPT-2's Conv1D stores weight as (in, out): transpose it; a fused q|k|v is cut into n_parts along out."""
    width = n_out // n_parts
    cols = slice(part * width, (part + 1) * width)
    return {
        "weight": Take(f"{name}.weight", (n_in, n_out), lambda t: t[:, cols].t().contiguous()),
        "bias": Take(f"{name}.bias", (n_out,), lambda t: t[cols].clone()),
    }


def _flatten(out: dict[str, Take], prefix: str, parts: dict[str, Take]) -> None:
    for key, take in parts.items():
        out[f"{prefix}.{key}"] = take


# --- BERT (and MiniLM, which is a small BERT): post-LN, embedding LayerNorm, segment embeddings ---------------


def _bert_config(hf: dict[str, Any]) -> dict[str, Any]:
    _require(hf, "position_embedding_type", ("absolute",), "absolute")
    _require(hf, "is_decoder", (False,), False)
    _require(hf, "add_cross_attention", (False,), False)
    return dict(
        kind="encoder",
        norm_first=False,  # post-LN: norm(x + f(x))
        vocab_size=_get(hf, "vocab_size"),
        n_layers=_get(hf, "num_hidden_layers"),
        n_heads=_get(hf, "num_attention_heads"),
        d_model=_get(hf, "hidden_size"),
        d_ff=_get(hf, "intermediate_size"),
        max_len=_get(hf, "max_position_embeddings"),
        n_token_types=_get(hf, "type_vocab_size", 2),
        activation=_activation(hf, "hidden_act", "gelu"),
        layer_norm_eps=float(_get(hf, "layer_norm_eps", 1e-12)),
    )


def _bert_weights(cfg: ModelConfig) -> dict[str, Take]:
    d, f = cfg.d_model, cfg.d_ff
    out = {
        "tok_embed.weight": Take("embeddings.word_embeddings.weight", (cfg.vocab_size, d)),
        "encoder.embed.positions.weight": Take("embeddings.position_embeddings.weight", (cfg.max_len, d)),
        "encoder.embed.token_types.weight": Take("embeddings.token_type_embeddings.weight", (cfg.n_token_types, d)),
    }
    _flatten(out, "encoder.embed.norm", _norm("embeddings.LayerNorm", d))
    for i in range(cfg.n_layers):
        ours, hf = f"encoder.layers.{i}", f"encoder.layer.{i}"
        for proj, name in (("q", "query"), ("k", "key"), ("v", "value")):
            _flatten(out, f"{ours}.self_attn.{proj}_proj", _linear(f"{hf}.attention.self.{name}", d, d))
        _flatten(out, f"{ours}.self_attn.out_proj", _linear(f"{hf}.attention.output.dense", d, d))
        _flatten(out, f"{ours}.attn_block.norm", _norm(f"{hf}.attention.output.LayerNorm", d))
        _flatten(out, f"{ours}.feed_forward.up", _linear(f"{hf}.intermediate.dense", f, d))
        _flatten(out, f"{ours}.feed_forward.down", _linear(f"{hf}.output.dense", d, f))
        _flatten(out, f"{ours}.ff_block.norm", _norm(f"{hf}.output.LayerNorm", d))
    return out


# --- DistilBERT: BERT without segment embeddings; its LayerNorm eps is fixed at 1e-12 --------------------------


def _distilbert_config(hf: dict[str, Any]) -> dict[str, Any]:
    # sinusoidal_pos_embds=True only changes how the position table is initialised; the table itself is in
    # the file and is loaded as-is, so either value is supported (recorded in the training metadata).
    return dict(
        kind="encoder",
        norm_first=False,  # post-LN: norm(x + f(x))
        vocab_size=_get(hf, "vocab_size"),
        n_layers=_get(hf, "n_layers"),
        n_heads=_get(hf, "n_heads"),
        d_model=_get(hf, "dim"),
        d_ff=_get(hf, "hidden_dim"),
        max_len=_get(hf, "max_position_embeddings"),
        n_token_types=0,
        activation=_activation(hf, "activation", "gelu"),
        layer_norm_eps=1e-12,
    )


def _distilbert_weights(cfg: ModelConfig) -> dict[str, Take]:
    d, f = cfg.d_model, cfg.d_ff
    out = {
        "tok_embed.weight": Take("embeddings.word_embeddings.weight", (cfg.vocab_size, d)),
        "encoder.embed.positions.weight": Take("embeddings.position_embeddings.weight", (cfg.max_len, d)),
    }
    _flatten(out, "encoder.embed.norm", _norm("embeddings.LayerNorm", d))
    for i in range(cfg.n_layers):
        ours, hf = f"encoder.layers.{i}", f"transformer.layer.{i}"
        for proj in ("q", "k", "v", "out"):
            _flatten(out, f"{ours}.self_attn.{proj}_proj", _linear(f"{hf}.attention.{proj}_lin", d, d))
        _flatten(out, f"{ours}.attn_block.norm", _norm(f"{hf}.sa_layer_norm", d))
        _flatten(out, f"{ours}.feed_forward.up", _linear(f"{hf}.ffn.lin1", f, d))
        _flatten(out, f"{ours}.feed_forward.down", _linear(f"{hf}.ffn.lin2", d, f))
        _flatten(out, f"{ours}.ff_block.norm", _norm(f"{hf}.output_layer_norm", d))
    return out


# --- GPT-2: pre-LN decoder with a final LayerNorm, Conv1D weights, fused q|k|v, tied LM head --------------------


def _gpt2_config(hf: dict[str, Any]) -> dict[str, Any]:
    _require(hf, "scale_attn_weights", (True,), True)
    _require(hf, "scale_attn_by_inverse_layer_idx", (False,), False)
    _require(hf, "reorder_and_upcast_attn", (False,), False)
    _require(hf, "add_cross_attention", (False,), False)
    d = _get(hf, "n_embd")
    return dict(
        kind="decoder",
        vocab_size=_get(hf, "vocab_size"),
        n_layers=_get(hf, "n_layer"),
        n_heads=_get(hf, "n_head"),
        d_model=d,
        d_ff=_get(hf, "n_inner", 4 * d),
        max_len=_get(hf, "n_positions"),
        activation=_activation(hf, "activation_function", "gelu_new"),
        layer_norm_eps=float(_get(hf, "layer_norm_epsilon", 1e-5)),
        norm_first=True,
        final_norm=True,
        tie_embeddings=bool(hf.get("tie_word_embeddings", True)),
    )


def _gpt2_weights(cfg: ModelConfig) -> dict[str, Take]:
    d, f = cfg.d_model, cfg.d_ff
    out = {
        "tok_embed.weight": Take("wte.weight", (cfg.vocab_size, d)),
        "decoder.embed.positions.weight": Take("wpe.weight", (cfg.max_len, d)),
    }
    for i in range(cfg.n_layers):
        ours, hf = f"decoder.layers.{i}", f"h.{i}"
        for part, proj in enumerate(("q", "k", "v")):
            _flatten(out, f"{ours}.self_attn.{proj}_proj", _conv1d(f"{hf}.attn.c_attn", d, 3 * d, part, 3))
        _flatten(out, f"{ours}.self_attn.out_proj", _conv1d(f"{hf}.attn.c_proj", d, d))
        _flatten(out, f"{ours}.attn_block.norm", _norm(f"{hf}.ln_1", d))
        _flatten(out, f"{ours}.feed_forward.up", _conv1d(f"{hf}.mlp.c_fc", d, f))
        _flatten(out, f"{ours}.feed_forward.down", _conv1d(f"{hf}.mlp.c_proj", f, d))
        _flatten(out, f"{ours}.ff_block.norm", _norm(f"{hf}.ln_2", d))
    _flatten(out, "decoder.final_norm", _norm("ln_f", d))
    if not cfg.tie_embeddings:
        out["lm_head.weight"] = Take("lm_head.weight", (cfg.vocab_size, d))
    return out


FAMILIES = {
    f.model_type: f
    for f in (
        Family(
            "bert",
            ("BertModel", "BertForMaskedLM", "BertForPreTraining"),
            "bert.",
            r"(pooler\..*|cls\..*|embeddings\.position_ids)",
            _bert_config,
            _bert_weights,
        ),
        Family(
            "distilbert",
            ("DistilBertModel", "DistilBertForMaskedLM"),
            "distilbert.",
            r"(vocab_transform\..*|vocab_layer_norm\..*|vocab_projector\..*|embeddings\.position_ids)",
            _distilbert_config,
            _distilbert_weights,
        ),
        Family(
            "gpt2",
            ("GPT2Model", "GPT2LMHeadModel"),
            "transformer.",
            r"(h\.\d+\.attn\.(bias|masked_bias)|lm_head\.weight)",  # causal-mask buffers; the head tied to wte
            _gpt2_config,
            _gpt2_weights,
        ),
    )
}


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
                          embed_norm=family.model_type != "gpt2", pad_id=0 if pad is None else pad)  # fmt: skip
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
    }
    if family.model_type == "distilbert":
        training["sinusoidal_pos_embds"] = bool(hf.get("sinusoidal_pos_embds", False))
    return Checkpoint(model=model, tokenizer=tokenizer, training=training, name=folder.name)


def load_any(path: str | os.PathLike, device: str | torch.device | None = None, budget: Budget | None = None) -> Checkpoint:
    """The app's one entry point: a Hugging Face folder or one of our `.safetensors` checkpoints."""
    return load_hf_dir(path, device, budget) if Path(path).is_dir() else load_checkpoint(path, device, budget)
