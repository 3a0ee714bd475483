"""One-file checkpoints: weights in a `.safetensors` file, config, tokenizer and training facts in its metadata.

Loading never unpickles anything: safetensors files are parsed as data, and legacy `.pt`/`.bin`
files go only through `torch.load(weights_only=True)`. A checkpoint is judged from its header before
any tensor is read or any model built: its config must fit this server's memory budget (`budget.py`)
and agree with the names, shapes and dtypes the header lists. Every problem raises `CheckpointError`
with a message that says what is wrong.
"""

from __future__ import annotations

import functools
import json
import os
import struct
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from transformer.checkpoints.budget import Budget, BudgetError, check_config, check_fields, default_budget
from transformer.checkpoints.tokenizer import Tokenizer, TokenizerError
from transformer.decoding import Decoding, DecodingError
from transformer.model.config import ConfigError, ModelConfig
from transformer.model.device import pick_device
from transformer.model.network import TransformerModel

FORMAT = "attnviz-checkpoint/1"
REQUIRED_METADATA = ("format", "config", "tokenizer", "training")
MAX_HEADER_BYTES = 100_000_000  # safetensors' own limit; a larger claim means a corrupted file
READ_ATTEMPTS = 8  # reads of a file that a training run keeps replacing (after 1, 2, 4 … 64 ms), before giving up

TensorInfo = tuple[tuple[int, ...], torch.dtype | str]  # a tensor's (shape, dtype), known before its data is read
# The dtypes a safetensors header names; one not listed stays a string (and is refused as not floating point).
SAFETENSORS_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)  # weights are loaded as float32
FLOAT_NAMES = "float32, float16, bfloat16 or float64"


class CheckpointError(ValueError):
    """A checkpoint file that cannot be loaded; the message says why."""


T = TypeVar("T")


@dataclass(frozen=True)
class Checkpoint:
    """A loaded model (eval mode, no grad), its tokenizer and what is known about its training."""

    model: TransformerModel
    tokenizer: Tokenizer
    training: dict[str, Any] = field(default_factory=dict)
    name: str = ""

    @property
    def config(self) -> ModelConfig:
        return self.model.cfg

    @functools.cached_property
    def decoding(self) -> Decoding:
        """How the decoder starts and stops: an import's generation settings (training["decoding"]), else [BOS] … [EOS]."""
        facts = self.training.get("decoding")
        if facts is None:
            return Decoding.plain(self.tokenizer.bos_id, self.tokenizer.eos_id)
        return Decoding.from_facts(facts, self.model.cfg.vocab_size)


def save_checkpoint(path: str | os.PathLike, model: TransformerModel, tokenizer: Tokenizer, training: dict | None = None) -> Path:
    """Write the checkpoint atomically: a temp file in the same folder, then a rename."""
    metadata = {
        "format": FORMAT,
        "config": model.cfg.to_json(),
        "tokenizer": tokenizer.to_json(),
        "training": json.dumps(training or {}, sort_keys=True),
    }
    return atomic_save_file(model.state_dict(), path, metadata)


def atomic_save_file(tensors: dict[str, torch.Tensor], path: str | os.PathLike, metadata: dict[str, str]) -> Path:
    """safetensors `save_file` through a temp file in the same folder and a rename.

    A process killed mid-write leaves the previous file untouched. Checkpoints, snapshots and
    training-state files all go through here.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}, tmp, metadata=metadata)
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o644 & ~mask)  # mkstemp makes owner-only files; give the usual permissions
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _identity(path: Path) -> tuple[int, ...]:
    """What changes when a file is replaced (a rename gives a new inode) or rewritten in place."""
    st = path.stat()
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def read_whole(path: Path, read: Callable[[], T]) -> T:
    """`read()`, done again until the file at `path` is the same file before and after it.

    Training runs replace their checkpoints, snapshots and state files (a rename) while the app
    reads them. A read opens the file by name more than once: the header is judged before the
    tensors are read, and safetensors maps the data through a second open. A read that spans a
    rename could mix two versions, or fail on a size that belongs to the other one; such a read is
    thrown away, error or not, and done again.
    """
    for attempt in range(READ_ATTEMPTS):
        if attempt:
            time.sleep(0.001 * 2 ** (attempt - 1))  # let the writer finish its next rename
        before = _identity(path)
        try:
            result = read()
        except CheckpointError:
            if _identity(path) == before:
                raise
            continue
        if _identity(path) == before:
            return result
    raise CheckpointError(f"{path.name} kept changing while it was read ({READ_ATTEMPTS} tries); is something still writing it?")


def _check_header_bytes(path: Path) -> None:
    """Refuse what is not a safetensors file at all (a pickle, text, a truncated download) from its first bytes."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(9)
    if len(head) < 9:
        raise CheckpointError(f"{path.name} is not a safetensors file (only {size} bytes)")
    (n,) = struct.unpack("<Q", head[:8])
    if n > min(size - 8, MAX_HEADER_BYTES) or head[8:9] != b"{":
        raise CheckpointError(f"{path.name} is not a safetensors file (no valid header; is it a pickle or a truncated download?)")


