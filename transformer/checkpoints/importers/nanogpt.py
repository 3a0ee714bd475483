"""nanoGPT checkpoints (karpathy/nanoGPT's `ckpt.pt`): its GPT-2-shaped model mapped onto ours, with its vocabulary.

A `ckpt.pt` is what nanoGPT's train.py saves with torch.save: {"model_args": {n_layer, n_head, n_embd,
block_size, bias, vocab_size, dropout}, "model": the state dict (names prefixed "_orig_mod." when the
model was torch.compile'd), "iter_num", "best_val_loss", "config", and usually "optimizer"}. It is read
only with torch.load(weights_only=True): tensors and plain containers, never code. The model is GPT-2's
(pre-LN, learned positions, exact GELU, LayerNorm eps 1e-5, LM head tied to the token embedding) with
nn.Linear weights (out, in) where GPT-2 has Conv1D (in, out), and biases only when model_args["bias"].

nanoGPT keeps no tokenizer in its checkpoint; the vocabulary lies beside it: the `meta.pkl` of a
character-level dataset ({"vocab_size", "itos", "stoi"}), or a `tokenizer.json` (GPT-2's, for the
models trained on GPT-2's BPE). meta.pkl is unpickled by an Unpickler that refuses every global, so only
dicts, lists, tuples, strings, numbers, booleans and None can come out of it: nothing in it can run.
"""

from __future__ import annotations

import io
import math
import os
import pickle
import re
from pathlib import Path
from typing import Any

import torch
from tokenizers import Regex, decoders, models, pre_tokenizers
from tokenizers import Tokenizer as HFTokenizer
from torch import Tensor

from transformer.checkpoints.budget import Budget
from transformer.checkpoints.format import (
    FLOAT_DTYPES,
    Checkpoint,
    CheckpointError,
    check_budget,
    check_state_dict,
    expected_shapes,
)
from transformer.checkpoints.importers.parts import TOKENIZER, Take, linear, norm, put
from transformer.checkpoints.tokenizer import Tokenizer, TokenizerError
from transformer.model.config import ConfigError, ModelConfig
from transformer.model.device import pick_device
from transformer.model.network import TransformerModel

CKPT, META = "ckpt.pt", "meta.pkl"
MAX_META_BYTES = 10_000_000  # a character vocabulary is a few kB
MAX_TOKENIZER_BYTES = 100_000_000
SIZES = ("n_layer", "n_head", "n_embd", "block_size", "vocab_size")  # model_args that must be positive integers
COMPILED = "_orig_mod."  # torch.compile's wrapper prefixes every name with this
IGNORED = r"transformer\.h\.\d+\.attn\.bias"  # the causal-mask buffer of nanoGPT's slow attention path
PLAIN = (dict, list, tuple, str, int, float, bool, type(None))  # all that may come out of meta.pkl


