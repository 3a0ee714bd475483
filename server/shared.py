"""What every session shares: loaded checkpoints, traces, pooled maps, snapshots and uploads, each made once.

Nothing here belongs to one session: no `st.session_state`, no widgets. Everything is keyed by a
checkpoint's identity (path + mtime + size, or an upload's sha256) and the text, so the same key
always means the same numbers, and what is cached is read-only (a trace is frozen; sessions share
it without the copy `st.cache_data` would make on every hit). `server/session.py` holds what belongs to
one session (its selection, its sidebar, its URL) and calls in here.

The server is a classroom's: thirty sessions on two cores. So
- traces live in one process-wide LRU bounded by bytes, sized from this machine's memory;
- a value asked for by several sessions at once is made once (`ByteLRU.get_or_create`);
- the model runs at most MODEL_SLOTS at a time, each on one torch thread (`model_slot`): a long run
  (a 2048-token text) holds one core while the other keeps serving everyone else's short runs,
  instead of two-thread runs from many sessions fighting over the same two cores.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import hashlib
import json
import os
import shutil
import tempfile
import threading
import weakref
from collections.abc import Iterator
from pathlib import Path

import streamlit as st
import torch

from server.lru import ByteLRU
from transformer import api, languages
from transformer.checkpoints import budget, catalog, importers, sources, uploads
from transformer.checkpoints.format import Checkpoint
from transformer.checkpoints.tokenizer import Tokenizer
from transformer.model.device import torch_threads
from transformer.model.trace import AttentionMaps, Stream, Trace
from transformer.train.jobs import pid_alive
from viz import grid

FALLBACK_TEXT = "the big dog near the old tables sees the cats ."

# ---------------------------------------------------------------------------------------------
# Sharing two cores: torch threads and model runs.
# ---------------------------------------------------------------------------------------------

CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
MODEL_SLOTS = max(1, CORES)  # model runs at once, one torch thread each (benchmarks/classroom.py measures the choice)
THREADS_PER_RUN = 1  # intra-op torch threads for one model run
_slots = threading.BoundedSemaphore(MODEL_SLOTS)


@st.cache_resource
def use_one_torch_thread() -> bool:
    """One intra-op thread per model run, once per process: concurrency comes from MODEL_SLOTS runs side by side.

    With torch's default (a thread per core in every run) a few sessions running the model at once
    oversubscribe the cores and every run slows down; one thread each, a short run is never stuck
    behind a long one for longer than its own compute.
    """
    torch.set_num_threads(THREADS_PER_RUN)
    return True


@contextlib.contextmanager
def model_slot(wide: bool = False) -> Iterator[None]:
    """Hold one of the MODEL_SLOTS while running the model (waits when every slot is busy), on THREADS_PER_RUN.

    The thread count is set for the run itself, not only once at start: it is one setting for the
    whole process, and whatever else in it changed the count (a notebook, a test's reference
    computation) must not change how the app's runs round their sums.

    wide: a long run (the model view's light pass: seconds at 1024 tokens of a 30-layer model) also takes a
    second slot if one is free at this moment, never waiting for it, and runs on twice the threads; short
    runs that arrive meanwhile wait for one of the two, as they would behind two runs.
    """
    with _slots:
        extra = wide and MODEL_SLOTS > 1 and _slots.acquire(blocking=False)
        try:
            with torch_threads(THREADS_PER_RUN * (2 if extra else 1)):
                yield
        finally:
            if extra:
                _slots.release()


# ---------------------------------------------------------------------------------------------
# Memory budgets, fitted to this machine.
# ---------------------------------------------------------------------------------------------

BUDGET = budget.default_budget()  # one model, one trace (transformer/checkpoints/budget.py states the arithmetic)


# All traces together: a quarter of the machine's memory, between 512 MB and 3 GB (3 GB on a 24 GiB
# server; a 6 × 12-head trace at 512 tokens is 118 MB, a toy model's 32-token trace about 1 MB).
TRACE_CACHE_BYTES = int(min(3 * 1024**3, max(512 * 1024**2, (budget.physical_memory() or 8 * 1024**3) // 4)))
MAPS_CACHE_BYTES = 256 * 1024**2  # a 6 × 12 model view is 1.2 MB
LIGHT_PASS_BYTES = 256 * 1024**2  # a full trace whose attention maps would be larger: the model view uses the light pass


# ---------------------------------------------------------------------------------------------
# Checkpoints: one loaded model per identity.
# ---------------------------------------------------------------------------------------------


@st.cache_resource(max_entries=8, show_spinner="Loading the checkpoint…")
def load(identity: str, path: str) -> Checkpoint:
    """Load a catalogue checkpoint once per identity (`identity_of`): our file, a Hugging Face folder or a nanoGPT one."""
    with model_slot():
        return importers.load_any(path)


def identity_of(path: Path) -> str:
    """Path + mtime + size of a file (a folder: of each of its files): a rewritten model is loaded again."""
    return sources.identity(path)


# ---------------------------------------------------------------------------------------------
# Uploads: a private folder of this server process, a file only while it is being loaded.
# ---------------------------------------------------------------------------------------------

UPLOAD_PREFIX = "attnviz-uploads-"


@st.cache_resource
def upload_dir() -> Path:
    """This server's private upload folder (mode 0700), removed at exit; folders left by dead servers are removed now."""
    root = Path(tempfile.gettempdir())
    for old in root.glob(f"{UPLOAD_PREFIX}*"):
        pid = old.name.removeprefix(UPLOAD_PREFIX).split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    folder = Path(tempfile.mkdtemp(prefix=f"{UPLOAD_PREFIX}{os.getpid()}-"))
    atexit.register(shutil.rmtree, folder, True)
    return folder


@st.cache_resource
def kept_dir() -> Path:
    """This server's private folder (mode 0700) for what it keeps of uploads after loading them: their training
    snapshots, which the Training page reads from a file. Removed at exit (or by the next server, as `upload_dir`)."""
    upload_dir()  # first: it removes the folders dead servers left
    folder = Path(tempfile.mkdtemp(prefix=f"{UPLOAD_PREFIX}{os.getpid()}-kept-"))
    atexit.register(shutil.rmtree, folder, True)
    return folder


def upload_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def uploads_digest(files: list[tuple[str, str]]) -> str:
    """One digest for several uploaded files, from each one's (name, sha256): the names say what each file is."""
    return hashlib.sha256(json.dumps(sorted(files)).encode()).hexdigest()


@st.cache_resource(max_entries=8, show_spinner="Loading the checkpoint…")
def load_upload(digest: str, names: tuple[str, ...], _data: tuple[bytes, ...]) -> Checkpoint:
    """Load uploaded files (`uploads_digest` of them) as a checkpoint, once per digest and names.

    Everything is judged before a tensor is read (`uploads.prepare`: what the files are, a zip's
    members, a shard index's entries; then the loader: config, budget, headers). The accepted files
    are written atomically into a folder of this server's private upload folder named by the digest,
    under names no user chose, loaded, and the folder is removed: it exists only while it is read,
    and the session keeps the bytes should the model be evicted and loaded again. The user's file
    name only names the checkpoint in messages (shown literally).
    """
    upload = uploads.prepare(list(zip(names, _data, strict=True)), upload_limit_mb() * 2**20)
    folder = upload_dir() / digest[:32]
    shutil.rmtree(folder, ignore_errors=True)  # a folder left by an interrupted load of the same files
    folder.mkdir(mode=0o700)
    try:
        path = uploads.write(upload, folder)
        with model_slot():
            ckpt = importers.load_any(path)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if upload.snapshots is not None:
        keep_upload_snapshots(digest, upload.snapshots)
    return Checkpoint(model=ckpt.model, tokenizer=ckpt.tokenizer, training=ckpt.training, name=upload.name)


KEPT_SNAPSHOTS = 4  # the uploads whose training snapshots this server keeps on disk (the latest ones)


def keep_upload_snapshots(digest: str, data: bytes) -> Path:
    """Keep an upload's training snapshots file in the server's private `kept_dir`, where `shared.snapshots` reads it
    (as a shipped checkpoint's beside it); only the latest KEPT_SNAPSHOTS uploads' are kept."""
    folder = kept_dir()
    path = folder / f"{digest}.snapshots.safetensors"
    fd, tmp = tempfile.mkstemp(suffix=".tmp", dir=folder)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
    for old in sorted(folder.glob("*.snapshots.safetensors"), key=lambda p: p.stat().st_mtime)[:-KEPT_SNAPSHOTS]:
        old.unlink(missing_ok=True)
    return path


def upload_snapshots(digest: str | None) -> Path | None:
    """The training snapshots uploaded with upload `digest`, if the server still keeps them."""
    if not digest:
        return None
    path = kept_dir() / f"{digest}.snapshots.safetensors"
    return path if path.is_file() else None


class LinkedUploads:
    """The uploads a link can reopen in another session of this server: digest -> (file names, the loaded model).

    Weak references only: an upload stays reachable by its link while `load_upload`'s cache or some session still
    holds its model, and holding a link never keeps a model in memory. The digest (a sha256 of the files' names and
    contents) is the key: nobody can guess it without the files, and a link's digest opens nothing else.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[str, tuple[tuple[str, ...], weakref.ref]] = {}

    def add(self, digest: str, names: tuple[str, ...], ckpt: Checkpoint) -> None:
        with self._lock:
            self._held = {d: v for d, v in self._held.items() if v[1]() is not None}  # forget the ones collected
            self._held[digest] = (names, weakref.ref(ckpt))

    def get(self, digest: str) -> tuple[tuple[str, ...], Checkpoint] | None:
        with self._lock:
            names, ref = self._held.get(digest, ((), lambda: None))
        ckpt = ref()
        return None if ckpt is None else (names, ckpt)


@st.cache_resource
def linked_uploads() -> LinkedUploads:
    """This server's `LinkedUploads`, shared by every session."""
    return LinkedUploads()


def upload_limit_mb() -> int:
    """The most one upload may hold, in MB (Streamlit's server.maxUploadSize; all files of an upload together)."""
    return int(st.get_option("server.maxUploadSize"))


# ---------------------------------------------------------------------------------------------
# A multilingual translator's languages: found once per checkpoint, each source's tokenizer made once.
# ---------------------------------------------------------------------------------------------


@st.cache_resource(max_entries=64, show_spinner=False)
def languages_of(identity: str, _ckpt: Checkpoint) -> languages.Languages | None:
    """An encoder-decoder's language tokens (None: it names no languages), once per checkpoint identity."""
    return languages.of(_ckpt)


@st.cache_resource(max_entries=4, show_spinner="Preparing the tokenizer for this source language…")
def source_tokenizer(identity: str, source: str, _ckpt: Checkpoint) -> Tokenizer:
    """The checkpoint's tokenizer with `source` in its template, once per (identity, source); the loaded one unchanged.

    A copy made from the JSON: for a 60 000-token BPE 0.5 s and 15 MB (measured), several times that for NLLB's
    256 000 tokens; so made once, not on every run of every session that reads it, and only a few kept. The
    template's own language is the loaded tokenizer itself, no copy.
    """
    return languages.with_source(_ckpt.tokenizer, languages_of(identity, _ckpt), source)


def language_identity(identity: str, source: str | None, target: str) -> str:
    """What a translator set to these languages is cached by: every value made from it (tokens, traces, figures,
    head jobs) differs with them, so each choice is a checkpoint identity of its own."""
    return f"{identity}|{source or ''}>{target}"


# ---------------------------------------------------------------------------------------------
# Tokens, traces and pooled maps: once per (identity, text, target).
# ---------------------------------------------------------------------------------------------


@st.cache_resource
def trace_cache() -> ByteLRU[Trace]:
    """The process-wide trace cache, shared by every session: at most TRACE_CACHE_BYTES of traces (the latest always kept)."""
    return ByteLRU(TRACE_CACHE_BYTES, Trace.nbytes)


@st.cache_resource
def maps_cache() -> ByteLRU[AttentionMaps]:
    return ByteLRU(MAPS_CACHE_BYTES, AttentionMaps.nbytes)


@st.cache_resource(max_entries=256, show_spinner=False)
def tokens_for(identity: str, text: str, target: str | None, _ckpt: Checkpoint) -> tuple[Stream, Stream | None]:
    """The source tokens and the decoder's tokens (greedy translation when `target` is None), once per key.

    Only greedy decoding runs the model and takes a model slot; tokenizing alone never waits behind a long run.
    """
    decodes = _ckpt.config.kind == "encoder-decoder" and target is None
    with model_slot() if decodes else contextlib.nullcontext():
        return api.streams(_ckpt, text, target)


def trace_fits(ckpt: Checkpoint, tokens: tuple[Stream, Stream | None]) -> bool:
    """Whether a full trace of these tokens fits this server's budget for one trace (else: the light pass, or cut)."""
    source, target = tokens
    return budget.trace_bytes(ckpt.config, len(source.ids), None if target is None else len(target.ids)) <= BUDGET.trace_bytes


def trace_key(identity: str, text: str, target: str | None) -> tuple:
    """What a trace is cached by: the same key always means the same numbers."""
    return (identity, text, target)


def trace_for(identity: str, text: str, target: str | None, ckpt: Checkpoint) -> Trace:
    """The model's full trace of `text` (and `target`), computed once and shared read-only (float32, as computed)."""

    def run() -> Trace:
        tokens = tokens_for(identity, text, target, ckpt)
        with st.spinner("Running the model…"), model_slot():
            return api.trace_text(ckpt, text, target, tokens=tokens)

    return trace_cache().get_or_create(trace_key(identity, text, target), run)


def attention_map_bytes(ckpt: Checkpoint, tokens: tuple[Stream, Stream | None]) -> int:
    """Bytes of the scores and weights (float32) a full trace of these tokens would hold, over every kind, layer and head."""
    cfg = ckpt.config
    source, target = tokens
    n_src, n_tgt = len(source.ids), len(target.ids) if target is not None else 0
    cells = {"encoder self": n_src * n_src, "decoder self": n_tgt * n_tgt if cfg.has_encoder else n_src * n_src}
    cells["cross"] = n_tgt * n_src
    return sum(cells[kind] * cfg.layers_of(kind) for kind in cfg.attention_kinds) * cfg.n_heads * 2 * 4


def maps_for(identity: str, text: str, target: str | None, ckpt: Checkpoint) -> AttentionMaps:
    """Every head's weights pooled for the model view.

    From the full trace when one is cached, or when it is small enough to make now (so the model
    still runs once per text, whichever page comes first); past LIGHT_PASS_BYTES (about 600
    tokens for 6 × 12 heads) from the light pass instead, which never builds the full trace: at
    2048 tokens that trace is 1.6 GB and seconds. Both give the same numbers up to float rounding
    (`api.pool_trace` and `api.attention_maps`, tested); the other pages then make the full trace
    when they are opened.
    """
    key = trace_key(identity, text, target)

    def run() -> AttentionMaps:
        trace = trace_cache().get(key)
        tokens = tokens_for(identity, text, target, ckpt)
        if trace is None and attention_map_bytes(ckpt, tokens) <= LIGHT_PASS_BYTES and trace_fits(ckpt, tokens):
            trace = trace_for(identity, text, target, ckpt)
        if trace is not None:
            return api.pool_trace(trace, grid.MAX_CELLS)
        with st.spinner("Running the model…"), model_slot(wide=True):
            return api.attention_maps(ckpt, text, target, grid.MAX_CELLS, tokens=tokens)

    return maps_cache().get_or_create(key, run)


# ---------------------------------------------------------------------------------------------
# Training snapshots.
# ---------------------------------------------------------------------------------------------


@st.cache_resource(max_entries=4, show_spinner="Loading the training snapshots…")
def snapshots(identity: str, path: str) -> list[tuple[int, Checkpoint]]:
    """A checkpoint's training snapshots, loaded once per file identity: [(step, Checkpoint)] in step order."""
    from transformer.checkpoints.snapshots import load_snapshots

    with model_slot():
        return load_snapshots(path)


def snapshots_belong(snaps: list[tuple[int, Checkpoint]], ckpt: Checkpoint) -> bool:
    """Whether `snaps` are snapshots of `ckpt`'s model: some, of the same kind, layers, heads and tokenizer."""

    def shape(c: Checkpoint) -> tuple:
        return c.config.kind, c.config.n_layers, c.config.dec_layers, c.config.n_heads, c.tokenizer.to_json()

    return bool(snaps) and shape(snaps[0][1]) == shape(ckpt)


@st.cache_resource(max_entries=4, show_spinner=False)
def snapshot_dtypes(identity: str, path: str) -> tuple[str, ...]:
    """The dtypes a snapshots file stores (its header, read once per file identity)."""
    from transformer.checkpoints.snapshots import stored_dtypes

    return stored_dtypes(path)


def snapshot_trace(
    identity: str, path: str, index: int, tokens_of: str, text: str, target: str | None, tokens: tuple[Stream, Stream | None]
) -> Trace:
    """Snapshot `index` of the file `path` (`identity_of` it) run on `tokens`: those of checkpoint `tokens_of` for `text`."""
    step, ckpt = snapshots(identity, path)[index]
    key = (identity, path, tokens_of, text, target, "snapshot", step)

    def run() -> Trace:
        with model_slot():
            return api.trace_text(ckpt, text, target, tokens=tokens)

    return trace_cache().get_or_create(key, run)


# ---------------------------------------------------------------------------------------------
# Process-wide odds and ends.
# ---------------------------------------------------------------------------------------------


@st.cache_resource
def freeze_startup_objects() -> bool:
    """Move everything alive after the first run (modules, the first model) out of the garbage collector's sight.

    Streamlit runs a full collection after every script run (`runner.postScriptGC`); with torch,
    plotly and pandas loaded that walks ~370 000 objects, 150 ms on this machine, which landed in the
    middle of the next click's redraw. Frozen, those objects are never walked again (a collection
    then takes microseconds); what later runs allocate is still collected as usual.
    """
    gc.collect()
    gc.freeze()
    return True


@st.cache_data
def examples() -> dict[str, list[dict[str, str]]]:
    try:
        return json.loads(catalog.EXAMPLES_FILE.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def examples_for(name: str, task: str | None = None) -> list[dict[str, str]]:
    """The example texts the sidebar offers for checkpoint `name`: its own (a shipped model's), else those of its
    training `task` (`catalog.task_of`: an upload, a model trained here or found in a folder): the shipped model's of
    that task, or texts made by the task's generator; else the generic English ones."""
    data = examples()
    if name in data:
        return data[name]
    if task is not None:
        if catalog.TASK_EXAMPLES.get(task) in data:
            return data[catalog.TASK_EXAMPLES[task]]
        made = task_examples(task)
        if made:
            return made
    return data.get("generic") or [{"label": "Example", "text": FALLBACK_TEXT}]


@st.cache_data(max_entries=32)
def task_examples(task: str) -> list[dict[str, str]]:
    """Examples of a task the examples file has none of (copy, sort, addition): its own generator's test texts."""
    from transformer.data.tasks import example_texts

    return [{"label": f"{task} example {i + 1}: {text}"[:60], "text": text} for i, text in enumerate(example_texts(task))]


@st.cache_data(max_entries=256)
def entry_task(path: str, identity: str) -> str | None:
    """The training task a catalogue checkpoint's file records (its header; cached per file version, `identity`)."""
    return catalog.task_of(catalog.training_of(catalog.CatalogEntry("", "", Path(path))))
