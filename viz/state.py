"""The app's Streamlit layer: cached models and traces, the sidebar, the selection that lives in the URL.

The model runs once per (checkpoint identity, text, target): the loaded checkpoint is a `st.cache_resource`
entry and traces live in one process-wide LRU bounded by bytes (a trace is frozen and read-only, so
sessions share it without the pickling copy `st.cache_data` would make on every hit). The full trace
is made only when a page asks for it (`Context.trace`); the model view asks for the lighter pooled
maps (`Context.maps`), taken from the full trace when one is cached, else from the model's light
pass. Layer, head, kind and query token are plain session values ("sel_*"), so changing them
re-draws figures from the cached trace.
"""

from __future__ import annotations

import gc
import hashlib
import json
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from transformer import api, catalog
from transformer.checkpoint import Checkpoint, CheckpointError, load_checkpoint
from transformer.trace import AttentionMaps, Stream, Trace, query_tokens

from . import grid, urlstate
from .lru import ByteLRU
from .urlstate import MAX_TEXT_CHARS

UPLOAD = "upload"  # the checkpoint picker's "Upload…" choice
DEFAULT_CHECKPOINT = "translator"
EXAMPLES_FILE = Path(__file__).resolve().parent.parent / "assets" / "examples.json"
FALLBACK_TEXT = "the big dog near the old tables sees the cats ."
AUTOPLAY_SECONDS = 1.5


@dataclass(frozen=True)
class Context:
    """Everything a page needs for this run: the checkpoint, its trace of the current text, and the selection."""

    name: str  # catalogue name, or "upload"
    label: str
    identity: str  # what the caches are keyed by: path+mtime+size, or the upload's sha256
    path: str
    hf_dir: bool
    ckpt: Checkpoint
    tokens: tuple[Stream, Stream | None] | None  # (source, decoder tokens); None when the text is empty
    text: str
    target: str | None  # the user's decoder text; None = greedy decoding
    kind: str
    layer: int
    head: int
    query: int
    presentation: bool
    device: str

    @property
    def n_layers(self) -> int:
        return self.ckpt.config.n_layers

    @property
    def trace(self) -> Trace | None:
        """The full trace of this text (made on first use, then cached); None when the text is empty."""
        if self.tokens is None:
            return None
        return trace_for(self.identity, self.path, self.hf_dir, self.text, self.target)

    @property
    def maps(self) -> AttentionMaps | None:
        """Every head's pooled weights (the model view); None when the text is empty."""
        if self.tokens is None:
            return None
        return maps_for(self.identity, self.path, self.hf_dir, self.text, self.target)

    @property
    def n_heads(self) -> int:
        return self.ckpt.config.n_heads

    @property
    def trace_key(self) -> tuple:
        """What the trace is cached by: the same key always means the same numbers."""
        return (self.identity, self.path, self.hf_dir, self.text, self.target)


# ---------------------------------------------------------------------------------------------
# Caches: one loaded model per checkpoint identity, one trace per (identity, text, target).
# ---------------------------------------------------------------------------------------------


@st.cache_resource(max_entries=8, show_spinner="Loading the checkpoint…")
def load(identity: str, path: str, hf_dir: bool) -> Checkpoint:
    """Load a checkpoint once per identity (path + mtime + size, or an upload's sha256)."""
    if hf_dir:
        from transformer import hf_import  # lazily: only MiniLM needs it

        return hf_import.load_any(path)
    return load_checkpoint(path)


TRACE_BUDGET_BYTES = 3 * 1024**3  # one 6 × 12 trace at 2048 tokens is ~2.4 GB; a 32-token toy trace is ~1 MB


@st.cache_resource
def trace_cache() -> ByteLRU[Trace]:
    """The process-wide trace cache, shared by every session: at most TRACE_BUDGET_BYTES of traces (the latest always kept)."""
    return ByteLRU(TRACE_BUDGET_BYTES, Trace.nbytes)


