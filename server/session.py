"""What belongs to one browser session: its selection, its sidebar, its URL, its messages.

Everything here reads or writes `st.session_state`, which is this session's alone. What is computed
and shared by every session (models, traces, pooled maps, uploads) lives in `server/shared.py`; this
module asks it for values and never stores them itself. Layer, head, kind and query token are plain
session values ("sel_*"), so changing them re-draws figures from the shared trace.

Anything that came from the user (a link's parameters, an uploaded file's name, a checkpoint's
metadata) enters a Markdown message only through `literal.md`, which shows it as typed.
"""

from __future__ import annotations

import functools
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import streamlit as st
from streamlit.runtime.scriptrunner import get_script_run_ctx
from streamlit.runtime.scriptrunner_utils.script_run_context import ThreadState

from server import shared, urlstate
from server.literal import md
from transformer import languages
from transformer.checkpoints import budget, catalog
from transformer.checkpoints.format import Checkpoint, CheckpointError
from transformer.model.trace import AttentionMaps, Stream, Trace, query_tokens

UPLOAD = "upload"  # the checkpoint picker's "Upload…" choice
# What the uploader lets a browser pick: checkpoints, a Hugging Face folder's files (and the ones it also holds), zips.
UPLOAD_TYPES = ["safetensors", "json", "bin", "pt", "pth", "pkl", "zip", "txt", "md", "spm", "model"]
DEFAULT_CHECKPOINT = "translator"
AUTOPLAY_SECONDS = 1.5
PICK_TELLING = "_pick_telling"  # set when no head is chosen yet: the view opens on the model's most telling head
STRETCH = "sel_stretch"  # the Attention page's "Stretch colours to this head" (kept across pages; widget attn_stretch)
PASTE_CHARS = 1_000_000  # a paste is cut here before the tokenizer sees it (then to what the model reads)


@dataclass(frozen=True)
class Context:
    """Everything a page needs for this run: the checkpoint, its tokens of the current text, and the selection."""

    name: str  # catalogue name, or "upload"
    label: str
    identity: str  # what the shared caches are keyed by: path+mtime+size, or the upload's sha256 (+ the chosen languages)
    ckpt: Checkpoint
    tokens: tuple[Stream, Stream | None] | None  # (source, decoder tokens); None when the text is empty
    text: str
    target: str | None  # the user's decoder text; None = greedy decoding
    source_lang: str | None  # a multilingual translator's: the language token marking the source (None: none)
    target_lang: str | None  # and the one it translates into (None: the model names no languages)
    kind: str
    layer: int
    head: int
    query: int
    presentation: bool
    device: str

    @property
    def n_layers(self) -> int:
        """Layers of the selected attention kind (an encoder-decoder's decoder may be deeper or shallower than its encoder)."""
        return self.ckpt.config.layers_of(self.kind)

    @property
    def n_heads(self) -> int:
        return self.ckpt.config.n_heads

    @property
    def trace(self) -> Trace | None:
        """The full trace of this text (made on first use, then shared); None when the text is empty.

        A text whose full trace would not fit this server's memory budget stops the page here with a message.
        """
        if self.tokens is None:
            return None
        stop_unless_trace_fits(self)
        return shared.trace_for(self.identity, self.text, self.target, self.ckpt)

    @property
    def maps(self) -> AttentionMaps | None:
        """Every head's pooled weights (the model view); None when the text is empty."""
        if self.tokens is None:
            return None
        return shared.maps_for(self.identity, self.text, self.target, self.ckpt)

    @property
    def trace_key(self) -> tuple:
        """What the trace is cached by: the same key always means the same numbers."""
        return shared.trace_key(self.identity, self.text, self.target)


# ---------------------------------------------------------------------------------------------
# Selection state. Canonical values live under "sel_*" (plain session values survive page
# switches); each widget has its own key "w_*" seeded from the canonical value before it is drawn.
# ---------------------------------------------------------------------------------------------

SELECTION = ("sel_kind", "sel_layer", "sel_head", "sel_query")


def _copy(src: str, dst: str, then=None) -> None:
    if _not_touched(src):
        # Nobody touched widget `src`: its browser sent the value it held when a timer fired or a click inside a
        # fragment was sent, before the value this server set since (a click's step, a class's new view, autoplay's
        # next kind) reached it. Taking it would undo that change, and the next full run would write the undone view
        # into the link (seen in Chromium: a student's head click lost).
        st.session_state[src] = st.session_state[dst]
        return
    st.session_state[dst] = st.session_state[src]
    if then is not None:
        then()


OUTSIDE = "_outside_fragments"  # the keys of the bound widgets last drawn outside every fragment (`bind`)


def _not_touched(widget: str, outside: bool = False) -> bool:
    """Whether this run cannot hold a person's change of `widget`, so a new value of it is the browser's older one:
    a run of widgetless timers alone, a rerun the server asked for, or a fragment's run for a widget drawn outside
    every fragment (`outside`, or as `bind` last saw it): a person's change of such a widget is a run of the whole app."""
    if _timers_alone() or st.session_state.get(SERVER_RERUN):
        return True
    run = get_script_run_ctx()
    fragment_run = bool(run is not None and run.fragment_ids_this_run)
    return fragment_run and (outside or widget in st.session_state.get(OUTSIDE, ()))


# This run is one the server asked for (`rerun_app`) after changing a widget's value itself. A browser's timer request
# sent before that value reached it (a follower's poll) is merged into such a run with every widget's old value, and
# it is a run of the whole app, so `_timers_alone` cannot tell: seen in a clean-clone run, a student's "next head"
# stepped them away from the class and the poll merged into the rerun put the head back.
SERVER_RERUN = "_server_rerun"


def rerun_app() -> None:
    """`st.rerun(scope="app")` after this run changed widget values on the server: the next run keeps them against
    the browser's older ones (`_copy`). app.py drops the mark once that run's callbacks are done (`server_rerun_done`)."""
    st.session_state[SERVER_RERUN] = True
    st.rerun(scope="app")