def load_nanogpt(path: str | os.PathLike, device: str | torch.device | None = None, budget: Budget | None = None) -> Checkpoint:
    """Load a nanoGPT `ckpt.pt` (or the folder holding it) with the vocabulary beside it, as our model (eval, no grad).

    Judged in this order, each step before the next reads more: a vocabulary is there; the file is
    plain tensors and containers (torch.load(weights_only=True)); model_args describe a model that fits
    `budget` (default: this server's); the state dict's names, shapes and values fit model_args.
    """
    ckpt_path = Path(path) / CKPT if Path(path).is_dir() else Path(path)
    if not ckpt_path.is_file():
        raise CheckpointError(f"no {CKPT} at {ckpt_path}")
    folder = ckpt_path.parent
    tokenizer, vocabulary, unknown = read_vocabulary(folder)
    obj = _read_ckpt(ckpt_path)
    args, state = _parts(obj)
    tied = "lm_head.weight" not in state or _same(state["lm_head.weight"], state.get("transformer.wte.weight"))
    cfg = config_of(args, tied)
    if tokenizer.vocab_size > cfg.vocab_size:
        raise CheckpointError(
            f"the vocabulary ({vocabulary}) has {tokenizer.vocab_size} tokens, model_args vocab_size is {cfg.vocab_size}"
        )
    check_budget(cfg, f"{CKPT} (model_args)", budget)  # the model is built only if this server can hold it
    ours = map_weights(cfg, state, bool(args.get("bias", True)))
    check_state_dict(cfg, ours, CKPT)  # names and shapes again, and NaN/inf weights
    model = TransformerModel.from_weights(cfg, ours)
    model.eval().requires_grad_(False)
    model.to(pick_device(device))
    training = {"source": "nanogpt", "iter_num": _number(obj.get("iter_num")), "best_val_loss": _number(obj.get("best_val_loss"))}
    training["vocabulary"] = vocabulary
    if unknown:
        training["unknown characters"] = unknown
    if isinstance(obj.get("config"), dict) and isinstance(obj["config"].get("dataset"), str):
        training["dataset"] = obj["config"]["dataset"]
    return Checkpoint(model=model, tokenizer=tokenizer, training=training, name=folder.name)


def peek_model_args(path: Path) -> dict[str, Any] | None:
    """A ckpt.pt's model_args without reading its tensors (memory-mapped, weights_only as always), to judge it cheaply.

    None when the file cannot be mapped (torch's legacy, non-zip format): then only loading it tells.
    """
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as e:  # what weights_only refuses: a pickled class or function
        raise CheckpointError(
            f"{CKPT} was refused: torch.load(weights_only=True) does not accept it (it may contain code)"
        ) from e
    except Exception:
        return None
    _check_shape(obj)
    return _parts(obj)[0]


def config_of(args: dict[str, Any], tied: bool = True) -> ModelConfig:
    """Our ModelConfig for nanoGPT's model_args: GPT-2's architecture, with or without biases."""
    bias = bool(args.get("bias", True))
    d = args["n_embd"]
    try:
        return ModelConfig(
            kind="decoder", vocab_size=args["vocab_size"], n_layers=args["n_layer"], n_heads=args["n_head"], d_model=d,
            d_ff=4 * d, max_len=args["block_size"], positional="learned", scale_embeddings=False, activation="gelu",
            layer_norm_eps=1e-5, norm_first=True, final_norm=True, tie_embeddings=tied, dropout=0.0, pad_id=0,
            norm_bias=bias, attn_bias=bias, attn_out_bias=bias, mlp_bias=bias,
        )  # fmt: skip
    except ConfigError as e:
        raise CheckpointError(f"{CKPT}: model_args cannot describe a working model: {e}") from e


def plan(cfg: ModelConfig) -> dict[str, Take]:
    """Where each of our weights comes from in nanoGPT's state dict (every bias included; `map_weights` keeps what the model has)."""
    d, f, v = cfg.d_model, cfg.d_ff, cfg.vocab_size
    out = {
        "tok_embed.weight": Take("transformer.wte.weight", (v, d)),
        "decoder.embed.positions.weight": Take("transformer.wpe.weight", (cfg.max_len, d)),
        "lm_head.weight": Take("lm_head.weight", (v, d)),  # used only when it is not the token embedding itself
    }
    for i in range(cfg.n_layers):
        ours, theirs = f"decoder.layers.{i}", f"transformer.h.{i}"
        for part, proj in enumerate(("q", "k", "v")):  # c_attn is nn.Linear(d, 3d): rows q | k | v
            rows = slice(part * d, (part + 1) * d)
            put(out, f"{ours}.self_attn.{proj}_proj", {
                "weight": Take(f"{theirs}.attn.c_attn.weight", (3 * d, d), lambda t, rows=rows: t[rows].clone()),
                "bias": Take(f"{theirs}.attn.c_attn.bias", (3 * d,), lambda t, rows=rows: t[rows].clone()),
            })  # fmt: skip
        put(out, f"{ours}.self_attn.out_proj", linear(f"{theirs}.attn.c_proj", d, d))
        put(out, f"{ours}.attn_block.norm", norm(f"{theirs}.ln_1", d))
        put(out, f"{ours}.feed_forward.up", linear(f"{theirs}.mlp.c_fc", f, d))
        put(out, f"{ours}.feed_forward.down", linear(f"{theirs}.mlp.c_proj", d, f))
        put(out, f"{ours}.ff_block.norm", norm(f"{theirs}.ln_2", d))
    put(out, "decoder.final_norm", norm("transformer.ln_f", d))
    return out


