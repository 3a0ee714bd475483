"""AppTests of the Streamlit app: every page on every checkpoint, figures equal to the trace, URL state, bad input.

Runs on each shipped checkpoint present (`catalog.available()`), and always on tiny random-weight
checkpoints written to a temp folder (so the tests are real before the shipped ones are trained).

A figure is checked bit for bit against a trace made here with the core API under the app's own
thread setting (`app_threads`): the same computation as the app's. What the app computes another
way (the light pass, a sum recomputed by hand) is checked within float32 rounding (`numerics.py`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from numerics import app_threads, assert_close, assert_same_bits, longest_sum, sublayers
from streamlit.testing.v1 import AppTest

from transformer import api
from transformer.api import build_model, trace_text
from transformer.checkpoints import catalog
from transformer.checkpoints.format import load_checkpoint, save_checkpoint
from transformer.checkpoints.snapshots import save_snapshots
from transformer.checkpoints.tokenizer import train_tokenizer
from transformer.data.algorithmic import reverse_examples
from transformer.data.toy_english import generate_corpus
from transformer.model.config import ModelConfig
from viz import jsonfig
from viz.labels import plotly_text

APP = str(Path(__file__).resolve().parent.parent / "app.py")
PAGES = (
    "pages/attention.py",
    "pages/qkv.py",
    "pages/model_view.py",
    "pages/checkpoint.py",
    "pages/training.py",
    "pages/output.py",
)
TINY = {"translator": "encoder-decoder", "lm": "decoder", "classifier": "encoder", "reverse": "encoder-decoder"}
SHIPPED = list(catalog.available())  # read before any test points ATTNVIZ_ASSETS elsewhere
TIMEOUT = 120

pytestmark = pytest.mark.numerics


def write_tiny(path: Path, name: str, kind: str | None = None, n_classes: int | None = None) -> Path:
    """A tiny seeded random-weight checkpoint trained on nothing: enough to exercise every page."""
    kind = kind or TINY[name]
    if name == "reverse":
        texts = [s for pair in reverse_examples(100, 0) for s in pair]
    else:
        texts = [s.text for s in generate_corpus(200, 0)]
    tok = train_tokenizer(texts, kind, vocab_size=150, min_frequency=1)
    if n_classes is None:
        n_classes = 2 if kind == "encoder" else 0
    extra = dict(n_classes=n_classes, class_names=("ungrammatical", "grammatical")[:n_classes]) if n_classes else {}
    cfg = ModelConfig(kind=kind, vocab_size=tok.vocab_size, n_layers=2, n_heads=2, d_model=16, d_ff=32, max_len=24, **extra)
    return save_checkpoint(path, build_model(cfg, seed=0), tok, {"task": name, "metrics": {"val_loss": 1.0}})


@pytest.fixture(scope="module")
def tiny_assets(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("assets")
    for name in TINY:
        write_tiny(folder / f"{name}.safetensors", name)
    return folder


CASES = [pytest.param(("shipped", n), id=f"shipped-{n}") for n in SHIPPED] + [
    pytest.param(("tiny", n), id=f"tiny-{n}") for n in TINY
]


@pytest.fixture
def env(serve_assets, tiny_assets):
    """Point the catalogue at the tiny checkpoints (and force the CPU, so reference traces match exactly)."""
    serve_assets(tiny_assets)
    return tiny_assets


def _use(monkeypatch, case, tiny_assets):
    source, name = case
    monkeypatch.setenv("ATTNVIZ_DEVICE", "cpu")
    if source == "tiny":
        monkeypatch.setenv(catalog.ASSETS_ENV, str(tiny_assets))
        monkeypatch.setenv(catalog.NO_MINILM_ENV, "1")
    else:
        monkeypatch.delenv(catalog.ASSETS_ENV, raising=False)
        monkeypatch.delenv(catalog.NO_MINILM_ENV, raising=False)
    return catalog.available()[name]


def reference(entry, text: str, target: str | None = None):
    """The trace computed directly with the core API, independently of the app's code, on the app's torch threads.

    The same computation as the app's model run, so the figures drawn from the app's trace equal it bit for bit.
    """
    with app_threads():
        if entry.hf_dir:
            from transformer.checkpoints import importers

            ckpt = importers.load_any(entry.path, device="cpu")
        else:
            ckpt = load_checkpoint(entry.path, device="cpu")
        return trace_text(ckpt, text, target)


def start(params: dict | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params.update(params or {})
    return at.run()


def charts(at: AppTest) -> dict[str, dict]:
    """Every Plotly chart on the page by widget key, as the decoded figure JSON the browser receives."""
    return {el.key or el.proto.id: jsonfig.parse(el.proto.spec) for el in at.get("plotly_chart")}


def frame(at: AppTest, column: str | None = None, row: str | None = None):
    """The st.dataframe on the page that has this column (or index entry)."""
    for df in at.dataframe:
        value = df.value
        if (column is not None and column in value.columns) or (row is not None and row in value.index):
            return value
    raise AssertionError(f"no table with column {column!r} / row {row!r}")


def no_errors(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


SAME_TRACE = "the figure against the trace it was drawn from (made here on the app's threads)"


def assert_heatmap(fig: dict, weights: np.ndarray, q_tokens, k_tokens) -> None:
    z = fig["data"][0]["z"]
    assert_same_bits(z, weights, why=SAME_TRACE)
    assert fig["layout"]["yaxis"]["ticktext"] == [plotly_text(t) for t in q_tokens][:: _step(q_tokens)]
    assert fig["layout"]["xaxis"]["ticktext"] == [plotly_text(t) for t in k_tokens][:: _step(k_tokens)]


def _step(tokens) -> int:
    return max(1, -(-len(tokens) // 64))


# ---------------------------------------------------------------------------------------------
# Every page, every checkpoint.
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_every_page_runs_and_draws_the_trace(case, monkeypatch, tiny_assets):
    entry = _use(monkeypatch, case, tiny_assets)
    at = start({"checkpoint": entry.name})
    no_errors(at)
    text = at.session_state["sel_text"]
    assert text.strip(), "the app opens with an example text"
    ref = reference(entry, text)
    # It opens on the head the app chose (the model's most telling one; test_opens_on_the_most_telling_head).
    kind, layer, head = (at.session_state[k] for k in ("sel_kind", "sel_layer", "sel_head"))
    assert at.query_params["kind"] == kind and at.query_params["layer"] == str(layer) and at.query_params["head"] == str(head)
    fig = charts(at)["attn_heatmap"]
    assert_heatmap(fig, ref.attention(kind, layer).weights[0, head].numpy(), ref.query_tokens(kind), ref.key_tokens(kind))
    for page in PAGES[1:]:
        at.switch_page(page).run()
        no_errors(at)
    # The last page, Output, says what the model does with the text, in the form that fits the model.
    if ref.decoder is not None:
        top = frame(at, column="#1")
        assert len(top) == len(ref.target.tokens if ref.target is not None else ref.source.tokens)
    elif ref.probs.ndim == 2:
        assert_same_bits(
            np.asarray(charts(at)["out_classes"]["data"][0]["x"], dtype=np.float32), ref.probs[0].numpy(), why=SAME_TRACE
        )
    else:
        assert "out_similarity" in charts(at)


@pytest.mark.parametrize("case", CASES)
def test_changing_head_layer_and_kind_changes_the_figure(case, monkeypatch, tiny_assets):
    entry = _use(monkeypatch, case, tiny_assets)
    at = start({"checkpoint": entry.name, "layer": "0", "head": "0"})  # a link naming a head opens on it
    ref = reference(entry, at.session_state["sel_text"])
    kinds = ref.kinds
    assert at.session_state["sel_kind"] == kinds[0]
    before = charts(at)["attn_heatmap"]["data"][0]["z"]

    at.button(key="attn_next_head").click().run()
    no_errors(at)
    z = charts(at)["attn_heatmap"]["data"][0]["z"]
    assert_same_bits(z, ref.attention(kinds[0], 0).weights[0, 1].numpy(), why=SAME_TRACE)
    assert not np.array_equal(z, before)

    at.slider(key="attn_layer").set_value(1).run()
    no_errors(at)
    assert_same_bits(charts(at)["attn_heatmap"]["data"][0]["z"], ref.attention(kinds[0], 1).weights[0, 1].numpy(), why=SAME_TRACE)
    assert at.query_params["layer"] == "1" and at.query_params["head"] == "1"

    if len(kinds) > 1:
        at.radio(key="attn_kind").set_value(kinds[-1]).run()
        no_errors(at)
        kind = kinds[-1]
        assert_heatmap(
            charts(at)["attn_heatmap"], ref.attention(kind, 1).weights[0, 1].numpy(), ref.query_tokens(kind), ref.key_tokens(kind)
        )
        assert at.query_params["kind"] == kind


# ---------------------------------------------------------------------------------------------
# Behaviour on the tiny checkpoints.
# ---------------------------------------------------------------------------------------------


def test_opens_on_the_translator_attention_page(env):
    at = start({"kind": "encoder self"})
    no_errors(at)
    assert at.session_state["sel_checkpoint"] == "translator"
    assert {"attn_heatmap", "attn_mean", "attn_layer_grid"} <= set(charts(at))
    assert at.query_params["checkpoint"] == "translator" and at.query_params["text"] == at.session_state["sel_text"]
    # Mean over heads is the mean of the trace's weights (the mean itself taken on whatever threads each side ran).
    ref = reference(catalog.available()["translator"], at.session_state["sel_text"])
    mean = charts(at)["attn_mean"]["data"][0]["z"]
    weights = ref.attention("encoder self", 0).weights[0]
    assert_close(
        mean, weights.mean(0).numpy(), terms=weights.shape[0], why="the mean of n_heads weights ≤ 1, here and in the app"
    )


@pytest.fixture
def model_runs(monkeypatch) -> dict[str, list]:
    """Empty the app's trace and maps caches, then record every model run: the texts of full traces and of light passes."""
    from server import shared

    for cache in (shared.trace_cache(), shared.maps_cache()):
        cache.clear()
    runs = {"trace_text": [], "attention_maps": []}
    for name, log in runs.items():
        real = getattr(api, name)
        monkeypatch.setattr(api, name, lambda *a, _real=real, _log=log, **k: _log.append(a[1]) or _real(*a, **k))
    return runs