def server_rerun_done() -> None:
    """Called at the top of every full run: its callbacks, which read the mark, have run."""
    st.session_state.pop(SERVER_RERUN, None)


TIMERS = "_timer_fragments"  # the ids of this session's timed fragments that draw no widget (`fragment(widgets=False)`)


def _timers_alone() -> bool:
    """Is this run only timed fragments without widgets (a follower's poll, a teacher's count)?

    Every rerun request a browser sends carries all its widgets' values, a timer's too. Such a run comes from no
    person, and its fragments draw none of the widgets: a widget value in it that differs from the server's is one
    the browser had not yet replaced. (A person's change sent meanwhile is merged into the same run with its own
    fragment, or as a run of the whole app: then this is False.)
    """
    run = get_script_run_ctx()
    ids = run.fragment_ids_this_run if run is not None else None
    timers = st.session_state.get(TIMERS, ())
    return bool(ids) and all(i in timers for i in ids)


def bind(name: str, widget: str | None = None, on_change=None) -> dict:
    """Keyword arguments for a widget that edits canonical value `name`; its widget key is `w_<name>`.

    Widget state is dropped by Streamlit whenever a run does not draw the widget (another page, or
    an interrupted run), so the value itself lives under the plain session key `name`.
    """
    key = widget or f"w_{name.removeprefix('sel_')}"
    st.session_state[key] = st.session_state[name]
    outside = st.session_state.setdefault(OUTSIDE, set())
    (outside.add if ThreadState.get().fragment_id is None else outside.discard)(key)
    return dict(key=key, on_change=_copy, args=(key, name, on_change))


def step(name: str, delta: int, n: int) -> None:
    """Button callback: move a canonical index by delta, wrapping around 0..n-1."""
    st.session_state[name] = (st.session_state[name] + delta) % n


def set_selection(kind: str | None = None, layer: int | None = None, head: int | None = None) -> None:
    for key, value in (("sel_kind", kind), ("sel_layer", layer), ("sel_head", head)):
        if value is not None:
            st.session_state[key] = value


AUTOPLAY = "autoplay"  # the Attention page's Autoplay switch (its widget key)
AUTOPLAY_SPEEDS = (0.75, 1.5, 3.0, 5.0)  # seconds a head stays on screen
AUTOPLAY_TOURS = ("every head", "heads with a job")


def autoplay_seconds() -> float:
    """How long autoplay shows each head (this session's choice; `AUTOPLAY_SECONDS` until one is made)."""
    seconds = st.session_state.get("sel_autoplay_seconds", AUTOPLAY_SECONDS)
    return seconds if seconds in AUTOPLAY_SPEEDS else AUTOPLAY_SECONDS


def stop_autoplay(*_) -> None:
    """Widget callback: a teacher who touches the layer, head or kind takes over from autoplay (it pauses)."""
    st.session_state[AUTOPLAY] = st.session_state[AUTOPLAY_HELD] = False


AUTOPLAY_HELD = "_autoplay_held"  # the switch as this server last set or took it (`autoplay_switched`)


def autoplay_switched() -> None:
    """The Autoplay switch's callback: take a person's switch, and keep the server's against a browser's older value
    (`_not_touched`: the switch sits outside every fragment). Measured: a timer request sent before the pause reached
    the browser turned autoplay back on (tests/test_autoplay_pause.py)."""
    if _not_touched(AUTOPLAY, outside=True):
        st.session_state[AUTOPLAY] = st.session_state.get(AUTOPLAY_HELD, False)
    else:
        st.session_state[AUTOPLAY_HELD] = st.session_state[AUTOPLAY]


def next_stop(stops: list[tuple[str, int, int]], at: tuple[str, int, int], order: tuple[str, ...]) -> tuple[str, int, int]:
    """The stop after `at` in `stops` (a list of (kind, layer, head) in the model's order), around again at the end.

    `at` need not be a stop (the teacher picked another head): the tour goes on from the first stop after it.
    """
    if at in stops:
        return stops[(stops.index(at) + 1) % len(stops)]

    def rank(s: tuple[str, int, int]) -> tuple[int, int, int]:
        return (order.index(s[0]) if s[0] in order else len(order), s[1], s[2])

    later = [s for s in stops if rank(s) > rank(at)]
    return later[0] if later else stops[0]


def every_head(layers: dict[str, int], n_heads: int) -> list[tuple[str, int, int]]:
    """Autoplay's "every head" tour: each kind in turn (`layers`: kind -> its layers), each layer, each head."""
    return [(kind, layer, head) for kind, n in layers.items() for layer in range(n) for head in range(n_heads)]


def advance_autoplay(stops: list[tuple[str, int, int]], order: tuple[str, ...]) -> bool:
    """Autoplay tick: the selection moves to the next stop, at most once per step. True when the kind changed (the
    page must then rerun whole: the kind picker sits outside the fragment that autoplay reruns)."""
    now = time.monotonic()
    if not stops or now - st.session_state.get("_autoplay_at", 0.0) < autoplay_seconds() * 0.8:
        return False
    st.session_state["_autoplay_at"] = now
    state = st.session_state
    at = (state["sel_kind"], state["sel_layer"], state["sel_head"])
    kind, layer, head = next_stop(stops, at, order)
    set_selection(kind=kind, layer=layer, head=head)
    return kind != at[0]


# ---------------------------------------------------------------------------------------------
# Fragments that survive a page switch made by the server.
# ---------------------------------------------------------------------------------------------

DRAWN_PAGE = "_drawn_page"  # (Streamlit's hash, our name) of the page this session's last full run drew


def page_drawn(name: str) -> None:
    """app.py, once the page to draw is settled: the page `fragment` checks a fragment's rerun against."""
    run = get_script_run_ctx()
    if run is not None:
        st.session_state[DRAWN_PAGE] = (run.page_script_hash, name)