@st.cache_resource(max_entries=256, show_spinner=False)
def tokens_for(identity: str, path: str, hf_dir: bool, text: str, target: str | None) -> tuple[Stream, Stream | None]:
    """The source tokens and the decoder's tokens (greedy translation when `target` is None), once per key."""
    return api.streams(load(identity, path, hf_dir), text, target)


def trace_for(identity: str, path: str, hf_dir: bool, text: str, target: str | None) -> Trace:
    """The model's full trace of `text` (and `target`), computed once and shared read-only (float32, as computed)."""
    key = (identity, str(path), hf_dir, text, target)  # = Context.trace_key

    def run() -> Trace:
        tokens = tokens_for(identity, path, hf_dir, text, target)
        with st.spinner("Running the model…"):
            return api.trace_text(load(identity, path, hf_dir), text, target, tokens=tokens)

    return trace_cache().get_or_create(key, run)


MAPS_BUDGET_BYTES = 256 * 1024**2  # a 6 × 12 model view is 1.2 MB


@st.cache_resource
def maps_cache() -> ByteLRU[AttentionMaps]:
    return ByteLRU(MAPS_BUDGET_BYTES, AttentionMaps.nbytes)


@st.cache_resource(max_entries=4, show_spinner="Loading the training snapshots…")
def snapshots(identity: str, path: str) -> list[tuple[int, Checkpoint]]:
    """A checkpoint's training snapshots, loaded once per file identity: [(step, Checkpoint)] in step order."""
    from transformer.snapshots import load_snapshots

    return load_snapshots(path)


def snapshot_trace(ctx: Context, identity: str, path: str, index: int) -> Trace:
    """Snapshot `index` of the file `path` (`identity_of` it) run on this context's exact tokens, as every other page reads them."""
    step, ckpt = snapshots(identity, path)[index]
    key = (identity, path, False, ctx.identity, ctx.text, ctx.target, "snapshot", step)  # ctx.identity: whose tokens

    def run() -> Trace:
        return api.trace_text(ckpt, ctx.text, ctx.target, tokens=ctx.tokens)

    return trace_cache().get_or_create(key, run)


LIGHT_PASS_BYTES = 256 * 1024**2  # a full trace whose attention maps would be larger: the model view uses the light pass


def attention_map_bytes(ckpt: Checkpoint, tokens: tuple[Stream, Stream | None]) -> int:
    """Bytes of the scores and weights (float32) a full trace of these tokens would hold, over every kind, layer and head."""
    cfg = ckpt.config
    source, target = tokens
    n_src, n_tgt = len(source.ids), len(target.ids) if target is not None else 0
    cells = {"encoder self": n_src * n_src, "decoder self": n_tgt * n_tgt if cfg.has_encoder else n_src * n_src}
    cells["cross"] = n_tgt * n_src
    return sum(cells[kind] for kind in cfg.attention_kinds) * cfg.n_layers * cfg.n_heads * 2 * 4


def maps_for(identity: str, path: str, hf_dir: bool, text: str, target: str | None) -> AttentionMaps:
    """Every head's weights pooled for the model view.

    From the full trace when one is cached, or when it is small enough to make now (so the model
    still runs once per text, whichever page comes first); past LIGHT_PASS_BYTES (about 600
    tokens for 6 × 12 heads) from the light pass instead, which never builds the full trace: at
    2048 tokens that trace is 1.6 GB and seconds. Both give the same numbers up to float rounding
    (`api.pool_trace` and `api.attention_maps`, tested); the other pages then make the full trace
    when they are opened.
    """
    key = (identity, str(path), hf_dir, text, target)

    def run() -> AttentionMaps:
        trace = trace_cache().get(key)
        tokens = tokens_for(identity, path, hf_dir, text, target)
        ckpt = load(identity, path, hf_dir)
        if trace is None and attention_map_bytes(ckpt, tokens) <= LIGHT_PASS_BYTES:
            trace = trace_for(identity, path, hf_dir, text, target)
        if trace is not None:
            return api.pool_trace(trace, grid.MAX_CELLS)
        with st.spinner("Running the model…"):
            return api.attention_maps(ckpt, text, target, grid.MAX_CELLS, tokens=tokens)

    return maps_cache().get_or_create(key, run)


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