def test_the_model_runs_once_per_text(env, model_runs):
    calls = model_runs["trace_text"]
    at = start()
    assert len(calls) == 1
    at.button(key="attn_next_head").click().run()
    at.button(key="attn_next_layer").click().run()
    at.radio(key="attn_kind").set_value("cross").run()
    for page in PAGES[1:]:
        at.switch_page(page).run()
    no_errors(at)
    assert len(calls) == 1, calls
    at.text_area(key="w_text").input("the cat runs .").run()
    assert len(calls) == 2 and calls[-1] == "the cat runs ."


def test_a_short_text_runs_the_model_once_even_from_the_model_view(env, model_runs):
    """Below LIGHT_PASS_BYTES the model view makes the full trace itself, so later pages reuse it."""
    traced, mapped = model_runs["trace_text"], model_runs["attention_maps"]
    at = start({"page": "model_view"})
    no_errors(at)
    for page in PAGES:
        at.switch_page(page).run()
        no_errors(at)
    assert (len(traced), len(mapped)) == (1, 0)


def test_attention_map_bytes_counts_every_kind_layer_and_head(env):
    from server import shared

    ckpt = load_checkpoint(catalog.available()["translator"].path, device="cpu")
    tokens = api.streams(ckpt, "the cat runs .", "a b c")
    n_src, n_tgt = len(tokens[0].ids), len(tokens[1].ids)
    cfg = ckpt.config
    expected = (n_src * n_src + n_tgt * n_tgt + n_tgt * n_src) * cfg.n_layers * cfg.n_heads * 8
    assert shared.attention_map_bytes(ckpt, tokens) == expected
    trace = api.trace_text(ckpt, "the cat runs .", "a b c")
    held = sum(
        trace.attention(k, i).weights.nbytes + trace.attention(k, i).scores.nbytes
        for k in trace.kinds
        for i in range(cfg.n_layers)
    )
    assert held == expected