def fragment(body, run_every: float | None = None, *, widgets: bool = True):
    """`st.fragment(body, run_every=…)` that redraws the whole page when the browser reruns it for a page it left.

    When the server moves a browser to another page (`st.switch_page`: a class's follower taken to the teacher's
    page, a click in the model view), the rerun requests the browser sent before it heard of the move (a
    `run_every` timer, a click) still name the old page. Streamlit runs such a fragment *on the old page* and tells
    the browser so, and the browser clears the page it has just drawn: an empty main area until a reload (seen in
    Chromium, mostly with the CPU busy). Here such a run draws nothing and reruns the whole app on the page the last
    full run drew instead.

    `widgets=False`: a timed fragment that draws no widget; a run of such fragments alone never takes a widget value
    from the browser (`_copy`).
    """

    @functools.wraps(body)  # the same name, so the same fragment id as `body` itself would have
    def checked():
        drawn, run = st.session_state.get(DRAWN_PAGE), get_script_run_ctx()
        if drawn is not None and run is not None and run.page_script_hash != drawn[0]:
            st.session_state["_goto"] = drawn[1]
            st.rerun(scope="app")
        if run_every is not None and not widgets:
            # Streamlit's id of the fragment running now (the public API does not say it): what `_timers_alone` checks
            st.session_state.setdefault(TIMERS, set()).add(ThreadState.get().fragment_id)
        body()

    return st.fragment(checked, run_every=run_every)


# ---------------------------------------------------------------------------------------------
# First run: the URL seeds the session.
# ---------------------------------------------------------------------------------------------


def init_session(entries: dict[str, catalog.CatalogEntry], pages: tuple[str, ...]) -> None:
    """On a session's first run, read the link's query parameters into session state (validated)."""
    if st.session_state.get("_initialised"):
        return
    st.session_state["_initialised"] = True
    st.session_state["_pages"] = pages
    seed(urlstate.parse(st.query_params.to_dict(), tuple(entries), pages), entries)


def seed(view: urlstate.UrlView, entries: dict[str, catalog.CatalogEntry], presentation: bool | None = None) -> None:
    """Set this session's whole view (checkpoint, text, page, selection, options) from a parsed link: a session's
    first link, or the view of the class it follows (`server/classroom.py`). `presentation`: keep this one."""
    default = DEFAULT_CHECKPOINT if DEFAULT_CHECKPOINT in entries else next(iter(entries), UPLOAD)
    name = view.checkpoint or default
    warnings = list(view.warnings)
    if view.upload is not None or view.uploaded is not None:  # a link made on an uploaded model
        linked = shared.linked_uploads().get(view.upload) if view.upload is not None else None
        if linked is not None:  # this server still holds it: open it, as its uploader sees it
            name = UPLOAD
            st.session_state[UPLOAD_LINK] = view.upload
            st.session_state[UPLOAD_TASK] = catalog.task_of(linked[1].training)
        else:
            warnings.append(urlstate.missing_upload(view.uploaded or "(no file names given)", view.text is not None))
    st.session_state["sel_checkpoint"] = name
    st.session_state["sel_text"] = view.text if view.text is not None else examples(name, entries)[0]["text"]
    st.session_state["sel_target"] = view.target
    st.session_state["sel_auto_target"] = view.target is None
    st.session_state["sel_src_lang"] = view.source_lang  # checked against the model's languages once it is loaded
    st.session_state["sel_tgt_lang"] = view.target_lang
    st.session_state["sel_presentation"] = view.presentation if presentation is None else presentation
    st.session_state["sel_kind"] = view.kind or ""
    st.session_state["sel_layer"] = view.layer or 0
    st.session_state["sel_head"] = view.head or 0
    st.session_state["sel_query"] = view.query or 0
    # A link that names no head: app.py opens the model's most telling one (head_jobs.open_telling).
    st.session_state[PICK_TELLING] = view.kind is None and view.layer is None and view.head is None
    # the "Ask why" pages
    st.session_state["sel_cmp"] = view.compare or "texts"
    st.session_state["sel_text2"] = view.text2
    st.session_state["sel_checkpoint2"] = view.checkpoint2
    st.session_state["sel_snap1"] = view.snapshot1  # None: the first snapshot
    st.session_state["sel_snap2"] = view.snapshot2  # None: the last
    st.session_state["sel_heads"] = view.heads or ()
    st.session_state["sel_ablation"] = view.ablation or "zero"
    st.session_state["sel_metric"] = view.metric or "kl"
    # the options beside the figures
    st.session_state[STRETCH] = bool(view.stretch)
    st.session_state["sel_skip_first"] = bool(view.skip_first)
    st.session_state["sel_scale"] = view.scale or "linear"
    st.session_state["sel_group"] = bool(view.group)
    st.session_state["sel_attr_flow"] = view.flow  # None: on where flow is cheap (the page knows where)
    st.session_state["sel_attr_method"] = view.method or urlstate.SALIENCY_METHODS["gradient-x-input"]
    st.session_state["sel_attr_steps"] = view.steps or urlstate.IG_DEFAULT_STEPS
    st.session_state["sel_attr_dec_pos"] = view.dec_pos  # None: the last decoder position, whatever the text
    st.session_state["sel_lens_sublayers"] = view.sublayers is not False
    st.session_state["sel_lens_window"] = view.window  # None: the window ending at the text's last position
    st.session_state["sel_abl_copies"] = bool(view.copies)
    st.session_state["_warnings"] = warnings
    st.session_state["_goto"] = view.page


AUTO_TEXT2 = "_cmp_auto_text2"  # the Compare page's own text B: {"for": (identity, text A), "text2": B, "change": …}
UPLOAD_TASK = "_upload_task"  # the training task this session's upload records (None: none of ours)
UPLOAD_LINK = "sel_upload_link"  # the digest of an upload this session opened from a link (no files of its own)
UPLOAD_DIGEST = "_upload_digest"  # the digest of the upload shown now (what this session's link carries)


