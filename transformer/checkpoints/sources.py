"""Where models come from besides the shipped ones: the server owner's models folders and the Hugging Face cache.

`scan()` looks in
- every folder of $ATTNVIZ_MODELS (several, separated by ":"), down to MAX_DEPTH levels, hidden folders
  skipped: this project's `.safetensors` checkpoints (not the `*.state.safetensors` training state nor
  the `*.snapshots.safetensors` snapshots kept beside them), Hugging Face folders (a folder with
  config.json) and nanoGPT folders (a folder with ckpt.pt);
- the Hugging Face cache ($HF_HUB_CACHE, else $HF_HOME/hub, else $XDG_CACHE_HOME/huggingface/hub, else
  ~/.cache/huggingface/hub; $ATTNVIZ_NO_HF_CACHE=1 leaves it out): the current snapshot of every
  `models--ORG--NAME` repository (the commit `refs/main` names, else the newest), read in place.

Each model is judged without reading a weight (config.json, a safetensors header, the file names: what
the loader would refuse first, the memory budget included). What passes is offered by name; what does
not is listed with the reason, never dropped silently. Nothing is downloaded and nothing is written.
These are the server owner's files: the upload size limit does not apply to them, only the memory budget.

Names: a model is offered under its file name (without .safetensors) or folder name, a cache model
under its repository id `org/name`. When two would share a name, or take one the app already uses,
each is named by its path inside its models folder instead (`runs/a/model`), then with that folder's
own name in front (`models/runs/a/model`; a cache model: `hf-cache/org/name`); the last resort is "~2".
"""

from __future__ import annotations

import hashlib
import os
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from transformer.checkpoints import importers
from transformer.checkpoints.budget import Budget
from transformer.checkpoints.catalog import CatalogEntry
from transformer.checkpoints.format import FORMAT, CheckpointError, check_budget, read_header
from transformer.checkpoints.importers import nanogpt
from transformer.checkpoints.snapshots import FORMAT as SNAPSHOTS_FORMAT
from transformer.model.config import ConfigError, ModelConfig
from transformer.train.state import FORMAT as STATE_FORMAT

MODELS_ENV = "ATTNVIZ_MODELS"  # the server owner's models folders, separated by ":"
NO_HF_CACHE_ENV = "ATTNVIZ_NO_HF_CACHE"  # set to 1 to leave the Hugging Face cache out
MAX_DEPTH = 3  # folder levels below a models folder
MAX_MODELS = 200  # models found in one scan, offered and refused together
MAX_FOLDERS = 2000  # folders looked into under one models folder
COMPANIONS = (".state.safetensors", ".snapshots.safetensors")  # files kept beside a checkpoint, not models
CACHE_PREFIX = "models--"  # the cache's datasets--, spaces-- are not models


@dataclass(frozen=True)
class Found:
    """A model found on disk: offered in the picker, or listed with why it cannot be opened."""

    name: str  # unique among the offered ones
    path: Path  # what `importers.load_any` opens: a .safetensors file or a folder
    kind: str  # "ours" | "huggingface" | "nanogpt"
    where: str  # "models folder /srv/models", "Hugging Face cache"
    detail: str = ""  # what it is ("gpt2", "decoder, 4 layers × 4 heads")
    problem: str = ""  # why it cannot be opened; "" when it can


@dataclass(frozen=True)
class Scan:
    """Where models were looked for, and what was found there."""

    folders: tuple[Path, ...]  # the models folders ($ATTNVIZ_MODELS)
    cache: Path | None  # the Hugging Face cache folder (None: left out)
    offered: tuple[Found, ...]
    refused: tuple[Found, ...]  # found, but cannot be opened: each says why
    notes: tuple[str, ...]  # a folder missing or unreadable, a search cut short


@dataclass(frozen=True)
class _Hit:
    path: Path
    kind: str
    where: str
    names: tuple[str, ...]  # candidate names, shortest first
    detail: str
    problem: str


def models_folders() -> tuple[Path, ...]:
    """The folders of $ATTNVIZ_MODELS (separated by ":"), in order, each once."""
    parts = [p for p in os.environ.get(MODELS_ENV, "").split(":") if p.strip()]
    return tuple(dict.fromkeys(Path(p.strip()).expanduser() for p in parts))


def hf_cache_dir() -> Path | None:
    """The Hugging Face hub cache as huggingface_hub finds it (None when $ATTNVIZ_NO_HF_CACHE is set)."""
    env = os.environ
    if env.get(NO_HF_CACHE_ENV):
        return None
    if env.get("HF_HUB_CACHE"):
        return Path(env["HF_HUB_CACHE"]).expanduser()
    if env.get("HF_HOME"):
        return Path(env["HF_HOME"]).expanduser() / "hub"
    return Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "huggingface" / "hub"