def test_url_restores_the_view(env):
    text = "the dogs that the cat sees run ."
    at = start({"checkpoint": "lm", "text": text, "kind": "decoder self", "layer": "1", "head": "1", "q": "3", "page": "qkv"})
    no_errors(at)
    assert not at.warning
    assert at.session_state["sel_checkpoint"] == "lm" and at.text_area(key="w_text").value == text
    assert (at.session_state["sel_layer"], at.session_state["sel_head"], at.session_state["sel_query"]) == (1, 1, 3)
    figs = charts(at)
    assert "qkv_weights" in figs  # the Q, K, V page opened
    ref = reference(catalog.available()["lm"], text)
    assert_same_bits(figs["qkv_weights"]["data"][0]["z"], ref.attention("decoder self", 1).weights[0, 1].numpy(), why=SAME_TRACE)
    assert at.query_params["q"] == "3" and at.query_params["checkpoint"] == "lm"


def test_bad_url_values_fall_back_with_warnings(env):
    at = start({"checkpoint": "gpt-17", "layer": "9", "head": "abc", "kind": "cross"})
    no_errors(at)
    warnings = " ".join(w.value for w in at.warning)
    assert "Unknown checkpoint" in warnings and "layer 9 is out of range" in warnings and "head" in warnings
    assert at.session_state["sel_checkpoint"] == "translator"
    assert (at.session_state["sel_kind"], at.session_state["sel_layer"]) == ("cross", 1)