def examples(name: str, entries: dict[str, catalog.CatalogEntry] | None = None) -> list[dict[str, str]]:
    """The examples offered for checkpoint `name`: a shipped model's own; else those of the task it was trained on
    (an upload's, once loaded; a trained or found checkpoint's, from its file's header); else the generic ones."""
    if name == UPLOAD:
        return shared.examples_for(UPLOAD, st.session_state.get(UPLOAD_TASK))
    entry = (entries if entries is not None else st.session_state.get("_entries") or {}).get(name)
    task = None
    if entry is not None and name not in shared.examples() and catalog.has_header(entry):
        try:
            task = shared.entry_task(str(entry.path), shared.identity_of(entry.path))
        except OSError:  # gone since it was found: loading it says so
            task = None
    return shared.examples_for(name, task)


def _example_texts(name: str) -> list[str]:
    """The example sentences the sidebar offers for checkpoint `name` (`examples`)."""
    return [ex["text"] for ex in examples(name)]


def _on_checkpoint_change() -> None:
    """A new checkpoint keeps the user's text (cut later to what it reads, with a message); only a text still the
    previous model's example (or nothing) becomes the new model's first example."""
    state = st.session_state
    name, before = state["sel_checkpoint"], state.get("_shown_checkpoint")
    text = state.get("sel_text") or ""
    untouched = not text.strip() or before is None or text in _example_texts(before)
    if name != UPLOAD and untouched:
        state["sel_text"] = _example_texts(name)[0]
    # An upload's examples are known once it is loaded (`_upload_examples`): until then, remember an untouched text.
    state["_untouched_text"] = text if name == UPLOAD and untouched else None
    st.session_state["sel_target"] = None
    st.session_state["sel_auto_target"] = True
    st.session_state["sel_src_lang"] = st.session_state["sel_tgt_lang"] = None  # the new model's own
    for key in SELECTION:
        st.session_state[key] = "" if key == "sel_kind" else 0
    st.session_state[PICK_TELLING] = True  # a new model opens on its most telling head


def _on_example() -> None:
    choice = st.session_state.get("example")
    if choice is None:
        return
    name = st.session_state["sel_checkpoint"]
    for ex in examples(name):
        if ex["label"] == choice:
            st.session_state["sel_text"] = ex["text"]
            st.session_state["sel_target"] = None
            st.session_state["sel_auto_target"] = True
    st.session_state["example"] = None


def _use_example() -> None:
    """The "Use this model's example" button: the checkpoint's first example replaces the text."""
    st.session_state["sel_text"] = _example_texts(st.session_state["sel_checkpoint"])[0]
    st.session_state["sel_target"] = None
    st.session_state["sel_auto_target"] = True


def _on_auto_target() -> None:
    if st.session_state["sel_auto_target"]:
        st.session_state["sel_target"] = None
    else:  # start editing from the greedy translation
        st.session_state["sel_target"] = st.session_state.get("_greedy_text", "")


# ---------------------------------------------------------------------------------------------
# The sidebar and the per-run context.
# ---------------------------------------------------------------------------------------------


def _load_error(message: str) -> None:
    """Show a loading problem in the sidebar, once, and note it for the page (which then points there instead of a figure)."""
    st.sidebar.error(message)
    st.session_state["_load_error"] = message


def short_label(label: str) -> tuple[str, str]:
    """A catalogue label split into the name the picker shows and the detail under it.

    "Translator (Toy English → target language, encoder-decoder)" → ("Translator", "Toy English → ...").
    """
    name, sep, detail = label.rpartition(" (")  # the last one: a model's own name may hold " (" too
    return (name, detail.removesuffix(")")) if sep and label.endswith(")") else (label, "")


def upload_limit_mb() -> int:
    return shared.upload_limit_mb()


def _uploaded(files: list) -> tuple[str, Checkpoint | None]:
    """The identity and loaded model of this session's uploaded files (None, with a message, when they cannot be loaded).

    The identity is one sha256 of the files' own (name, sha256), each computed once per uploaded
    file (a 100 MB file takes a noticeable fraction of a second to hash, and every rerun would
    otherwise pay it again).
    """
    files = sorted(files, key=lambda f: f.name)
    digests = st.session_state.setdefault("_upload_digests", {})
    for gone in set(digests) - {f.file_id for f in files}:  # forget files no longer in the uploader
        del digests[gone]
    for f in files:
        if f.file_id not in digests:
            digests[f.file_id] = shared.upload_digest(f.getvalue())
    names = tuple(f.name for f in files)
    digest = shared.uploads_digest([(f.name, digests[f.file_id]) for f in files])
    what = "file" if len(files) == 1 else "files"
    try:
        ckpt = shared.load_upload(digest, names, tuple(f.getvalue() for f in files))
        shared.linked_uploads().add(digest, names, ckpt)  # this page's link opens it in other sessions too
        st.session_state[UPLOAD_DIGEST] = digest
        st.session_state[UPLOAD_LINK] = None  # files of its own replace one opened from a link
        return f"upload:{digest}", ckpt
    except CheckpointError as e:
        _load_error(f"Could not load the uploaded {what}: {md(e, 400)}")
    except Exception as e:  # anything else the loader hits: a message, never a traceback
        _load_error(f"Could not load the uploaded {what} {md(', '.join(names))}: {md(f'{type(e).__name__}: {e}', 400)}")
    return f"upload:{digest}", None


