"""Where a Hugging Face folder's weights are, and reading them: one file, or the shards an index names.

The files, in the order Hugging Face itself prefers them: `model.safetensors`; the shards listed in
`model.safetensors.index.json`; `pytorch_model.bin`; the shards of `pytorch_model.bin.index.json`. An
index's "weight_map" maps each tensor to its shard, a plain file name inside the folder (no "/", no
"..", no absolute path). safetensors files are judged from their headers (names, shapes, dtypes)
before any tensor data is read; `.bin` files hold no header, so they are read whole, and only through
`torch.load(weights_only=True)`, which never runs code.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from transformer.checkpoints.format import CheckpointError, TensorInfo, read_header, read_tensors
from transformer.checkpoints.importers.parts import PICKLE, SAFETENSORS

INDEX = ".index.json"  # model.safetensors.index.json, pytorch_model.bin.index.json
MAX_INDEX_BYTES = 10_000_000  # a 1000-shard index of a 70B model is about 100 kB


@dataclass(frozen=True)
class WeightFiles:
    """A folder's weight files, found and named before any is opened."""

    source: str  # what messages and the training facts call them: "model.safetensors", "model.safetensors.index.json"
    shards: dict[str, list[str]]  # file name -> the tensors its index puts there ([] for a single file)
    safetensors: bool  # else pickled tensors (.bin), read only with torch.load(weights_only=True)


def check_file_name(name: object, where: str) -> str:
    """`name` if it is a plain file name inside the folder, else CheckpointError naming it."""
    if not isinstance(name, str) or not name or name in (".", "..") or any(c in name for c in "/\\\0"):
        raise CheckpointError(
            f"{where}: {name!r} is not a file name inside the folder (no '/', no '..', no absolute path): refused"
        )
    return name


def parse_index(text: str, index: str) -> dict[str, list[str]]:
    """An index's shards, each with the tensors it should hold, from the index's JSON text."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{index} is not valid JSON: {e}") from e
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise CheckpointError(f'{index} must be a JSON object with a "weight_map" of tensor name -> shard file')
    suffix = index.removesuffix(INDEX).rpartition(".")[2]  # "safetensors" or "bin"
    shards: dict[str, list[str]] = {}
    for tensor, shard in weight_map.items():
        check_file_name(shard, f"{index} ({tensor})")
        if not shard.endswith(f".{suffix}"):
            raise CheckpointError(f"{index}: shard {shard!r} (for {tensor}) is not a .{suffix} file")
        shards.setdefault(shard, []).append(tensor)
    return shards


def read_index(folder: Path, index: str) -> dict[str, list[str]]:
    """The shards `folder/index` names, every one present in the folder, each with the tensors it should hold."""
    path = folder / index
    size = path.stat().st_size
    if size > MAX_INDEX_BYTES:
        raise CheckpointError(f"{index} is {size:,} bytes: too large for a shard index (at most {MAX_INDEX_BYTES:,})")
    try:
        shards = parse_index(path.read_text(encoding="utf-8"), index)
    except UnicodeDecodeError as e:
        raise CheckpointError(f"{index} is not UTF-8 text: {e}") from e
    for shard, tensors in shards.items():
        if not (folder / shard).is_file():
            more = " …" if len(tensors) > 3 else ""
            raise CheckpointError(
                f"{index} names the shard {shard}, which is missing: it should hold {len(tensors)} tensor(s) "
                f"({', '.join(tensors[:3])}{more}); put it beside the index"
            )
    return shards


def weight_files(folder: Path) -> WeightFiles:
    """The weights of `folder`, by Hugging Face's own preference; CheckpointError when there are none or a shard is missing."""
    for single, is_safetensors in ((SAFETENSORS, True), (PICKLE, False)):
        if (folder / single).is_file():
            return WeightFiles(single, {single: []}, is_safetensors)
        index = single + INDEX
        if (folder / index).is_file():
            return WeightFiles(index, read_index(folder, index), is_safetensors)
    raise CheckpointError(
        f"{folder}: no weights: expected {SAFETENSORS}, or its shards with {SAFETENSORS}{INDEX}, or {PICKLE} (or its shards)"
    )


def _load_pickled(path: Path) -> dict[str, Tensor]:
    """A `.bin` of named tensors, through torch.load(weights_only=True) only: code in it is refused, never run."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(
            f"{path.name} was refused: torch.load(weights_only=True) does not accept it (it may contain code). {first}"
        ) from e
    if not isinstance(obj, dict) or not all(isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items()):
        raise CheckpointError(f"{path.name} must hold a dict of named tensors")
    return obj


def _agree(files: WeightFiles, shard: str, found: set[str], seen: dict[str, str]) -> None:
    """The tensors the index puts in `shard` are there, and no tensor is in two files."""
    absent = [t for t in files.shards[shard] if t not in found]
    if absent:
        raise CheckpointError(f"{files.source} puts {absent[0]} in {shard}, but that file has no such tensor")
    for name in found:
        if name in seen:
            raise CheckpointError(f"{name} is in both {seen[name]} and {shard}")
        seen[name] = shard


def open_weights(folder: Path, files: WeightFiles) -> tuple[dict[str, TensorInfo], Callable[[], dict[str, Tensor]]]:
    """Every tensor's (shape, dtype) across the files, and a function that reads them all.

    safetensors: from the headers alone, so the caller judges names and shapes before any data is
    read. Pickled `.bin` files hold no header: they are read here, and the reader returns what was read.
    """
    layout: dict[str, TensorInfo] = {}
    seen: dict[str, str] = {}
    if files.safetensors:
        headers = {}
        for shard in files.shards:
            headers[shard] = read_header(folder / shard)[1]
            _agree(files, shard, set(headers[shard]), seen)
            layout.update(headers[shard])
        # A shard replaced since its header was judged is refused, not read.
        return layout, lambda: {k: v for shard in files.shards for k, v in read_tensors(folder / shard, headers[shard]).items()}
    tensors: dict[str, Tensor] = {}
    for shard in files.shards:
        part = _load_pickled(folder / shard)
        _agree(files, shard, set(part), seen)
        tensors.update(part)
    layout = {name: (tuple(t.shape), t.dtype) for name, t in tensors.items()}
    return layout, lambda: tensors