def test_translator_target_is_greedy_by_default_and_editable(env):
    at = start({"layer": "0", "head": "0"})
    ref = reference(catalog.available()["translator"], at.session_state["sel_text"])
    assert "target" not in at.query_params
    at.toggle(key="w_auto_target").set_value(False).run()
    assert at.text_input(key="w_target").value == ref.target.text
    at.text_input(key="w_target").input("a b c").run()
    no_errors(at)
    assert at.query_params["target"] == "a b c"
    at.radio(key="attn_kind").set_value("cross").run()
    own = reference(catalog.available()["translator"], at.session_state["sel_text"], "a b c")
    assert_same_bits(charts(at)["attn_heatmap"]["data"][0]["z"], own.attention("cross", 0).weights[0, 0].numpy(), why=SAME_TRACE)
    # The Output page still names the greedy translation, then the user's own target the tables are for.
    at.switch_page("pages/output.py").run()
    no_errors(at)
    assert [c.value for c in at.code][:2] == [ref.target.text, "a b c"]
    assert len(frame(at, column="#1")) == len(own.target.tokens)


def test_empty_text_gives_a_hint_and_the_app_keeps_working(env):
    at = start()
    at.text_area(key="w_text").input("   ").run()
    no_errors(at)
    assert any("text is empty" in i.value for i in at.info)
    assert not at.get("plotly_chart")
    for page in PAGES[1:]:  # every page that needs a text says so (the Checkpoint page still shows the weights)
        at.switch_page(page).run()
        no_errors(at)
        if page != "pages/checkpoint.py":
            assert any("text is empty" in i.value for i in at.info), page
    at.switch_page(PAGES[0]).run()
    at.text_area(key="w_text").input("the cat runs .").run()
    assert "attn_heatmap" in charts(at)