def upload_caption(names: tuple[str, ...], ckpt: Checkpoint) -> str:
    """What the sidebar says under an upload: its files' whole names (shown as typed) and what it was trained to do."""
    names = md(", ".join(names), 300)
    described = catalog.description(UPLOAD, ckpt.training)
    if described is None:
        source, family = ckpt.training.get("source"), ckpt.training.get("model_type")
        made = {"huggingface": "Hugging Face", "nanogpt": "nanoGPT"}.get(source)
        origin = (
            f"a {md(family)} model from {made} files" if made and family else f"a model from {made} files" if made else "a model"
        )
        described = f"Uploaded: {origin}, trained elsewhere on texts this app does not know (try your own sentences)."
    return f"{names} — {described}"


def _upload_examples(identity: str, ckpt: Checkpoint) -> None:
    """A newly loaded upload offers the examples of the task it was trained on (if one of ours), and a text that was
    still an example (or nothing) becomes its first one: a model trained on letters opens on letters."""
    state = st.session_state
    if state.get("_upload_examples_for") == identity:
        return
    before = _example_texts(UPLOAD)  # those of the previous upload's task, or the generic ones
    state["_upload_examples_for"] = identity
    state[UPLOAD_TASK] = catalog.task_of(ckpt.training)
    text = state.get("sel_text") or ""
    if not text.strip() or text in before or text == state.get("_untouched_text"):
        state["sel_text"] = _example_texts(UPLOAD)[0]


def _catalogue_model(entry: catalog.CatalogEntry) -> tuple[str, Checkpoint | None]:
    identity, ckpt, error = load_entry(entry)
    if error is not None:
        _load_error(error)
    return identity, ckpt


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
    st.session_state["_shown_checkpoint"] = name  # what a switch compares the text with (_on_checkpoint_change)
    if name != UPLOAD and short_label(entries[name].label)[1]:
        sb.caption(short_label(entries[name].label)[1])
    ckpt, label, identity = None, "", ""
    if name == UPLOAD:
        limit = upload_limit_mb()
        files = sb.file_uploader(
            f"Upload a model (at most {limit} MB)",
            type=UPLOAD_TYPES,
            accept_multiple_files=True,
            key="upload",
            help=(
                "One of this project's .safetensors checkpoints (with its .snapshots.safetensors, to replay its "
                "training on the Training page); or a Hugging Face folder's files together (config.json, "
                "tokenizer.json (a Marian folder: source.spm and vocab.json) and model.safetensors, or its shards with "
                "model.safetensors.index.json, or pytorch_model.bin), or one .zip of that folder; or a nanoGPT ckpt.pt "
                "with its meta.pkl. "
                f"At most {limit} MB in all."
            ),
        )
        linked = shared.linked_uploads().get(st.session_state[UPLOAD_LINK]) if st.session_state.get(UPLOAD_LINK) else None
        if not files and linked is not None:  # opened from a link made on an upload this server still holds
            names, ckpt = linked
            identity, label = f"upload:{st.session_state[UPLOAD_LINK]}", f"Uploaded: {', '.join(names)}"
            st.session_state[UPLOAD_DIGEST] = st.session_state[UPLOAD_LINK]
            sb.caption(f"Opened from a link: {upload_caption(names, ckpt)} Upload files above to open another model.")
        elif not files:
            if st.session_state.get(UPLOAD_LINK):  # it was let go since this session opened it
                sb.warning("This server no longer holds the upload the link opened: upload its files again to see it.")
                st.session_state[UPLOAD_LINK] = None
            sb.info(
                f"Choose a .safetensors checkpoint, a Hugging Face folder's files (or one .zip of the folder), or a nanoGPT "
                f"ckpt.pt with its meta.pkl: at most {limit} MB."
            )
        else:
            identity, ckpt = _uploaded(files)
            label = f"Uploaded: {', '.join(f.name for f in files)}"  # shown only with st.text (literal)
            if ckpt is not None:
                _upload_examples(identity, ckpt)
                sb.caption(
                    f"{upload_caption(tuple(f.name for f in files), ckpt)} This page's link opens it for anyone on this "
                    "server while the server keeps it loaded."
                )
    else:
        identity, ckpt = _catalogue_model(entries[name])
        label = entries[name].label

    sb.selectbox(
        "Examples",
        [ex["label"] for ex in examples(name)],
        index=None,
        placeholder="Pick an example sentence…",
        key="example",
        on_change=_on_example,
    )
    # No max_chars: the browser would silently refuse a longer paste. A paste of any length is
    # accepted and cut below to what the model reads, with a message.
    sb.text_area(
        "Text", height=100, help="Press Ctrl+Enter (or click outside) to run the model on it.", **bind("sel_text", "w_text")
    )
    if st.session_state["sel_text"] not in _example_texts(name):
        sb.button(
            "Use this model's example",
            key="use_example",
            on_click=_use_example,
            help="Replace the text with the first example sentence of this checkpoint (a text it was made to read).",
        )
    source_lang = target_lang = None
    if ckpt is not None:
        identity, ckpt, source_lang, target_lang = _languages(identity, ckpt)
    is_enc_dec = ckpt is not None and ckpt.config.kind == "encoder-decoder"
    if is_enc_dec:
        sb.toggle("Target: greedy decoding", **bind("sel_auto_target", "w_auto_target", _on_auto_target))
        if not st.session_state["sel_auto_target"]:
            if st.session_state.get("sel_target") is None:
                st.session_state["sel_target"] = st.session_state.get("_greedy_text", "")
            sb.text_input("Target (decoder input)", max_chars=urlstate.MAX_TEXT_CHARS, **bind("sel_target", "w_target"))
    sb.toggle("Presentation mode (large fonts)", **bind("sel_presentation", "w_presentation"))
    if ckpt is not None:
        cfg = ckpt.config
        layers = f"{cfg.n_layers} + {cfg.dec_layers}" if cfg.kind == "encoder-decoder" else f"{cfg.n_layers}"
        sb.caption(f"Device: `{ckpt.model.device}` · {cfg.kind} · {layers} layers × {cfg.n_heads} heads")
    if ckpt is None:
        return None

    target = None if not is_enc_dec or st.session_state["sel_auto_target"] else (st.session_state.get("sel_target") or "")
    text, tokens = _read_text(identity, ckpt, target)
    if is_enc_dec and target is None and tokens is not None and tokens[1] is not None:
        st.session_state["_greedy_text"] = tokens[1].text
    return _with_selection(name, label, identity, ckpt, tokens, text, target, (source_lang, target_lang))