def identity(path: str | os.PathLike) -> str:
    """What a loaded model is cached by: the path, with the size and mtime of the file (a folder: of each of its files).

    A file rewritten or a folder's weights replaced gives another identity, so it is loaded again.
    """
    path = Path(path)
    if not path.is_dir():
        stat = path.stat()
        return f"{path}:{stat.st_mtime_ns}:{stat.st_size}"
    parts = []
    for entry in sorted(os.scandir(path), key=lambda e: e.name):
        try:
            if entry.is_file():  # through symlinks, as the cache's snapshots point into its blobs
                stat = entry.stat()
                parts.append(f"{entry.name}:{stat.st_mtime_ns}:{stat.st_size}")
        except OSError:
            continue
    return f"{path}:{hashlib.sha256('|'.join(parts).encode()).hexdigest()[:16]}"


# ---------------------------------------------------------------------------------------------
# Judging one model without reading its weights.
# ---------------------------------------------------------------------------------------------


def judge(path: Path, kind: str, budget: Budget | None = None) -> tuple[str, str]:
    """(detail, problem) of a model: what it is, and why it cannot be opened ("" when it can)."""
    try:
        if kind == "huggingface":
            return importers.judge_folder(path, budget), ""
        if kind == "nanogpt":
            if not any((path / f).is_file() for f in (nanogpt.META, nanogpt.TOKENIZER)):
                raise CheckpointError(
                    f"no vocabulary: put the {nanogpt.META} of its dataset, or a {nanogpt.TOKENIZER}, beside ckpt.pt"
                )
            args = nanogpt.peek_model_args(path / nanogpt.CKPT)  # memory-mapped: its tensors are not read
            if args is None:  # torch's legacy format cannot be mapped: loading it will judge it
                return "", ""
            cfg = nanogpt.config_of(args)
            check_budget(cfg, f"{nanogpt.CKPT} (model_args)", budget)
            return f"{cfg.n_layers} layers × {cfg.n_heads} heads, d_model {cfg.d_model}", ""
        return _judge_ours(path, budget), ""
    except CheckpointError as e:
        return "", str(e)
    except OSError as e:
        return "", f"cannot be read: {e.strerror or e}"
    except Exception as e:  # whatever else a strange file raises: listed with it, and the scan goes on
        return "", f"{type(e).__name__}: {e}"[:300]


def _judge_ours(path: Path, budget: Budget | None) -> str:
    metadata = read_header(path)[0]
    fmt = metadata.get("format")
    if fmt == STATE_FORMAT:
        raise CheckpointError("a training-state file (to resume training), not a model")
    if fmt == SNAPSHOTS_FORMAT:
        raise CheckpointError("training snapshots (the Training page's), not a model")
    if fmt is None or not fmt.startswith("attnviz-"):  # Hugging Face's weights say {"format": "pt"}
        raise CheckpointError(
            "no attnviz metadata: a Hugging Face weights file? Put it in a folder with its config.json and tokenizer.json"
        )
    if fmt != FORMAT or "config" not in metadata:
        raise CheckpointError(f"unknown format {fmt!r} (expected {FORMAT!r})")
    try:
        cfg = ModelConfig.from_json(metadata["config"])
    except ConfigError as e:
        raise CheckpointError(f"bad config: {e}") from e
    check_budget(cfg, path.name, budget)
    return f"{cfg.kind}, {cfg.n_layers} layers × {cfg.n_heads} heads"


# ---------------------------------------------------------------------------------------------
# Finding models.
# ---------------------------------------------------------------------------------------------


def scan_models(folder: Path, budget: Budget | None = None, limit: int = MAX_MODELS) -> tuple[list[_Hit], list[str]]:
    """Every model under `folder` (itself included), at most MAX_DEPTH levels down, hidden folders skipped, in name order."""
    where = f"models folder {folder}"
    if not folder.is_dir():
        return [], [f"{where} does not exist"]
    hits: list[_Hit] = []
    notes: list[str] = []
    stack: list[tuple[Path, tuple[str, ...]]] = [(folder, ())]
    seen: set[Path] = set()
    looked = 0
    while stack and len(hits) < limit:
        here, rel = stack.pop()
        real = here.resolve()
        if real in seen:  # a symlink loop, or one folder linked twice
            continue
        seen.add(real)
        looked += 1
        if looked > MAX_FOLDERS:
            notes.append(f"{where}: stopped after looking into {MAX_FOLDERS} folders")
            break
        kind = importers.kind_of(here)
        if kind is not None:  # a Hugging Face or nanoGPT folder is one model: nothing below it is looked at
            hits.append(_hit(here, kind, where, rel or (here.name,), folder.name, budget))
            continue
        try:
            entries = sorted(os.scandir(here), key=lambda e: e.name)
        except OSError as e:
            notes.append(f"{here} cannot be read: {e.strerror or e}")
            continue
        below = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                if entry.is_dir():
                    if len(rel) < MAX_DEPTH:
                        below.append((Path(entry.path), (*rel, entry.name)))
                elif entry.name.endswith(".safetensors") and not entry.name.endswith(COMPANIONS) and entry.is_file():
                    stem = entry.name.removesuffix(".safetensors")
                    hits.append(_hit(Path(entry.path), "ours", where, (*rel, stem), folder.name, budget))
            except OSError:
                continue
        stack.extend(reversed(below))
    if len(hits) >= limit:
        notes.append(f"{where}: stopped after {limit} models")
    return hits[:limit], notes