def map_weights(cfg: ModelConfig, state: dict[str, Tensor], bias: bool) -> dict[str, Tensor]:
    """Our state dict from nanoGPT's: every weight our model has, checked against model_args before it is converted."""
    expected = expected_shapes(cfg, CKPT)
    if not bias and any(name.endswith(".bias") for name in expected):
        raise CheckpointError(
            f"{CKPT}: model_args bias=False (no biases anywhere), but this version of the model cannot leave them out "
            "(ModelConfig's norm_bias, attn_bias, attn_out_bias and mlp_bias are not built yet)"
        )
    where = plan(cfg)
    described = f"n_layer={cfg.n_layers}, n_head={cfg.n_heads}, n_embd={cfg.d_model}, block_size={cfg.max_len}, vocab_size={cfg.vocab_size}"
    ours = {}
    for name in expected:
        take = where[name]
        if take.name not in state:
            raise CheckpointError(f"{CKPT}: missing weight {take.name!r} (needed for our {name})")
        t = state[take.name]
        if tuple(t.shape) != take.shape:
            raise CheckpointError(
                f"{CKPT}: {take.name} has shape {tuple(t.shape)}, but model_args ({described}) imply {take.shape}"
            )
        if t.dtype not in FLOAT_DTYPES:
            raise CheckpointError(f"{CKPT}: {take.name} has dtype {t.dtype}, expected a floating-point tensor")
        ours[name] = take.convert(t.float())
    used = {where[name].name for name in expected}
    if cfg.tie_embeddings:
        used.add("lm_head.weight")  # the same tensor as transformer.wte.weight
    unknown = sorted(n for n in set(state) - used if not re.fullmatch(IGNORED, n))
    if unknown:
        more = " …" if len(unknown) > 5 else ""
        raise CheckpointError(
            f"{CKPT}: unexpected weight(s) {', '.join(unknown[:5])}{more} (not nanoGPT's GPT, or another model_args)"
        )
    return ours


def _read_ckpt(path: Path) -> dict[str, Any]:
    """The checkpoint's dict, memory-mapped where torch's file format allows: the optimizer state it also holds
    (twice the model) is then never read. Always weights_only: tensors and plain containers, never code."""
    try:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as e:
            if "mmap" not in str(e):
                raise
            obj = torch.load(path, map_location="cpu", weights_only=True)  # torch's legacy format: read whole
    except Exception as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(
            f"{CKPT} was refused: torch.load(weights_only=True) does not accept it (it may contain code, or it is not "
            f"a file torch.save wrote). {first[:300]}"
        ) from e
    _check_shape(obj)
    return obj


def _check_shape(obj: Any) -> None:
    if not isinstance(obj, dict) or not isinstance(obj.get("model_args"), dict) or not isinstance(obj.get("model"), dict):
        found = ", ".join(repr(k)[:40] for k in list(obj)[:8]) if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(
            f"{CKPT} is not a nanoGPT checkpoint: expected a dict with 'model_args' and 'model' (its state dict), found {found}"
        )