def _languages(identity: str, ckpt: Checkpoint) -> tuple[str, Checkpoint, str | None, str | None]:
    """A multilingual translator's source and target language selects, and the checkpoint set to this session's choice.

    Returns (identity, checkpoint, source, target): for a translator with language tokens (`languages.find`), the
    identity of that choice and a checkpoint that shares the loaded model (which every session shares, and which is
    never changed); for any other model, its own identity and checkpoint, and None. A language the link names that
    the model does not have falls back to the default, with a warning.
    """
    state, warnings = st.session_state, st.session_state.setdefault("_warnings", [])
    langs = shared.languages_of(identity, ckpt)

    def checked(key: str, what: str, allowed: tuple[str, ...], default: str | None) -> str | None:
        value = state.get(key)
        if value is not None and value not in allowed:
            if langs is None:
                warnings.append(f"This model has no languages to choose: ignored the link's {what} {md(value, 40)}.")
            elif not allowed:
                warnings.append(f"This model's tokenizer marks no source language: ignored the link's {what} {md(value, 40)}.")
            else:
                warnings.append(
                    f"The link's {what} {md(value, 40)} is not one of this model's {len(allowed)} languages; "
                    f"showing {md(default)}."
                )
            value = None
        return default if value is None else value

    if langs is None:
        state.update(sel_src_lang=checked("sel_src_lang", "source language", (), None))
        state.update(sel_tgt_lang=checked("sel_tgt_lang", "target language", (), None))
        return identity, ckpt, None, None
    source = checked("sel_src_lang", "source language", langs.tokens if langs.source else (), langs.source)
    target = checked("sel_tgt_lang", "target language", langs.tokens, langs.default_target(ckpt.decoding, source))
    state.update(sel_src_lang=source, sel_tgt_lang=target)
    sb = st.sidebar
    column = sb
    if source is not None:
        left, column = sb.columns(2)
        left.selectbox("Source language", langs.tokens, **bind("sel_src_lang", "w_src_lang"))
    column.selectbox("Target language", langs.tokens, **bind("sel_tgt_lang", "w_tgt_lang"))
    tokenizer = None if source is None else shared.source_tokenizer(identity, source, ckpt)
    chosen = languages.translating(ckpt, langs, source, target, tokenizer)
    sb.caption(_forced(chosen, langs, source, target))
    return shared.language_identity(identity, source, target), chosen, source, target


def _forced(ckpt: Checkpoint, langs: languages.Languages, source: str | None, target: str) -> str:
    """What the language choice forces, in words (tokens as literal text): the source's mark and the decoder's start."""
    decoding = ckpt.decoding
    reads = f"The source is marked {md(source)}" if source else "The tokenizer marks no source language"
    if langs.target_slot(decoding) == "start":
        return f"{reads}; the decoder starts with {md(target)}."
    return f"{reads}; the decoder starts with {md(ckpt.tokenizer.id_to_token(decoding.start))}, then {md(target)} is forced."


def _read_text(identity: str, ckpt: Checkpoint, target: str | None) -> tuple[str, tuple[Stream, Stream | None] | None]:
    """This session's text, cut to what the model reads, and its tokens (None when the text is empty).

    A text longer than the model reads (its max_len) is cut after the last token kept, in the text
    box too, so the link, the pages and the box all show what the model read; a message says how
    much was cut. A paste of any length gets here: the browser's box has no limit of its own.
    """
    text = st.session_state["sel_text"][:PASTE_CHARS]
    if not text.strip():
        return text, None
    tokens = shared.tokens_for(identity, text, target, ckpt)
    if tokens[0].truncated:
        text, cut, kept = _cut(text, tokens[0], ckpt.config.max_len)
        st.session_state.setdefault("_warnings", []).append(
            f"The text is longer than this model reads ({ckpt.config.max_len} tokens): the last {cut} tokens were cut "
            f"({len(st.session_state['sel_text']) - len(text):,} characters); the first {kept} are kept, and the text box now "
            "holds what the model read."
        )
        st.session_state["sel_text"] = text
        st.rerun()  # the box was drawn with the whole paste: draw it again with what the model reads (the message is kept)
    return text, tokens


def _cut(text: str, source: Stream, limit: int) -> tuple[str, int, int]:
    """`text` cut so that it encodes to at most `limit` tokens: (the cut text, tokens cut, tokens kept).

    Keeps as many of the text's own tokens as fit beside the special ones ([CLS], [SEP]: offsets (0, 0)).
    """
    ends = [stop for _, stop in source.offsets if stop > 0]
    keep = max(0, min(len(ends), limit - (len(source.ids) - len(ends))))
    end = ends[keep - 1] if keep else 0
    return text[:end], source.truncated + len(ends) - keep, keep


def stop_unless_trace_fits(ctx: Context) -> None:
    """On a page that needs the full trace (or reruns the model as often, as Ablation does): when it would not fit
    this server's budget, say so, offer the cut, and stop."""
    if shared.trace_fits(ctx.ckpt, ctx.tokens):
        return
    source, target = ctx.tokens
    n_tgt = None if target is None else len(target.ids)
    need = budget.trace_bytes(ctx.ckpt.config, len(source.ids), n_tgt)
    fit = budget.max_trace_tokens(ctx.ckpt.config, shared.BUDGET)
    st.warning(
        f"This text is {len(source.ids)} tokens long: a full trace of it (every Q, K, V, score and weight) would take "
        f"{budget.format_bytes(need)}, more than this server allows for one trace "
        f"({budget.format_bytes(shared.BUDGET.trace_bytes)}, about {fit} tokens for this model). The Model view shows "
        "every head of the whole text (its light pass keeps only the pooled weights); this page needs the full trace."
    )

    def cut() -> None:
        st.session_state["sel_text"] = _cut(ctx.text, source, fit)[0]

    st.button(f"Cut the text to its first {fit} tokens", key="cut_to_budget", on_click=cut, type="primary")
    st.stop()