def read_header(path: Path) -> tuple[dict[str, str], dict[str, TensorInfo]]:
    """A safetensors file's metadata and each tensor's (shape, dtype), without reading any tensor data.

    safetensors checks here that the header's offsets cover the file exactly, so a truncated
    download is refused before anything is read.
    """
    return read_whole(path, lambda: _read_header(path))


def _read_header(path: Path) -> tuple[dict[str, str], dict[str, TensorInfo]]:
    _check_header_bytes(path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            layout = _layout_of(f)
    except Exception as e:  # SafetensorError and friends: a corrupted header or truncated data
        raise CheckpointError(f"{path.name} is not a valid safetensors file: {e}") from e
    return metadata, layout


def _layout_of(f: Any) -> dict[str, TensorInfo]:
    """Each tensor's (shape, dtype) from an open safetensors file's header: lazy views, no data read."""
    layout = {}
    for k in f.keys():
        info = f.get_slice(k)
        dtype = info.get_dtype()
        layout[k] = (tuple(info.get_shape()), SAFETENSORS_DTYPES.get(dtype, dtype))
    return layout


def read_tensors(path: Path, judged: dict[str, TensorInfo]) -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors file, read into memory: only once its header has been judged.

    `judged` is the layout its header gave: a file that no longer has it is refused before any tensor
    is allocated (it was replaced after it was judged). Callers inside `read_whole` then read it again
    from its new header.
    """
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            if _layout_of(f) != judged:
                raise CheckpointError(f"{path.name} changed after its header was judged")
            return {k: f.get_tensor(k) for k in f.keys()}
    except CheckpointError:
        raise
    except Exception as e:
        raise CheckpointError(f"{path.name} is not a valid safetensors file: {e}") from e


def read_safetensors(path: Path) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """A safetensors file's metadata and every tensor, both from one version of the file."""

    def read() -> tuple[dict[str, str], dict[str, torch.Tensor]]:
        metadata, layout = _read_header(path)  # read_whole's one loop covers the header and the tensors
        return metadata, read_tensors(path, layout)

    return read_whole(path, read)


def read_tagged(path: str | os.PathLike, fmt: str, what: str) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """Read one of our other safetensors files (snapshots, training state), checking its format tag."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no {what} at {path}")
    metadata, tensors = read_safetensors(path)
    if metadata.get("format") != fmt:
        raise CheckpointError(f"{path.name}: not a {what} (format {metadata.get('format')!r}, expected {fmt!r})")
    return metadata, tensors


def _read_legacy(path: Path) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """A `.pt`/`.bin` dict {"config", "tokenizer", "training", "state_dict"}, loaded without unpickling code."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(
            f"{path.name} was refused: it is not a plain tensor file that torch.load(weights_only=True) accepts "
            f"(it may contain code). Details: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
        ) from e
    if not isinstance(obj, dict) or not isinstance(obj.get("state_dict"), dict):
        raise CheckpointError(f"{path.name}: a legacy checkpoint must be a dict with a 'state_dict' entry")
    metadata = {"format": FORMAT}
    for key in ("config", "tokenizer", "training"):
        if key in obj:
            value = obj[key]
            metadata[key] = value if isinstance(value, str) else json.dumps(value)
    return metadata, obj["state_dict"]