def test_long_text_is_truncated_with_a_warning(env):
    at = start({"checkpoint": "lm"})
    text = " ".join(["the dog sees the cats ."] * 10)
    at.text_area(key="w_text").input(text).run()
    no_errors(at)
    n = len(reference(catalog.available()["lm"], "").source.tokens)  # just [BOS]
    full = len(load_checkpoint(catalog.available()["lm"].path, device="cpu").tokenizer.encode(text).ids)
    cut = full - 24
    assert n == 1 and cut > 0
    assert any(f"the last {cut} tokens were cut" in w.value for w in at.warning), [w.value for w in at.warning]
    assert len(charts(at)["attn_heatmap"]["data"][0]["z"]) == 24


def test_html_markdown_and_emoji_are_shown_literally(env):
    text = "<b>bold</b> **star** <script>alert(1)</script> 🙂 ünïcödé [x](http://e.vil) the"
    at = start({"checkpoint": "lm"})
    at.text_area(key="w_text").input(text).run()
    no_errors(at)
    kept = at.text_area(key="w_text").value  # the tiny model reads 24 tokens: the box keeps what it read
    assert kept and text.startswith(kept)
    ref = reference(catalog.available()["lm"], kept)
    ticks = charts(at)["attn_heatmap"]["layout"]["xaxis"]["ticktext"]
    assert ticks == [plotly_text(t) for t in ref.source.tokens]  # escaped for Plotly (whatever the tokenizer made of it)
    assert "<b>" not in "".join(ticks) and "<script>" not in "".join(ticks)
    for md in at.markdown:  # no user text ever reaches markdown
        assert "script" not in md.value and "star" not in md.value
    for page in PAGES[1:]:
        at.switch_page(page).run()
        no_errors(at)
        for md in at.markdown:
            assert "script" not in md.value and "star" not in md.value, page


def test_bad_upload_shows_an_error(env, tmp_path):
    at = start()
    at.selectbox(key="w_checkpoint").set_value("upload").run()
    assert any("at most 100 MB" in i.value for i in at.info)
    pickle_bytes = b"\x80\x04\x95" + b"cos\nsystem\n" * 10  # a pickle, renamed: never executed
    at.get("file_uploader")[0].upload("evil.safetensors", pickle_bytes).run()
    assert not at.exception
    assert any("evil.safetensors" in e.value and "not a safetensors file" in e.value for e in at.error), [
        e.value for e in at.error
    ]


def test_good_upload_and_headless_encoder(env, tmp_path):
    path = write_tiny(tmp_path / "mine.safetensors", "encoder", kind="encoder", n_classes=0)
    at = start()
    at.selectbox(key="w_checkpoint").set_value("upload").run()
    at.get("file_uploader")[0].upload("mine.safetensors", path.read_bytes()).run()
    no_errors(at)
    with app_threads():
        ref = trace_text(load_checkpoint(path, device="cpu"), at.session_state["sel_text"])
    assert_same_bits(
        charts(at)["attn_heatmap"]["data"][0]["z"], ref.attention("encoder self", 0).weights[0, 0].numpy(), why=SAME_TRACE
    )
    at.switch_page("pages/output.py").run()
    no_errors(at)
    assert any("no classification head" in i.value for i in at.info)
    assert "out_similarity" in charts(at)


def test_qkv_page_works_the_selected_row(env):
    at = start({"checkpoint": "lm", "page": "qkv"})
    ref = reference(catalog.available()["lm"], at.session_state["sel_text"])
    at.selectbox(key="w_query").set_value(4).run()
    no_errors(at)
    head = ref.head("decoder self", 0, 0)
    steps = frame(at, column="softmax weight")
    assert_same_bits(steps["softmax weight"].to_numpy(), head["weights"][4].numpy(), why="the table against the trace")
    assert_same_bits(steps.iloc[:, 1].to_numpy(), head["scores"][4].numpy(), why="the table against the trace")
    sums = frame(at, row="head output row (trace)")
    assert_same_bits(sums.loc["head output row (trace)"].to_numpy(), head["output"][4].numpy(), why="the table against the trace")
    # Σ_j weight_j · v_j by hand against the model's matmul: a sum over the keys, of terms adding up to at most max |v|.
    assert_close(
        sums.loc["Σ = output row (recomputed)"].to_numpy(),
        head["output"][4].numpy(),
        terms=len(head["weights"][4]),
        magnitude=float(head["v"].abs().max()),
        why="the output row recomputed by the page against the trace's",
    )
    assert any("equals the head output's row 4" in s.value for s in at.success)
    assert at.query_params["q"] == "4"