def _with_selection(name, label, identity, ckpt, tokens, text, target, langs) -> Context:
    """Validate the canonical selection against this model (clamping with a warning) and freeze it."""
    warnings = st.session_state.setdefault("_warnings", [])
    kinds = ckpt.config.attention_kinds
    kind = st.session_state.get("sel_kind") or kinds[0]
    if kind not in kinds:
        warnings.append(f"This model has no {md(kind, 30)} attention; showing {kinds[0]}.")
        kind = kinds[0]
    cfg = ckpt.config
    what = f"{kind} layer" if cfg.n_layers != cfg.dec_layers else "layer"  # an encoder-decoder's two depths differ
    layer = urlstate.clamp(int(st.session_state.get("sel_layer", 0)), cfg.layers_of(kind), what, warnings)
    head = urlstate.clamp(int(st.session_state.get("sel_head", 0)), ckpt.config.n_heads, "head", warnings)
    n_q = len(query_tokens(kind, *tokens, ckpt.config.has_encoder)) if tokens is not None else 1
    query = urlstate.clamp(int(st.session_state.get("sel_query", 0)), max(n_q, 1), "query token", warnings)
    st.session_state.update(sel_kind=kind, sel_layer=layer, sel_head=head, sel_query=query)
    return Context(
        name=name,
        label=label,
        identity=identity,
        ckpt=ckpt,
        tokens=tokens,
        text=text,
        target=target,
        source_lang=langs[0],
        target_lang=langs[1],
        kind=kind,
        layer=layer,
        head=head,
        query=query,
        presentation=bool(st.session_state.get("sel_presentation")),
        device=str(ckpt.model.device),
    )


# What a page adds to its link besides the text, checkpoint and selection: query parameter -> its value now.
PAGE_PARAMS = {
    "attention": ("stretch", "skip_first"),
    "model_view": ("skip_first", "scale", "group"),
    "qkv": ("q",),
    "attribution": ("q", "flow", "method", "ig_steps", "dec_pos"),
    "lens": ("sublayers", "window"),
    "ablation": ("heads", "ablation", "metric", "copies"),
    "compare": ("cmp", "text2", "checkpoint2", "snap1", "snap2", "skip_first"),
    "training": ("owner",),
}


def _page_param(name: str) -> str | None:
    """A page parameter's value for the link (None: left out)."""
    state = st.session_state
    cmp = state.get("sel_cmp", "texts")
    methods = urlstate.SALIENCY_METHODS
    method, steps = state.get("sel_attr_method", methods["gradient-x-input"]), state.get("sel_attr_steps")
    dec_pos = state.get("sel_attr_dec_pos")  # asked for on an encoder-decoder's encoder self only
    values = {
        "q": lambda: str(state["sel_query"]),
        "heads": lambda: urlstate.format_heads(state.get("sel_heads", ())) or None,
        "ablation": lambda: state.get("sel_ablation", "zero"),
        "metric": lambda: state.get("sel_metric", "kl"),
        "cmp": lambda: cmp,
        # text2: left out while it is the Compare page's own choice (A with one word changed), which a link's opener
        # gets again from the same text and checkpoint, and which then follows a new text A
        "text2": lambda: (
            (state.get("sel_text2") or "")[: urlstate.MAX_TEXT_CHARS]
            if cmp == "texts" and state.get("sel_text2") != (state.get(AUTO_TEXT2) or {}).get("text2")
            else None
        ),
        "checkpoint2": lambda: state.get("sel_checkpoint2") if cmp == "checkpoints" else None,
        "snap1": lambda: str(state["sel_snap1"]) if cmp == "snapshots" and state.get("sel_snap1") is not None else None,
        "snap2": lambda: str(state["sel_snap2"]) if cmp == "snapshots" and state.get("sel_snap2") is not None else None,
        # The token of a browser that started a training job: a reload keeps the right to cancel it.
        "owner": lambda: state.get("_tj_owner") if state.get("_tj_owner_in_link") else None,
        # options beside the figures: in the link when not the default
        "stretch": lambda: urlstate.switch(True) if state.get(STRETCH) else None,
        "skip_first": lambda: urlstate.switch(True) if state.get("sel_skip_first") else None,
        "scale": lambda: None if state.get("sel_scale", "linear") == "linear" else state["sel_scale"],
        "group": lambda: urlstate.switch(True) if state.get("sel_group") else None,
        "flow": lambda: None if state.get("sel_attr_flow") is None else urlstate.switch(state["sel_attr_flow"]),
        "method": lambda: None if method == methods["gradient-x-input"] else urlstate.method_word(method),
        "ig_steps": lambda: (
            str(steps) if method == methods["integrated-gradients"] and steps != urlstate.IG_DEFAULT_STEPS else None
        ),
        # the pages keep these None where their default applies (the last position) or the model has no such choice
        "dec_pos": lambda: str(dec_pos) if dec_pos is not None and state.get("sel_kind") == "encoder self" else None,
        "sublayers": lambda: None if state.get("sel_lens_sublayers", True) else urlstate.switch(False),
        "window": lambda: None if state.get("sel_lens_window") is None else str(state["sel_lens_window"]),
        "copies": lambda: urlstate.switch(True) if state.get("sel_abl_copies") else None,
    }
    return values[name]()