def read_checkpoint_parts(
    path: str | os.PathLike, budget: Budget | None = None
) -> tuple[ModelConfig, Tokenizer, dict, dict[str, torch.Tensor]]:
    """Parse and validate a checkpoint; returns (config, tokenizer, training, tensors).

    Judged before anything is allocated: the header (metadata, each tensor's shape and dtype) is read
    first; the config must fit `budget` (default: `budget.default_budget()`) and agree with the
    header's names, shapes and dtypes; only then are the tensors read. A legacy `.pt` file can only be
    read whole, but it too is judged before any model is built. Finiteness is checked by the loader.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint file at {path}")
    return read_whole(path, lambda: _read_checkpoint_parts(path, budget))


def _read_checkpoint_parts(path: Path, budget: Budget | None) -> tuple[ModelConfig, Tokenizer, dict, dict[str, torch.Tensor]]:
    if path.suffix in (".pt", ".bin", ".pth"):
        metadata, tensors = _read_legacy(path)
        layout = None
    else:
        (metadata, layout), tensors = _read_header(path), None  # inside read_whole
    missing = [k for k in REQUIRED_METADATA if k not in metadata]
    if missing:
        raise CheckpointError(
            f"{path.name}: metadata missing {', '.join(repr(k) for k in missing)} (not a checkpoint of this project?)"
        )
    if metadata["format"] != FORMAT:
        raise CheckpointError(f"{path.name}: unknown checkpoint format {metadata['format']!r}, expected {FORMAT!r}")
    try:
        config = ModelConfig.from_json(metadata["config"])
    except ConfigError as e:
        raise CheckpointError(f"{path.name}: bad config: {e}") from e
    try:
        tokenizer = Tokenizer.from_json(metadata["tokenizer"])
    except TokenizerError as e:
        raise CheckpointError(f"{path.name}: bad tokenizer: {e}") from e
    if tokenizer.vocab_size > config.vocab_size:
        raise CheckpointError(
            f"{path.name}: tokenizer has {tokenizer.vocab_size} tokens, config.vocab_size is {config.vocab_size}"
        )
    try:
        training = json.loads(metadata["training"])
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path.name}: training metadata is not valid JSON: {e}") from e
    if isinstance(training, dict) and "decoding" in training:
        try:
            Decoding.from_facts(training["decoding"], config.vocab_size)
        except DecodingError as e:
            raise CheckpointError(f"{path.name}: its decoding settings are unusable: {e}") from e
    check_budget(config, path.name, budget)
    check_layout(expected_shapes(config, path.name), _layout(tensors, path.name) if layout is None else layout, path.name)
    return config, tokenizer, training, read_tensors(path, layout) if tensors is None else tensors


def check_budget(config: ModelConfig, where: str, budget: Budget | None = None) -> None:
    """Raise CheckpointError naming the field unless `config`'s model and traces fit `budget` (default: this server's)."""
    try:
        check_config(config, default_budget() if budget is None else budget)
    except BudgetError as e:
        raise CheckpointError(f"{where}: {e}") from e


def expected_shapes(config: ModelConfig, where: str = "checkpoint") -> dict[str, tuple[int, ...]]:
    """The state dict's names and shapes for `config`, from a model built on the meta device (no memory)."""
    try:
        check_fields(config)  # the build takes time per layer: no million-layer configs
    except BudgetError as e:
        raise CheckpointError(f"{where}: {e}") from e
    with torch.device("meta"):
        return {k: tuple(v.shape) for k, v in TransformerModel(config).state_dict().items()}


def _layout(tensors: dict, where: str) -> dict[str, TensorInfo]:
    """(shape, dtype) of each tensor of a state dict that may hold anything (a legacy file's)."""
    for name, t in tensors.items():
        if not isinstance(t, torch.Tensor):
            raise CheckpointError(f"{where}: {name} is a {type(t).__name__}, not a tensor")
    return {name: (tuple(t.shape), t.dtype) for name, t in tensors.items()}


def check_layout(expected: dict[str, tuple[int, ...]], layout: dict[str, TensorInfo], where: str) -> None:
    """Raise CheckpointError unless `layout` has exactly the expected names and shapes, all floating point."""
    missing = sorted(set(expected) - set(layout))
    unexpected = sorted(set(layout) - set(expected))
    if missing:
        raise CheckpointError(f"{where}: missing weight(s) {', '.join(missing[:5])}{' …' if len(missing) > 5 else ''}")
    if unexpected:
        raise CheckpointError(f"{where}: unexpected weight(s) {', '.join(unexpected[:5])}{' …' if len(unexpected) > 5 else ''}")
    for name, shape in expected.items():
        found, dtype = layout[name]
        if found != shape:
            raise CheckpointError(f"{where}: shape of {name} is {found}, config says {shape}")
        if dtype not in FLOAT_DTYPES:
            raise CheckpointError(f"{where}: {name} has dtype {dtype}, expected a floating-point tensor ({FLOAT_NAMES})")


def check_finite(tensors: dict[str, torch.Tensor], where: str) -> None:
    """Raise CheckpointError naming the first tensor with a NaN or an infinity."""
    for name, t in tensors.items():
        if not bool(torch.isfinite(t).all()):
            raise CheckpointError(f"{where}: {name} contains NaN or infinite values")


def check_state_dict(config: ModelConfig, tensors: dict[str, torch.Tensor], where: str = "checkpoint") -> None:
    """Raise CheckpointError unless `tensors` has exactly the names and shapes the config implies, all finite."""
    check_layout(expected_shapes(config, where), _layout(tensors, where), where)
    check_finite(tensors, where)


def load_checkpoint(
    path: str | os.PathLike, device: str | torch.device | None = None, budget: Budget | None = None
) -> Checkpoint:
    """Load and validate a checkpoint; the model comes back in eval mode on `device` (default: best available).

    `budget`: what the model and its traces may take (default: `budget.default_budget()`, this server's).
    """
    config, tokenizer, training, tensors = read_checkpoint_parts(path, budget)
    check_finite(tensors, Path(path).name)
    model = TransformerModel.from_weights(config, tensors)
    model.eval().requires_grad_(False)
    model.to(pick_device(device))
    return Checkpoint(model=model, tokenizer=tokenizer, training=training, name=Path(path).stem)
