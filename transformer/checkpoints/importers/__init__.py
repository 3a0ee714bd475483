"""Import Hugging Face-format folders into our TransformerModel, one file per family beside this one.

A folder holds `config.json`, the weights (`model.safetensors`, or shards listed in
`model.safetensors.index.json`, or `pytorch_model.bin` and its shards, read only through
`torch.load(weights_only=True)`: `weights.py`) and `tokenizer.json` (or, in a Marian folder, its source.spm and
vocab.json: `spm.py`). Each family (`bert.py`: BERT and MiniLM, `distilbert.py`, `gpt2.py`) maps its config onto
`ModelConfig` and its tensor names onto ours (`parts.py`: how); every weight the model needs must be present with
the expected shape, every weight it does not use must be a known head (BERT's pooler, an MLM head) and is listed in
the training metadata under "ignored". Anything else raises `CheckpointError` saying which field or tensor is the
problem.
`load_any` opens whatever a path holds: such a folder, a nanoGPT checkpoint (`nanogpt.py`), or one of ours.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import pkgutil
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from tokenizers import processors
from torch import Tensor

from transformer.checkpoints import spm
from transformer.checkpoints.budget import MIN_TRACE_TOKENS, Budget, default_budget, light_pass_bytes
from transformer.checkpoints.format import (
    FLOAT_DTYPES,
    Checkpoint,
    CheckpointError,
    TensorInfo,
    check_budget,
    check_state_dict,
    load_checkpoint,
)
from transformer.checkpoints.importers.nanogpt import CKPT as NANOGPT_CKPT
from transformer.checkpoints.importers.nanogpt import load_nanogpt
from transformer.checkpoints.importers.parts import CONFIG, TOKENIZER, Family, Take
from transformer.checkpoints.importers.weights import open_weights, weight_files
from transformer.checkpoints.tokenizer import PAD, Tokenizer, TokenizerError
from transformer.decoding import DecodingError, from_generation_config
from transformer.model.config import ConfigError, ModelConfig
from transformer.model.device import pick_device
from transformer.model.network import TransformerModel


def _families() -> dict[str, Family]:
    """Every family module beside this one (a module that defines FAMILY), by model_type."""
    found = {}
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        family = getattr(module, "FAMILY", None)
        if isinstance(family, Family):
            found[family.model_type] = family
    return dict(sorted(found.items()))


FAMILIES = _families()
MAX_CONFIG_BYTES = 1_000_000  # a config.json is a few kB; a larger one is not a config
TOKENIZER_CONFIG = "tokenizer_config.json"  # optional: says whether a BOS token starts every text
GENERATION_CONFIG = "generation_config.json"  # optional: how an encoder-decoder's generate starts and stops


def _read_config(folder: Path, name: str = CONFIG) -> dict[str, Any]:
    path = folder / name
    if not path.is_file():
        raise CheckpointError(f"{folder}: no {name} (not a Hugging Face model folder?)")
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise CheckpointError(f"{name} is {path.stat().st_size:,} bytes: too large for a model config (at most 1 MB)")
    try:
        hf = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{name} is not valid JSON: {e}") from e
    if not isinstance(hf, dict):
        raise CheckpointError(f"{name} must be a JSON object, got {type(hf).__name__}")
    return hf


def _decoding(folder: Path, hf: dict[str, Any], family: Family, vocab_size: int) -> dict[str, Any]:
    """An encoder-decoder's generation settings as `generate` reads them: generation_config.json when the folder
    has one, else config.json's fields over the family config class's defaults (`decoding.from_generation_config`).

    A generation_config.json without a start or an end token (transformers' own generate refuses to run then)
    takes them from config.json, else from the family's defaults (T5 starts with <pad>, id 0).
    """
    fallback = {**family.generation, **{k: v for k, v in hf.items() if v is not None}}
    has_file = (folder / GENERATION_CONFIG).is_file()
    settings = _read_config(folder, GENERATION_CONFIG) if has_file else fallback
    if settings.get("decoder_start_token_id") is None and settings.get("bos_token_id") is None:
        settings = {**settings, "decoder_start_token_id": fallback.get("decoder_start_token_id", fallback.get("bos_token_id"))}
    if settings.get("eos_token_id") is None:
        settings = {**settings, "eos_token_id": fallback.get("eos_token_id")}
    try:
        return from_generation_config(settings, vocab_size).to_facts()
    except DecodingError as e:
        raise CheckpointError(f"{GENERATION_CONFIG if has_file else CONFIG}: {e}") from e


def _tie_when_no_head(cfg: ModelConfig, family: Family, names: dict[str, TensorInfo]) -> ModelConfig:
    """A model whose head may be its own (T5) but whose file holds none reads its head from the embedding: tied."""
    head = family.weights(cfg).get("lm_head.weight")
    if cfg.tie_embeddings or head is None or head.fallback is None or head.name in names:
        return cfg
    return dataclasses.replace(cfg, tie_embeddings=True)


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


def _read_weights(folder: Path, judge: Callable[[str, dict[str, TensorInfo]], object]) -> tuple[str, dict[str, Tensor]]:
    """The folder's tensors (one file or its shards: `weights.py`), read only after `judge(source, layout)` accepted
    every tensor's name, shape and dtype (from the safetensors headers: no tensor data read yet)."""
    files = weight_files(folder)
    layout, read = open_weights(folder, files)
    judge(files.source, layout)
    return files.source, read()


def _tokenizer_files(folder: Path) -> str:
    """Which tokenizer the folder has: tokenizer.json, else Marian's source.spm and vocab.json (`spm.py`); else why none."""
    if (folder / TOKENIZER).is_file():
        return TOKENIZER
    if spm.is_marian(folder):
        return spm.VOCAB
    if (folder / spm.M2M_SPM).is_file():
        raise CheckpointError(f"no {TOKENIZER}: M2M-100's {spm.M2M_SPM} is not converted; a folder with {TOKENIZER} opens")
    raise CheckpointError(
        f"{folder}: no {TOKENIZER} (the fast-tokenizer file) and no Marian {spm.SOURCE_SPM} with {spm.VOCAB}: the "
        "tokenizer is read from one of them"
    )


def _read_tokenizer(folder: Path) -> Tokenizer:
    if _tokenizer_files(folder) == spm.VOCAB:
        return Tokenizer(spm.read_marian(folder))
    path = folder / TOKENIZER
    try:
        tok = Tokenizer.from_json(path.read_text(encoding="utf-8"))
    except (TokenizerError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{TOKENIZER}: {e}") from e
    # A saved tokenizer may pad every text to a fixed length or cut it (MiniLM's: both at 128). We show one
    # text at a time and our Tokenizer.encode truncates at the model's max_len itself, recording how much.
    tok.inner.no_padding()
    tok.inner.no_truncation()
    _apply_bos_setting(tok, folder)
    return tok


def _apply_bos_setting(tok: Tokenizer, folder: Path) -> None:
    """tokenizer_config.json's `add_bos_token: true` for a tokenizer.json that has no template of its own.

    transformers 4's Llama tokenizers built the BOS template from this setting; a tokenizer.json that already
    has a post-processor is kept as it is (transformers 5 reads only tokenizer.json's own for these tokenizers).
    """
    path = folder / TOKENIZER_CONFIG
    if tok.inner.post_processor is not None or not path.is_file() or path.stat().st_size > MAX_CONFIG_BYTES:
        return
    try:
        settings = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return  # optional: tokenizer.json alone is a complete tokenizer
    if not isinstance(settings, dict) or settings.get("add_bos_token") is not True:
        return
    bos = settings.get("bos_token")
    bos = bos.get("content") if isinstance(bos, dict) else bos
    bos_id = tok.token_id(bos) if isinstance(bos, str) else None
    if bos_id is not None:
        tok.inner.post_processor = processors.TemplateProcessing(single=f"{bos} $A", special_tokens=[(bos, bos_id)])


def _normalise_names(tensors: dict[str, Tensor], family: Family) -> dict[str, Tensor]:
    """Drop the family prefix of task-head models and rename TF-era LayerNorm gamma/beta to weight/bias."""
    out = {}
    for name, t in tensors.items():
        if name.startswith(family.prefix):
            name = name[len(family.prefix) :]
        name = re.sub(r"(LayerNorm|layer_norm)\.gamma$", r"\1.weight", re.sub(r"(LayerNorm|layer_norm)\.beta$", r"\1.bias", name))
        out[name] = t
    return out


def _check_plan(cfg: ModelConfig, family: Family, layout: dict[str, TensorInfo], source: str) -> tuple[dict[str, Take], list]:
    """The family's plan for `cfg`, once every tensor it takes is in `layout` with its shape and a float dtype,
    and every other tensor is one the family knowingly leaves out (returned by name)."""
    plan = family.weights(cfg)
    for name, take in plan.items():
        tensor = take.source(layout)
        if tensor not in layout:
            raise CheckpointError(f"{source}: missing weight {take.name!r} (needed for our {name})")
        shape, dtype = layout[tensor]
        if tuple(shape) != take.shape:
            raise CheckpointError(f"{source}: {tensor} has shape {tuple(shape)}, but {CONFIG} implies {take.shape}")
        if dtype not in FLOAT_DTYPES:
            raise CheckpointError(f"{source}: {tensor} has dtype {dtype}, expected a floating-point tensor")
    used = {take.source(layout) for take in plan.values()}
    rest = sorted(set(layout) - used)
    unknown = [n for n in rest if not re.fullmatch(family.ignorable, n)]
    if unknown:
        more = " …" if len(unknown) > 5 else ""
        raise CheckpointError(f"{source}: unexpected weight(s) {', '.join(unknown[:5])}{more} (an unsupported head?)")
    return plan, rest


def _map_weights(cfg: ModelConfig, family: Family, tensors: dict[str, Tensor], source: str) -> tuple[dict[str, Tensor], list]:
    """Our state dict from the HF tensors, plus the names of the HF tensors we leave out."""
    plan, rest = _check_plan(cfg, family, {k: (tuple(t.shape), t.dtype) for k, t in tensors.items()}, source)
    return {name: take.convert(tensors[take.source(tensors)].float()) for name, take in plan.items()}, rest


def fit_context(cfg: ModelConfig, budget: Budget | None = None) -> ModelConfig:
    """A rotary or relative-position model (no position table) with max_len lowered until the light pass of a text
    that long fits the budget.

    Its context (up to parts.ROPE_MAX_LEN tokens) is how much of a text the app reads, not a size of the
    model: a model whose 2048-token light pass needs more than this server's trace budget (a 150 000-token
    vocabulary's logits) still opens, reading fewer tokens. Other models keep their max_len.
    """
    if cfg.positional not in ("rope", "relative"):
        return cfg
    limit = (default_budget() if budget is None else budget).trace_bytes
    lo, hi = min(cfg.max_len, MIN_TRACE_TOKENS), cfg.max_len
    if light_pass_bytes(cfg, hi) <= limit:
        return cfg
    while lo < hi:  # the longest max_len whose light pass fits (light_pass_bytes grows with it)
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if light_pass_bytes(cfg, mid) <= limit else (lo, mid - 1)
    return dataclasses.replace(cfg, max_len=lo)  # too little even for MIN_TRACE_TOKENS: check_budget says why


def _config_of(hf: dict[str, Any], family: Family, pad: int) -> ModelConfig:
    try:
        fields = {"positional": "learned", "scale_embeddings": False, **family.config(hf)}
        return ModelConfig(**fields, dropout=0.0, pad_id=pad)
    except (ConfigError, TypeError) as e:
        raise CheckpointError(f"{CONFIG}: cannot describe a working model: {e}") from e


def _check_budget(cfg: ModelConfig, hf: dict[str, Any], budget: Budget | None) -> None:
    """`check_budget`, saying when a 16-bit file is why: weights are computed in float32, twice their stored size."""
    try:
        check_budget(cfg, CONFIG, budget)
    except CheckpointError as e:
        stored = hf.get("dtype") or hf.get("torch_dtype")
        if stored in ("bfloat16", "float16"):
            raise CheckpointError(
                f"{e} — its weights are stored in {stored} and computed here in float32, which takes twice the file's size; "
                "a server owner can raise the limit with ATTNVIZ_MAX_MODEL_MB"
            ) from e
        raise


def _check_tied_head(cfg: ModelConfig, family: Family, tensors: dict[str, Tensor], source: str) -> None:
    """Refuse a "tied" model whose file holds a different head: transformers 4 used the embedding, 5 uses the head."""
    if not cfg.tie_embeddings or cfg.kind != "decoder":
        return
    embed = tensors[family.weights(cfg)["tok_embed.weight"].name]
    for name in ("lm_head.weight", "embed_out.weight"):
        head = tensors.get(name)
        if head is not None and head.shape == embed.shape and not torch.equal(head, embed):
            raise CheckpointError(
                f"{source}: {CONFIG} says tie_word_embeddings=true, but the file's {name} differs from the token embedding "
                "(transformers 4 would use the embedding, transformers 5 the file's head): set tie_word_embeddings to the "
                "one you mean"
            )


def judge_folder(path: str | os.PathLike, budget: Budget | None = None) -> str:
    """Whether a Hugging Face folder can be opened, judged without reading a weight: its model_type, or CheckpointError.

    From config.json (family, fields, the memory budget) and the file names: tokenizer.json (or Marian's
    source.spm and vocab.json), and the weights (one file, or an index whose every shard is present). Only
    config.json and a shard index are read; nothing is written. The model pickers (`sources.py`) offer a folder only if this passes.
    """
    folder = Path(path)
    hf = _read_config(folder)
    family = _family(hf)
    _tokenizer_files(folder)
    weight_files(folder)
    _check_budget(fit_context(_config_of(hf, family, 0), budget), hf, budget)
    return family.model_type


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
    cfg = _config_of(hf, family, 0 if pad is None else pad)
    if tokenizer.vocab_size > cfg.vocab_size:
        raise CheckpointError(
            f"{_tokenizer_files(folder)} has {tokenizer.vocab_size} tokens, {CONFIG} vocab_size is {cfg.vocab_size}"
        )
    cfg = fit_context(cfg, budget)
    _check_budget(cfg, hf, budget)  # the weights are read only for a model this server can hold
    decoding = _decoding(folder, hf, family, cfg.vocab_size) if cfg.kind == "encoder-decoder" else None

    def judge(source: str, layout: dict[str, TensorInfo]) -> None:
        nonlocal cfg
        names = _normalise_names(layout, family)
        cfg = _tie_when_no_head(cfg, family, names)
        _check_plan(cfg, family, names, source)

    source, raw = _read_weights(folder, judge)
    named = _normalise_names(raw, family)
    state, ignored = _map_weights(cfg, family, named, source)
    _check_tied_head(cfg, family, named, source)
    family.check(cfg, named, source)
    check_state_dict(cfg, state, source)  # also refuses NaN/inf weights
    model = TransformerModel.from_weights(cfg, state)
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
    if decoding is not None:
        training["decoding"] = decoding
    if cfg.positional == "rope" and cfg.max_len < int(hf.get("max_position_embeddings", cfg.max_len)):
        training["context"] = f"reads at most {cfg.max_len:,} tokens of its {int(hf['max_position_embeddings']):,}"
    return Checkpoint(model=model, tokenizer=tokenizer, training=training, name=folder.name)


def kind_of(path: str | os.PathLike) -> str | None:
    """What `path` holds, from names alone: "huggingface" (a folder with config.json), "nanogpt" (a folder with
    ckpt.pt, or a ckpt.pt), "ours" (a .safetensors file, or a legacy .pt/.bin of ours), or None."""
    path = Path(path)
    if path.is_dir():
        if (path / CONFIG).is_file():
            return "huggingface"
        return "nanogpt" if (path / NANOGPT_CKPT).is_file() else None
    if path.name == NANOGPT_CKPT:
        return "nanogpt"
    return "ours" if path.suffix in (".safetensors", ".pt", ".pth", ".bin") else None


def load_any(path: str | os.PathLike, device: str | torch.device | None = None, budget: Budget | None = None) -> Checkpoint:
    """The app's one entry point: a Hugging Face folder, a nanoGPT ckpt.pt (or its folder), or one of our checkpoints."""
    kind = kind_of(path)
    if kind == "huggingface":
        return load_hf_dir(path, device, budget)
    if kind == "nanogpt":
        return load_nanogpt(path, device, budget)
    if Path(path).is_dir():
        raise CheckpointError(f"{path}: neither a Hugging Face folder ({CONFIG}) nor a nanoGPT folder ({NANOGPT_CKPT})")
    return load_checkpoint(path, device, budget)