def sync_url(ctx: Context | None, page: str | None = None) -> None:
    """Write the current view into the URL's query parameters (the page is in the path; `page` adds its own).

    Without `page` (a fragment's rerun, as the Attention page's), the page of this session's last full run.
    """
    if ctx is None:
        return
    page = st.session_state.setdefault("_link_page", page) if page is None else page
    st.session_state["_link_page"] = page
    params = {"text": ctx.text[: urlstate.MAX_TEXT_CHARS]}
    if ctx.name != UPLOAD:
        params["checkpoint"] = ctx.name
    else:  # the upload's digest (another session on this server opens it while it is held), and its file names
        params["upload"] = st.session_state.get(UPLOAD_DIGEST) or ""
        params["uploaded"] = ctx.label.removeprefix("Uploaded: ")[: urlstate.MAX_NAME_CHARS]
    if ctx.target is not None:
        params["target"] = ctx.target[: urlstate.MAX_TEXT_CHARS]
    if ctx.source_lang is not None:
        params["src_lang"] = ctx.source_lang
    if ctx.target_lang is not None:
        params["tgt_lang"] = ctx.target_lang
    params.update(kind=ctx.kind, layer=str(st.session_state["sel_layer"]), head=str(st.session_state["sel_head"]))
    for name in PAGE_PARAMS.get(page, ()):
        value = _page_param(name)
        if value is not None:
            params[name] = value
    if ctx.ckpt.config.group_size == 1:  # no key/value groups: the Model view shows no such switch
        params.pop("group", None)
    if ctx.presentation:
        params["present"] = "1"
    from server import classroom  # a teacher's view goes to the class; a follower's link names its class

    params.update(classroom.on_sync(params, page))
    if st.query_params.to_dict() != params:
        st.query_params.from_dict(params)


def show_messages(ctx: Context | None) -> None:
    """Warnings collected this run (URL problems, clamped values, cut text), shown once."""
    for message in st.session_state.pop("_warnings", []):
        st.warning(message)
    st.session_state["_warnings"] = []
    if ctx is None or ctx.tokens is None or ctx.tokens[1] is None or ctx.target is None:
        return
    target = ctx.tokens[1]
    if target.truncated:
        st.warning(
            f"The target is longer than this model reads ({ctx.ckpt.config.max_len} tokens): "
            f"the last {target.truncated} tokens were cut; {len(target.tokens)} are shown."
        )


def require_trace(ctx: Context | None) -> Trace:
    """The full trace for pages that need one; otherwise a hint and the page stops here (the sidebar keeps working)."""
    require_text(ctx)
    return ctx.trace


def require_text(ctx: Context | None) -> Context:
    """The context when there is a checkpoint and some text; otherwise a hint, and the page stops here."""
    if ctx is None:
        if st.session_state.get("_load_error"):  # the sidebar shows the message, once, beside the picker
            st.info("Nothing to show: the checkpoint could not be loaded (the message is in the sidebar).")
        else:
            st.info("Pick a checkpoint in the sidebar (or upload one) to begin.")
        st.stop()
    if ctx.tokens is None:
        st.info("The text is empty. Type a sentence in the sidebar, or pick one of the examples.")
        st.stop()
    return ctx


def entries() -> dict[str, catalog.CatalogEntry]:
    """The checkpoints the sidebar's picker offers this run (by name), as app.py found them."""
    return st.session_state.get("_entries") or {}


def load_entry(entry: catalog.CatalogEntry) -> tuple[str, Checkpoint | None, str | None]:
    """A catalogue checkpoint, loaded once and shared (the sidebar's, or the Compare page's B): (identity, model or None, error message)."""
    identity = f"missing:{entry.path}"
    try:
        identity = shared.identity_of(entry.path)  # a model found on disk may have gone since
        return identity, shared.load(identity, str(entry.path)), None
    except Exception as e:  # a message, never a traceback; the label may hold a file's name: shown literally
        return identity, None, f"Could not load {md(short_label(entry.label)[0])}: {md(e, 400)}"


def greedy_text(ctx: Context) -> str:
    """The greedy translation of the text (decoded once per text and shared; no trace is made for it)."""
    return shared.tokens_for(ctx.identity, ctx.text, None, ctx.ckpt)[1].text


def publish(ctx: Context | None, entries: dict[str, catalog.CatalogEntry] | None = None) -> None:
    """app.py hands this run's context (and the checkpoints the picker offers) to the page it runs next."""
    st.session_state["_ctx"] = ctx
    st.session_state["_entries"] = entries or {}
    st.session_state["_ctx_fresh"] = True


def context() -> Context | None:
    """This run's context, built by app.py (every page starts here).

    Streamlit runs a project with a `pages/` folder in its legacy multipage mode (each page file
    runs on its own) until some script calls `st.navigation`; so on a fresh server a shared link
    opened first (say /qkv) runs pages/qkv.py without app.py, its sidebar or this session's state
    (and Streamlit's AppTest starts every run that way). Such a page names itself for app.py, ends
    the legacy mode and reruns, which starts at app.py with the session's widgets and uploads kept.

    Ending the legacy mode takes the one private Streamlit name this app uses
    (`PagesManager.uses_pages_directory`, what `st.navigation` sets): the public ways lose state
    here (`st.switch_page` drops the session's widget values; `st.navigation` called from a page
    drops its uploaded files; both seen in tests/test_app.py). It is imported here only, where the
    failure would show at once: every page and AppTest goes through this function.
    """
    if not st.session_state.pop("_ctx_fresh", False):  # app.py did not run before this page
        from streamlit.runtime.pages_manager import PagesManager

        page = Path(sys._getframe(1).f_globals.get("__file__", "")).stem
        st.session_state.setdefault("_goto", page)  # unless a click already asked for another page
        if not st.session_state.get("_initialised") and "page" not in st.query_params:
            st.query_params["page"] = page  # a new session: app.py reads the page from the link
        PagesManager.uses_pages_directory = False
        st.rerun()
    return st.session_state.get("_ctx")