def _hit(path: Path, kind: str, where: str, rel: tuple[str, ...], root: str, budget: Budget | None) -> _Hit:
    names = tuple(dict.fromkeys((rel[-1], "/".join(rel), f"{root}/{'/'.join(rel)}")))
    return _Hit(path, kind, where, names, *judge(path, kind, budget))


def current_snapshot(repo: Path) -> Path | None:
    """A cached repository's current snapshot folder: the commit refs/main names, else the newest snapshot."""
    snapshots, ref = repo / "snapshots", repo / "refs" / "main"
    try:
        if ref.is_file() and ref.stat().st_size <= 200:
            commit = ref.read_text(encoding="ascii", errors="replace").strip()
            if re.fullmatch(r"[0-9a-f]{6,64}", commit) and (snapshots / commit).is_dir():
                return snapshots / commit
        folders = [d for d in snapshots.iterdir() if d.is_dir()] if snapshots.is_dir() else []
        return max(folders, key=lambda d: d.stat().st_mtime_ns, default=None)
    except OSError:
        return None


def scan_cache(cache: Path, budget: Budget | None = None, limit: int = MAX_MODELS) -> tuple[list[_Hit], list[str]]:
    """Every model repository of the Hugging Face cache, judged at its current snapshot."""
    where = "Hugging Face cache"
    if not cache.is_dir():
        return [], [f"the Hugging Face cache ({cache}) does not exist"]
    hits: list[_Hit] = []
    try:
        repos = sorted(d for d in cache.iterdir() if d.name.startswith(CACHE_PREFIX) and d.is_dir())
    except OSError as e:
        return [], [f"the Hugging Face cache ({cache}) cannot be read: {e.strerror or e}"]
    for repo in repos[:limit]:
        repo_id = "/".join(repo.name.split("--")[1:])
        names = (repo_id, f"hf-cache/{repo_id}")
        snapshot = current_snapshot(repo)
        if snapshot is None:
            hits.append(_Hit(repo, "huggingface", where, names, "", "no snapshot folder (an interrupted download?)"))
            continue
        hits.append(_Hit(snapshot, "huggingface", where, names, *judge(snapshot, "huggingface", budget)))
    notes = [f"{where}: stopped after {limit} repositories"] if len(repos) > limit else []
    return hits, notes


def unique_names(candidates: list[tuple[str, ...]], reserved: Callable[[str], bool] = lambda name: False) -> list[str]:
    """One name each: the first candidate, unless another model or a `reserved` name has it; then the next one."""
    level = [0] * len(candidates)
    while True:
        names = [c[min(i, len(c) - 1)] for c, i in zip(candidates, level, strict=True)]
        counts = Counter(names)
        moved = False
        for k, name in enumerate(names):
            if (counts[name] > 1 or reserved(name)) and level[k] < len(candidates[k]) - 1:
                level[k] += 1
                moved = True
        if not moved:
            break
    out: list[str] = []
    for name in names:  # the last resort: name~2, name~3, ...
        unique, n = name, 2
        while unique in out or reserved(unique):
            unique, n = f"{name}~{n}", n + 1
        out.append(unique)
    return out


def scan(
    folders: tuple[Path, ...] | None = None,
    cache: Path | None | bool = True,
    reserved: Callable[[str], bool] = lambda name: False,
    budget: Budget | None = None,
) -> Scan:
    """Every model of the models folders (default: $ATTNVIZ_MODELS) and the Hugging Face cache (default: `hf_cache_dir()`;
    None: left out), judged and named; `reserved(name)` is true for names the app already uses."""
    folders = models_folders() if folders is None else folders
    cache = hf_cache_dir() if cache is True else cache
    hits: list[_Hit] = []
    notes: list[str] = []
    for folder in folders:
        found, said = scan_models(folder, budget, MAX_MODELS - len(hits))
        hits += found
        notes += said
    if cache is not None:
        found, said = scan_cache(cache, budget, max(0, MAX_MODELS - len(hits)))
        hits += found
        notes += said
    good = [h for h in hits if not h.problem]
    names = unique_names([h.names for h in good], reserved)
    offered = tuple(Found(n, h.path, h.kind, h.where, h.detail) for n, h in zip(names, good, strict=True))
    shown = [h.names[max(0, len(h.names) - 2)] for h in hits]  # a refused model: its path inside its folder, or its repo id
    refused = tuple(Found(n, h.path, h.kind, h.where, h.detail, h.problem) for n, h in zip(shown, hits, strict=True) if h.problem)
    return Scan(tuple(folders), cache, offered, refused, tuple(notes))


def catalog_entries(found: Scan) -> dict[str, CatalogEntry]:
    """The offered models as the picker's entries (after the shipped ones), each knowing what it is and where it lies."""
    out = {}
    for f in found.offered:
        what = {"ours": f.detail, "huggingface": f"Hugging Face {f.detail}", "nanogpt": f"nanoGPT {f.detail}".strip()}[f.kind]
        out[f.name] = CatalogEntry(f.name, f"{f.name} ({what}; {f.where})", f.path, kind=f.kind)
    return out