def _parts(obj: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """model_args (validated) and the state dict (names without torch.compile's prefix, tensors only)."""
    args = obj["model_args"]
    unknown = sorted(str(k) for k in args if k not in (*SIZES, "bias", "dropout"))
    if unknown:
        raise CheckpointError(
            f"{CKPT}: model_args has field(s) nanoGPT's GPT does not: {', '.join(unknown[:5])} (a modified model?)"
        )
    for key in SIZES:
        value = args.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise CheckpointError(f"{CKPT}: model_args[{key!r}] must be a positive integer, got {value!r}"[:300])
    if not isinstance(args.get("bias", True), bool):
        raise CheckpointError(f"{CKPT}: model_args['bias'] must be True or False, got {args['bias']!r}"[:300])
    state: dict[str, Tensor] = {}
    for key, value in obj["model"].items():
        if not isinstance(key, str) or not isinstance(value, Tensor):
            raise CheckpointError(f"{CKPT}: model entry {key!r} is a {type(value).__name__}, not a named tensor"[:300])
        name = key.removeprefix(COMPILED)
        if name in state:
            raise CheckpointError(f"{CKPT}: {name} is in the state dict twice (with and without {COMPILED!r})")
        state[name] = value
    return args, state


def _same(a: Tensor, b: Tensor | None) -> bool:
    """Whether the LM head is the token embedding (nanoGPT ties them; torch.save keeps them one tensor)."""
    return b is not None and a.shape == b.shape and (a.data_ptr() == b.data_ptr() or torch.equal(a, b))


def _number(value: Any) -> float | int | None:
    """iter_num and best_val_loss as plain numbers (nanoGPT saves best_val_loss as a 0-d tensor)."""
    if isinstance(value, Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, int | float) or (isinstance(value, float) and not math.isfinite(value)):
        return None
    return value


# ---------------------------------------------------------------------------------------------
# The vocabulary: meta.pkl (characters) or tokenizer.json.
# ---------------------------------------------------------------------------------------------


def read_vocabulary(folder: Path) -> tuple[Tokenizer, str, str]:
    """The tokenizer beside ckpt.pt, what it is ("characters (meta.pkl)" or "tokenizer.json"), and what unknown characters become."""
    if (folder / META).is_file():
        chars = char_vocabulary(read_meta(folder / META))
        tokenizer, placeholder = char_tokenizer(chars)
        unknown = f"characters outside its {len(chars)}-character vocabulary are read as {placeholder!r}"
        return tokenizer, f"characters ({META})", unknown
    if (folder / TOKENIZER).is_file():
        path = folder / TOKENIZER
        if path.stat().st_size > MAX_TOKENIZER_BYTES:
            raise CheckpointError(f"{TOKENIZER} is {path.stat().st_size:,} bytes: too large for a tokenizer")
        try:
            tokenizer = Tokenizer.from_json(path.read_text(encoding="utf-8"))
        except (TokenizerError, UnicodeDecodeError) as e:
            raise CheckpointError(f"{TOKENIZER}: {e}") from e
        tokenizer.inner.no_padding()
        tokenizer.inner.no_truncation()
        return tokenizer, TOKENIZER, ""
    raise CheckpointError(
        f"no vocabulary beside {CKPT}: nanoGPT keeps it apart from the checkpoint. Put the {META} of its dataset "
        f"(data/DATASET/{META}, for character-level models) or a {TOKENIZER} (GPT-2's, for models on GPT-2's BPE) beside it"
    )


class _PlainData(pickle.Unpickler):
    """Unpickles plain data only: every global (a class or a function, which is what a pickle needs to run code) is refused."""

    def find_class(self, module: str, name: str):
        raise CheckpointError(f"{META} holds a Python object ({module[:60]}.{name[:60]}): refused, nothing was run")

    def persistent_load(self, pid: Any):
        raise CheckpointError(f"{META} refers to an object outside the file: refused, nothing was run")


def read_meta(path: Path) -> dict[str, Any]:
    """nanoGPT's meta.pkl as plain data (at most MAX_META_BYTES); any object other than plain data is refused unrun."""
    size = path.stat().st_size
    if size > MAX_META_BYTES:
        raise CheckpointError(f"{META} is {size:,} bytes: too large for a character vocabulary (at most {MAX_META_BYTES:,})")
    try:
        obj = _PlainData(io.BytesIO(path.read_bytes())).load()
    except CheckpointError:
        raise
    except Exception as e:  # a truncated or corrupted pickle: UnpicklingError, EOFError, ValueError, ...
        raise CheckpointError(f"{META} is not a readable pickle: {type(e).__name__}: {str(e)[:200]}") from e
    _check_plain(obj)
    if not isinstance(obj, dict):
        raise CheckpointError(f"{META} must hold a dict (vocab_size, itos, stoi), got {type(obj).__name__}")
    return obj


def _check_plain(obj: Any) -> None:
    """Refuse anything but plain containers, strings and numbers (bytes, sets), walking each container once."""
    stack, seen = [obj], set()
    while stack:
        x = stack.pop()
        if type(x) not in PLAIN:
            raise CheckpointError(f"{META} holds a {type(x).__name__}: only dicts, lists, tuples, strings and numbers are read")
        if isinstance(x, dict | list | tuple) and id(x) not in seen:
            seen.add(id(x))
            stack.extend([*x.keys(), *x.values()] if isinstance(x, dict) else x)


def char_vocabulary(meta: dict[str, Any]) -> list[str]:
    """The characters of a nanoGPT meta.pkl by id (itos), checked: ids 0..n-1, one character each, all different,
    stoi its inverse and vocab_size its size."""
    itos, stoi = meta.get("itos"), meta.get("stoi")
    if itos is None and stoi is None:
        raise CheckpointError(
            f"{META} has neither 'itos' nor 'stoi': not a character vocabulary (nanoGPT's BPE datasets use GPT-2's "
            f"tokenizer: put its {TOKENIZER} beside {CKPT})"
        )
    if itos is None:
        if not isinstance(stoi, dict) or not all(isinstance(v, int) and not isinstance(v, bool) for v in stoi.values()):
            raise CheckpointError(f"{META}: 'stoi' must map characters to ids")
        itos = {i: c for c, i in stoi.items()}
    if not isinstance(itos, dict) or not itos:
        raise CheckpointError(f"{META}: 'itos' must be a non-empty dict of id -> character")
    n = len(itos)
    if any(type(k) is not int for k in itos) or set(itos) != set(range(n)):
        raise CheckpointError(f"{META}: the ids of 'itos' must be 0 to {n - 1}")
    chars = [itos[i] for i in range(n)]
    for i, c in enumerate(chars):
        if not isinstance(c, str) or len(c) != 1:
            raise CheckpointError(f"{META}: id {i} is {c!r}, not one character"[:200])
    if len(set(chars)) != n:
        raise CheckpointError(f"{META}: 'itos' gives the same character to two ids")
    if stoi is not None and stoi != {c: i for i, c in enumerate(chars)}:
        raise CheckpointError(f"{META}: 'stoi' is not the inverse of 'itos'")
    if meta.get("vocab_size", n) != n:
        raise CheckpointError(f"{META}: vocab_size is {meta['vocab_size']!r}, but 'itos' has {n} characters"[:200])
    return chars


def char_tokenizer(chars: list[str]) -> tuple[Tokenizer, str]:
    """A tokenizer that reads every character as its own token (newlines too) and joins them back with nothing between.

    A character outside the vocabulary becomes a placeholder that is in it ("?", else " ", else the
    first character), one token per character, so any text can be read; returns (tokenizer, placeholder).
    """
    vocab = {c: i for i, c in enumerate(chars)}
    placeholder = next((c for c in ("?", " ") if c in vocab), chars[0])
    inner = HFTokenizer(models.WordLevel(vocab, unk_token=placeholder))
    inner.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")  # every character, "\n" included
    inner.decoder = decoders.Fuse()
    return Tokenizer(inner), placeholder