def test_model_view_opens_a_head_on_the_attention_page(env, model_runs, monkeypatch):
    from server import shared

    traced, mapped = model_runs["trace_text"], model_runs["attention_maps"]
    monkeypatch.setattr(shared, "LIGHT_PASS_BYTES", 0)  # as for a long text: these tiny traces are far below the limit
    at = start({"page": "model_view", "kind": "cross"})
    no_errors(at)
    figs = charts(at)
    assert set(figs) == {"mv_grid"}
    # A link to the model view runs the light pass only, and the thumbnails are the trace's weights.
    assert (len(traced), len(mapped)) == (0, 1)
    text = at.session_state["sel_text"]
    ref = reference(catalog.available()["translator"], text)
    cfg = load_checkpoint(catalog.available()["translator"].path, device="cpu").config
    z = figs["mv_grid"]["data"][0]["z"]
    n_q, n_k = len(ref.query_tokens("cross")), len(ref.key_tokens("cross"))
    for layer in range(2):
        for head in range(2):
            # The light pass runs its own attention code through the whole model: another computation than the trace.
            assert_close(
                z[layer * n_q : (layer + 1) * n_q, head * n_k : (head + 1) * n_k],
                ref.attention("cross", layer).weights[0, head].numpy(),
                terms=longest_sum(cfg, max(n_q, n_k)),
                depth=sublayers(cfg),
                why=f"the light pass's cross L{layer} H{head} against the full trace's",
            )
    # √ colours change the colour scale, never the values.
    at.radio(key="mv_scale").set_value("sqrt").run()
    no_errors(at)
    sqrt = charts(at)["mv_grid"]["data"][0]
    assert_same_bits(sqrt["z"], z, why="the same pooled maps drawn with another colour scale")
    assert sqrt["colorscale"] != figs["mv_grid"]["data"][0]["colorscale"]
    at.selectbox(key="mv_pick").set_value((1, 1)).run()
    at.button(key="mv_open").click().run()
    no_errors(at)
    assert "attn_heatmap" in charts(at)
    assert (len(traced), len(mapped)) == (1, 1)  # the Attention page needs the full trace: made now, once
    assert_same_bits(charts(at)["attn_heatmap"]["data"][0]["z"], ref.attention("cross", 1).weights[0, 1].numpy(), why=SAME_TRACE)


@pytest.mark.skipif("translator" not in SHIPPED, reason="needs the shipped translator and its snapshots")
def test_training_page_shows_each_snapshot_on_the_same_tokens(monkeypatch):
    from transformer.checkpoints.snapshots import load_snapshots

    monkeypatch.setenv("ATTNVIZ_DEVICE", "cpu")
    monkeypatch.delenv(catalog.ASSETS_ENV, raising=False)
    at = start({"checkpoint": "translator", "page": "training", "kind": "cross", "layer": "1", "head": "1"})
    no_errors(at)
    entry = catalog.available()["translator"]
    final = reference(entry, at.session_state["sel_text"])  # the greedy translation every snapshot reads too
    snaps = load_snapshots(catalog.snapshots_path(entry), device="cpu")
    with app_threads():
        expected = [trace_text(ckpt, final.source.text, tokens=(final.source, final.target)) for _, ckpt in snaps]
    strip = charts(at)["tr_strip"]["data"]
    assert len(strip) == len(snaps) == 9
    for panel, trace in zip(strip, expected):
        assert_same_bits(panel["z"], trace.attention("cross", 1).weights[0, 1].numpy(), why=SAME_TRACE)
    # The snapshot slider picks which one is drawn large; it starts on the last one.
    assert_same_bits(
        charts(at)["tr_heatmap"]["data"][0]["z"], expected[-1].attention("cross", 1).weights[0, 1].numpy(), why=SAME_TRACE
    )
    at.select_slider(key="tr_step").set_value(4).run()
    no_errors(at)
    big = charts(at)["tr_heatmap"]
    assert_same_bits(big["data"][0]["z"], expected[4].attention("cross", 1).weights[0, 1].numpy(), why=SAME_TRACE)
    assert big["layout"]["title"]["text"].startswith(f"step {snaps[4][0]}<br>")
    # Step 0 is the random initialisation: near-uniform; the trained head is sharp (the alignment head).
    assert strip[0]["z"].max() < 0.5 < strip[-1]["z"].max()