def identity_of(path: Path) -> str:
    stat = path.stat()
    return f"{path}:{stat.st_mtime_ns}:{stat.st_size}"


def save_upload(data: bytes, filename: str) -> tuple[str, Path]:
    """Write uploaded bytes to a temp folder named by their sha256 (never executed: loaded as safetensors only).

    The file keeps a sanitised form of its name, so the loader's messages name the file the user chose.
    """
    digest = hashlib.sha256(data).hexdigest()
    folder = Path(tempfile.gettempdir()) / "attnviz-uploads" / digest
    folder.mkdir(parents=True, exist_ok=True)
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", Path(filename).stem)[:80] or "upload"
    path = folder / f"{stem}.safetensors"
    if not path.exists():
        path.write_bytes(data)
    return f"upload:{digest}", path


@st.cache_data
def examples() -> dict[str, list[dict[str, str]]]:
    try:
        return json.loads(EXAMPLES_FILE.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def examples_for(name: str) -> list[dict[str, str]]:
    data = examples()
    return data.get(name) or data.get("generic") or [{"label": "Example", "text": FALLBACK_TEXT}]


# ---------------------------------------------------------------------------------------------
# Selection state. Canonical values live under "sel_*" (plain session values survive page
# switches); each widget has its own key "w_*" seeded from the canonical value before it is drawn.
# ---------------------------------------------------------------------------------------------

SELECTION = ("sel_kind", "sel_layer", "sel_head", "sel_query")


def _copy(src: str, dst: str, then=None) -> None:
    st.session_state[dst] = st.session_state[src]
    if then is not None:
        then()


def bind(name: str, widget: str | None = None, on_change=None) -> dict:
    """Keyword arguments for a widget that edits canonical value `name`; its widget key is `w_<name>`.

    Widget state is dropped by Streamlit whenever a run does not draw the widget (another page, or
    an interrupted run), so the value itself lives under the plain session key `name`.
    """
    key = widget or f"w_{name.removeprefix('sel_')}"
    st.session_state[key] = st.session_state[name]
    return dict(key=key, on_change=_copy, args=(key, name, on_change))


def step(name: str, delta: int, n: int) -> None:
    """Button callback: move a canonical index by delta, wrapping around 0..n-1."""
    st.session_state[name] = (st.session_state[name] + delta) % n


def set_selection(kind: str | None = None, layer: int | None = None, head: int | None = None) -> None:
    for key, value in (("sel_kind", kind), ("sel_layer", layer), ("sel_head", head)):
        if value is not None:
            st.session_state[key] = value


def advance_autoplay(n_layers: int, n_heads: int) -> None:
    """Autoplay tick: next head, then the next layer's first head, around again; at most one step per interval."""
    now = time.monotonic()
    if now - st.session_state.get("_autoplay_at", 0.0) < AUTOPLAY_SECONDS * 0.8:
        return
    st.session_state["_autoplay_at"] = now
    head = st.session_state["sel_head"] + 1
    if head >= n_heads:
        head = 0
        st.session_state["sel_layer"] = (st.session_state["sel_layer"] + 1) % n_layers
    st.session_state["sel_head"] = head


# ---------------------------------------------------------------------------------------------
# First run: the URL seeds the session.
# ---------------------------------------------------------------------------------------------


def init_session(entries: dict[str, catalog.CatalogEntry], pages: tuple[str, ...]) -> None:
    """On a session's first run, read the link's query parameters into session state (validated)."""
    if st.session_state.get("_initialised"):
        return
    st.session_state["_initialised"] = True
    view = urlstate.parse(st.query_params.to_dict(), tuple(entries), pages)
    default = DEFAULT_CHECKPOINT if DEFAULT_CHECKPOINT in entries else next(iter(entries), UPLOAD)
    name = view.checkpoint or default
    st.session_state["sel_checkpoint"] = name
    st.session_state["sel_text"] = view.text if view.text is not None else examples_for(name)[0]["text"]
    st.session_state["sel_target"] = view.target
    st.session_state["sel_auto_target"] = view.target is None
    st.session_state["sel_presentation"] = view.presentation
    st.session_state["sel_kind"] = view.kind or ""
    st.session_state["sel_layer"] = view.layer or 0
    st.session_state["sel_head"] = view.head or 0
    st.session_state["sel_query"] = view.query or 0
    st.session_state["_warnings"] = list(view.warnings)
    st.session_state["_goto"] = view.page


def _on_checkpoint_change() -> None:
    name = st.session_state["sel_checkpoint"]
    if name != UPLOAD:
        st.session_state["sel_text"] = examples_for(name)[0]["text"]
    st.session_state["sel_target"] = None
    st.session_state["sel_auto_target"] = True
    for key in SELECTION:
        st.session_state[key] = "" if key == "sel_kind" else 0


def _on_example() -> None:
    choice = st.session_state.get("example")
    if choice is None:
        return
    name = st.session_state["sel_checkpoint"]
    for ex in examples_for(name if name != UPLOAD else "generic"):
        if ex["label"] == choice:
            st.session_state["sel_text"] = ex["text"]
            st.session_state["sel_target"] = None
            st.session_state["sel_auto_target"] = True
    st.session_state["example"] = None


def _on_auto_target() -> None:
    if st.session_state["sel_auto_target"]:
        st.session_state["sel_target"] = None
    else:  # start editing from the greedy translation
        st.session_state["sel_target"] = st.session_state.get("_greedy_text", "")


# ---------------------------------------------------------------------------------------------
# The sidebar and the per-run context.
# ---------------------------------------------------------------------------------------------


def _load_error(message: str) -> None:
    """Show a loading problem in the sidebar, and keep it for the page (which then shows it instead of a figure)."""
    st.sidebar.error(message)
    st.session_state["_load_error"] = message


def short_label(label: str) -> tuple[str, str]:
    """A catalogue label split into the name the picker shows and the detail under it.

    "Translator (Toy English → target language, encoder-decoder)" → ("Translator", "Toy English → ...").
    """
    name, sep, detail = label.partition(" (")
    return (name, detail.removesuffix(")")) if sep else (label, "")


def _upload_limit_mb() -> int:
    return int(st.get_option("server.maxUploadSize"))


def sidebar(entries: dict[str, catalog.CatalogEntry]) -> Context | None:
    """Draw the sidebar (checkpoint, examples, text, target, presentation, device) and build this run's context."""
    sb = st.sidebar
    st.session_state["_load_error"] = None
    names = [*entries, UPLOAD]
    if st.session_state.get("sel_checkpoint") not in names:
        st.session_state["sel_checkpoint"] = names[0]
    sb.selectbox(
        "Checkpoint",
        names,
        format_func=lambda n: "Upload…" if n == UPLOAD else short_label(entries[n].label)[0],
        **bind("sel_checkpoint", "w_checkpoint", _on_checkpoint_change),
    )
    name = st.session_state["sel_checkpoint"]
    if name != UPLOAD and short_label(entries[name].label)[1]:
        sb.caption(short_label(entries[name].label)[1])
    ckpt, label = None, ""
    if name == UPLOAD:
        limit = _upload_limit_mb()
        upload = sb.file_uploader(
            f"Upload a checkpoint (.safetensors, at most {limit} MB)",
            type=["safetensors"],
            key="upload",
            help=f"One .safetensors file saved by this project's save_checkpoint. Size limit: {limit} MB.",
        )
        if upload is None:
            sb.info(f"Choose a .safetensors checkpoint file (at most {limit} MB).")
        else:
            identity, path = save_upload(upload.getvalue(), upload.name)
            try:
                ckpt = load(identity, str(path), False)
                label = f"Uploaded: {upload.name}"
            except CheckpointError as e:
                _load_error(f"Could not load the uploaded file: {e}")
            except Exception as e:  # anything else the loader hits: a message, never a traceback
                _load_error(f"Could not load the uploaded file {upload.name}: {type(e).__name__}: {e}")
        identity_path = (identity, path, False) if ckpt is not None else None
    else:
        entry = entries[name]
        identity = identity_of(entry.path) if not entry.hf_dir else f"hf:{entry.path}"
        try:
            ckpt = load(identity, str(entry.path), entry.hf_dir)
            label = entry.label
        except ImportError:
            _load_error(f"{entry.label} needs transformer.hf_import, which is not available in this install.")
        except Exception as e:
            _load_error(f"Could not load {entry.label}: {e}")
        identity_path = (identity, entry.path, entry.hf_dir)

    ex_name = name if name != UPLOAD else "generic"
    sb.selectbox(
        "Examples",
        [ex["label"] for ex in examples_for(ex_name)],
        index=None,
        placeholder="Pick an example sentence…",
        key="example",
        on_change=_on_example,
    )
    sb.text_area(
        "Text",
        max_chars=MAX_TEXT_CHARS,
        height=100,
        help="Press Ctrl+Enter (or click outside) to run the model on it.",
        **bind("sel_text", "w_text"),
    )
    is_enc_dec = ckpt is not None and ckpt.config.kind == "encoder-decoder"
    if is_enc_dec:
        sb.toggle("Target: greedy decoding", **bind("sel_auto_target", "w_auto_target", _on_auto_target))
        if not st.session_state["sel_auto_target"]:
            if st.session_state.get("sel_target") is None:
                st.session_state["sel_target"] = st.session_state.get("_greedy_text", "")
            sb.text_input("Target (decoder input)", max_chars=MAX_TEXT_CHARS, **bind("sel_target", "w_target"))
    sb.toggle("Presentation mode (large fonts)", **bind("sel_presentation", "w_presentation"))
    if ckpt is not None:
        sb.caption(
            f"Device: `{ckpt.model.device}` · {ckpt.config.kind} · {ckpt.config.n_layers} layers × {ckpt.config.n_heads} heads"
        )
    if ckpt is None:
        return None

    text = st.session_state["sel_text"][:MAX_TEXT_CHARS]
    target = None if not is_enc_dec or st.session_state["sel_auto_target"] else (st.session_state.get("sel_target") or "")
    tokens = None
    if text.strip():
        identity, path, hf_dir = identity_path
        tokens = tokens_for(identity, str(path), hf_dir, text, target)
        if is_enc_dec and target is None and tokens[1] is not None:
            st.session_state["_greedy_text"] = tokens[1].text
    return _with_selection(name, label, identity_path, ckpt, tokens, text, target)


def _with_selection(name, label, identity_path, ckpt, tokens, text, target) -> Context:
    """Validate the canonical selection against this model (clamping with a warning) and freeze it."""
    warnings = st.session_state.setdefault("_warnings", [])
    kinds = ckpt.config.attention_kinds
    kind = st.session_state.get("sel_kind") or kinds[0]
    if kind not in kinds:
        warnings.append(f"This model has no {kind} attention; showing {kinds[0]}.")
        kind = kinds[0]
    n_layers = ckpt.config.n_layers
    layer = urlstate.clamp(int(st.session_state.get("sel_layer", 0)), n_layers, "layer", warnings)
    head = urlstate.clamp(int(st.session_state.get("sel_head", 0)), ckpt.config.n_heads, "head", warnings)
    n_q = len(query_tokens(kind, *tokens, ckpt.config.has_encoder)) if tokens is not None else 1
    query = urlstate.clamp(int(st.session_state.get("sel_query", 0)), max(n_q, 1), "query token", warnings)
    st.session_state.update(sel_kind=kind, sel_layer=layer, sel_head=head, sel_query=query)
    return Context(
        name=name,
        label=label,
        identity=identity_path[0],
        path=str(identity_path[1]),
        hf_dir=identity_path[2],
        ckpt=ckpt,
        tokens=tokens,
        text=text,
        target=target,
        kind=kind,
        layer=layer,
        head=head,
        query=query,
        presentation=bool(st.session_state.get("sel_presentation")),
        device=str(ckpt.model.device),
    )


def sync_url(ctx: Context | None, with_query: bool = False) -> None:
    """Write the current view into the URL's query parameters (the page is in the path)."""
    if ctx is None:
        return
    params = {"text": ctx.text}
    if ctx.name != UPLOAD:
        params["checkpoint"] = ctx.name
    if ctx.target is not None:
        params["target"] = ctx.target
    params.update(kind=ctx.kind, layer=str(st.session_state["sel_layer"]), head=str(st.session_state["sel_head"]))
    if with_query:
        params["q"] = str(st.session_state["sel_query"])
    if ctx.presentation:
        params["present"] = "1"
    if st.query_params.to_dict() != params:
        st.query_params.from_dict(params)


def show_messages(ctx: Context | None) -> None:
    """Warnings collected this run (URL problems, clamped values, truncated text), shown once."""
    for message in st.session_state.pop("_warnings", []):
        st.warning(message)
    st.session_state["_warnings"] = []
    if ctx is None or ctx.tokens is None:
        return
    source, target = ctx.tokens
    for stream, what in ((source, "text"), (target if ctx.target is not None else None, "target")):
        if stream is not None and stream.truncated:
            kept = len(stream.tokens)
            st.warning(
                f"The {what} is longer than this model reads ({ctx.ckpt.config.max_len} tokens): "
                f"the last {stream.truncated} tokens were cut; {kept} are shown."
            )


def require_trace(ctx: Context | None) -> Trace:
    """The full trace for pages that need one; otherwise a hint and the page stops here (the sidebar keeps working)."""
    require_text(ctx)
    return ctx.trace


def require_text(ctx: Context | None) -> Context:
    """The context when there is a checkpoint and some text; otherwise a hint, and the page stops here."""
    if ctx is None:
        error = st.session_state.get("_load_error")
        if error:
            st.error(error)
        else:
            st.info("Pick a checkpoint in the sidebar (or upload one) to begin.")
        st.stop()
    if ctx.tokens is None:
        st.info("The text is empty. Type a sentence in the sidebar, or pick one of the examples.")
        st.stop()
    return ctx


def greedy_text(ctx: Context) -> str:
    """The greedy translation of the text (decoded once per text and cached; no trace is made for it)."""
    return tokens_for(ctx.identity, ctx.path, ctx.hf_dir, ctx.text, None)[1].text


def leave_legacy_pages_mode() -> None:
    """Make sure app.py is the entry point, even though our pages live in a folder named `pages/`.

    Streamlit runs a project with a `pages/` folder in its legacy multipage mode (each page file runs
    on its own) until some script calls `st.navigation`. A shared link opened first on a fresh server
    (e.g. /qkv) would then run pages/qkv.py without app.py's sidebar and state. Flip that flag and
    rerun: from then on every run starts at app.py.
    """
    from streamlit.runtime.pages_manager import PagesManager

    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        st.rerun()


def context() -> Context | None:
    """This run's context, built by app.py (every page starts here)."""
    leave_legacy_pages_mode()
    return st.session_state.get("_ctx")