def test_training_page_without_snapshots_or_with_a_broken_file(env):
    at = start({"checkpoint": "classifier", "page": "training"})
    no_errors(at)
    assert not charts(at) and any("ships no training snapshots" in i.value for i in at.info)
    snapshots = env / "lm.snapshots.safetensors"
    try:
        snapshots.write_bytes(b"not a safetensors file")
        at = start({"checkpoint": "lm", "page": "training"})
        assert not at.exception  # a message, never a traceback
        assert [e.value for e in at.error] == [
            "Could not read the training snapshots: ` lm.snapshots.safetensors is not a safetensors file "
            "(no valid header; is it a pickle or a truncated download?) `"
        ]
        # Valid snapshots of another model (the classifier's) next to the lm: refused, not drawn.
        other = load_checkpoint(env / "classifier.safetensors", device="cpu")
        save_snapshots(snapshots, [(0, other.model.state_dict())], other.config, other.tokenizer)
        at = start({"checkpoint": "lm", "page": "training"})
        assert not at.exception and not charts(at)
        assert any("does not belong to" in e.value for e in at.error)
    finally:
        snapshots.unlink()


def test_checkpoint_page_shows_config_params_and_weights(env):
    at = start({"checkpoint": "classifier", "page": "checkpoint"})
    no_errors(at)
    figs = charts(at)
    assert {"ck_W_Q", "ck_W_K", "ck_W_V", "ck_W_O", "ck_entropy"} <= set(figs)
    model = load_checkpoint(catalog.available()["classifier"].path, device="cpu").model
    w_q = model.encoder.layers[0].self_attn.q_proj.weight.detach()[:8].T.numpy()  # head 0, d_head = 8
    np.testing.assert_array_equal(figs["ck_W_Q"]["data"][0]["z"], w_q)  # the stored weights, copied, not computed
    params = frame(at, row="encoder.layers.0")
    assert params["parameters"].sum() == sum(p.numel() for p in model.parameters())


def test_output_page_class_probabilities(env):
    at = start({"checkpoint": "classifier", "page": "output"})
    no_errors(at)
    ref = reference(catalog.available()["classifier"], at.session_state["sel_text"])
    bars = charts(at)["out_classes"]["data"][0]
    assert_same_bits(np.asarray(bars["x"], dtype=np.float32), ref.probs[0].numpy(), why=SAME_TRACE)
    assert list(charts(at)["out_classes"]["layout"]["yaxis"]["ticktext"]) == ["ungrammatical", "grammatical"]


def test_presentation_mode_enlarges_figure_fonts(env):
    at = start()
    small = charts(at)["attn_heatmap"]["layout"]["font"]["size"]
    at.toggle(key="w_presentation").set_value(True).run()
    assert charts(at)["attn_heatmap"]["layout"]["font"]["size"] > small
    assert at.query_params.get("present") == "1"


def test_no_checkpoints_at_all(monkeypatch, tmp_path):
    monkeypatch.setenv(catalog.ASSETS_ENV, str(tmp_path))
    monkeypatch.setenv(catalog.NO_MINILM_ENV, "1")
    at = start()
    no_errors(at)
    assert at.session_state["sel_checkpoint"] == "upload"


def test_app_works_without_minilm(env):
    at = start({"checkpoint": "minilm"})
    no_errors(at)
    assert any("Unknown checkpoint" in w.value for w in at.warning)
