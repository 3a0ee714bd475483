"""Nothing a user sends is rendered as Markdown or HTML: link parameters, uploaded file names, checkpoint metadata.

`server.literal.md` is checked on its own, then the whole app is driven (AppTest) with markup in every
query parameter and in a checkpoint's metadata: wherever such a value reaches an element Streamlit
renders as Markdown, it sits inside a code span; in a figure, it is HTML-escaped for Plotly and never
part of a hover template.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

from server import urlstate
from server.literal import md
from transformer.checkpoints import catalog
from transformer.checkpoints.format import save_checkpoint
from transformer.checkpoints.snapshots import save_snapshots, stored_dtypes
from viz import jsonfig
from viz.labels import plotly_text

APP = str(Path(__file__).resolve().parent.parent / "app.py")
PAGES = ("attention", "qkv", "model_view", "checkpoint", "output", "training")
TIMEOUT = 120

HOSTILE = (
    "[click](http://evil.example/x) ![i](http://evil.example/i.png) <img src=http://evil.example/y> "
    '<a href="http://evil.example">a</a> :rocket: $x^2$ **b** %{x} `tick`'
)
# What would show that the value was rendered rather than shown: any of these outside a code span.
MARKUP = ("evil.example", "](", "<img", "<a ", ":rocket:", "$x^2$", "**b**", "%{x}")
# Element types whose text Streamlit renders as Markdown.
MARKDOWN_ELEMENTS = ("markdown", "caption", "info", "warning", "error", "success", "title", "header", "subheader", "toast")
OUR_TAGS = {"br", "extra", "/extra", "b", "/b"}  # the only HTML our figures write themselves
TEMPLATE_VARIABLES = {"x", "y", "z", "customdata", "marker.color", "text"}


def outside_code_spans(markdown: str) -> str:
    """`markdown` without its CommonMark code spans: what Streamlit would render as Markdown rather than show as typed.

    A run of n backticks opens a span that the next run of exactly n backticks closes; an unclosed run is literal.
    """
    out, i = [], 0
    while i < len(markdown):
        if markdown[i] != "`":
            out.append(markdown[i])
            i += 1
            continue
        fence = re.match(r"`+", markdown[i:]).group()
        close = next((m for m in re.finditer(r"`+", markdown[i + len(fence) :]) if len(m.group()) == len(fence)), None)
        if close is None:
            out.append(fence)
            i += len(fence)
        else:
            i += len(fence) + close.end()
    return "".join(out)


def assert_no_markup(text: str, where: str) -> None:
    rendered = outside_code_spans(text)
    found = [m for m in MARKUP if m in rendered]
    assert not found, f"{where}: {found} outside a code span in {text!r}"


# ---------------------------------------------------------------------------------------------
# md() and the link's warnings, without Streamlit.
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [HOSTILE, "a`b", "``x``", "`", "line\nbreak <b>", ":red[x] $y$ :rocket:", "\\` escaped", "x" * 500, 42, ""],
)
def test_md_is_one_code_span_that_shows_the_value(value):
    span = md(value)
    assert outside_code_spans(span) == ""  # all of it is one code span
    fence = re.match(r"`+", span).group()
    inner = span[len(fence) : -len(fence)]
    assert span.endswith(fence) and all(len(run) != len(fence) for run in re.findall(r"`+", inner))  # nothing closes it early
    text = str(value) if len(str(value)) <= 200 else str(value)[:200] + "…"
    assert inner[1:-1] == re.sub(r"[\r\n\t\f\v]+", " ", text)  # CommonMark strips the space on each side


def test_md_cuts_long_values():
    assert md("abcdef", 3) == "` abc… `"


def test_link_warnings_quote_values_in_code_spans():
    params = {name: HOSTILE for name in ("checkpoint", "kind", "page", "layer", "head", "q", "text", "target", "present")}
    view = urlstate.parse(params, ("translator", "lm"), PAGES)
    assert view.checkpoint is None and view.kind is None and view.page is None
    assert (view.layer, view.head, view.query, view.presentation) == (None, None, None, False)
    assert view.text == view.target == HOSTILE  # the text is the text: it is what the model reads
    assert len(view.warnings) == 6  # checkpoint, kind, page, layer, head, q
    for warning in view.warnings:
        assert_no_markup(warning, "warning")
    joined = " ".join(view.warnings)
    assert "Unknown checkpoint" in joined and md(HOSTILE, 40) in joined


# ---------------------------------------------------------------------------------------------
# The app, driven with hostile links and checkpoints.
# ---------------------------------------------------------------------------------------------


def two_steps(model) -> list[tuple[int, dict[str, torch.Tensor]]]:
    """Snapshots at steps 0 and 10 of the same weights (copies: safetensors refuses tensors that share memory)."""
    return [(step, {k: v.clone() for k, v in model.state_dict().items()}) for step in (0, 10)]


@pytest.fixture(scope="module")
def hostile_assets(tmp_path_factory, make_checkpoint) -> Path:
    """A translator, a language model with float32 snapshots, and a classifier whose metadata is all markup."""
    folder = tmp_path_factory.mktemp("hostile-assets")
    translator = make_checkpoint("encoder-decoder")
    save_checkpoint(folder / "translator.safetensors", translator.model, translator.tokenizer, {"task": HOSTILE})
    lm = make_checkpoint("decoder", seed=1)
    save_checkpoint(folder / "lm.safetensors", lm.model, lm.tokenizer, {"steps": 10})
    save_snapshots(folder / "lm.snapshots.safetensors", two_steps(lm.model), lm.model.cfg, lm.tokenizer)
    classifier = make_checkpoint("encoder", n_classes=2, class_names=(HOSTILE, "<b>bold</b> & $y$"))
    training = {
        "task": "<img src=http://evil.example/z>",
        "note": HOSTILE,
        "metrics": {"accuracy": HOSTILE},  # joins the table as metrics.accuracy
        "history": [{"step": 1, "comment": HOSTILE}],  # shown in st.json
    }
    save_checkpoint(folder / "classifier.safetensors", classifier.model, classifier.tokenizer, training)
    return folder


@pytest.fixture
def env(serve_assets, hostile_assets) -> Path:
    serve_assets(hostile_assets)
    return hostile_assets


def start(params: dict) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params.update(params)
    return at.run()


def strings(obj, path: str = ""):
    """Every string in a figure's JSON, with where it is (e.g. "data.0.hovertemplate")."""
    if isinstance(obj, str):
        yield path, obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from strings(v, f"{path}.{k}" if path else str(k))
    elif isinstance(obj, list | tuple):
        for i, v in enumerate(obj):
            yield from strings(v, f"{path}.{i}")


def assert_literal_page(at: AppTest, page: str) -> None:
    """No exception; no markup outside code spans in any Markdown element; every figure string escaped for Plotly."""
    assert not at.exception, (page, [e.value for e in at.exception])
    for name in MARKDOWN_ELEMENTS:
        for element in at.get(name):
            assert_no_markup(str(element.value), f"{page}: st.{name}")
    for radio in at.radio:  # radio options render Markdown too
        for option in radio.options:
            assert_no_markup(option, f"{page}: radio {radio.key}")
    for chart in at.get("plotly_chart"):
        spec = jsonfig.parse(chart.proto.spec)
        for where, s in strings(spec):
            assert "$" not in s, (page, where, s)  # would go to MathJax
            tags = set(re.findall(r"<(/?[a-zA-Z]+)", s))
            assert tags <= OUR_TAGS, (page, where, s)
            if where.endswith("template"):
                assert set(re.findall(r"%\{([^}:|]*)", s)) <= TEMPLATE_VARIABLES, (page, where, s)
                assert "evil" not in s and "rocket" not in s, (page, where, s)  # no user text in a template
            else:
                assert "%{" not in s, (page, where, s)


def test_markup_in_every_link_parameter_is_shown_literally(env):
    params = {name: HOSTILE for name in ("text", "target", "checkpoint", "kind", "layer", "head", "q", "page", "present")}
    at = start(params)
    warnings = [w.value for w in at.warning]
    assert any("Unknown checkpoint" in w and md(HOSTILE, 40) in w for w in warnings), warnings
    assert any("Unknown page" in w for w in warnings) and any("Unknown attention kind" in w for w in warnings)
    assert sum("Ignored the link's" in w for w in warnings) == 3, warnings  # layer, head, q
    shown = at.text_area(key="w_text").value
    assert shown and HOSTILE.startswith(shown)  # the text itself is kept as typed (cut to what the model reads)
    assert {c.key for c in at.get("plotly_chart")} >= {"attn_heatmap", "attn_layer_grid"}  # its tokens are drawn
    assert_literal_page(at, "attention")
    for page in PAGES[1:]:
        at.switch_page(f"pages/{page}.py").run()
        assert_literal_page(at, page)


def test_hostile_class_names_and_training_facts_are_shown_literally(env):
    at = start({"checkpoint": "classifier", "page": "checkpoint"})
    assert_literal_page(at, "checkpoint")
    cells = [str(v) for df in at.dataframe for v in df.value.to_numpy().ravel()]
    assert "<img src=http://evil.example/z>" in cells and HOSTILE in cells  # task, note, metrics.accuracy: as typed
    assert any(f"{HOSTILE}, <b>bold</b> & $y$" == c for c in cells)  # class_names in the config table
    assert json.loads(at.json[0].value)["history"][0]["comment"] == HOSTILE  # st.json shows it as data

    at.switch_page("pages/output.py").run()
    assert_literal_page(at, "output")
    bars = jsonfig.parse(at.get("plotly_chart")[0].proto.spec)
    shown = [plotly_text(HOSTILE[:60] + "…"), plotly_text("<b>bold</b> & $y$")]
    assert bars["layout"]["yaxis"]["ticktext"] == shown
    assert list(bars["data"][0]["customdata"]) == shown
    assert bars["data"][0]["hovertemplate"] == "%{customdata}: %{x:.6f}<extra></extra>"
    assert any(t.value.startswith("Prediction: ") for t in at.text)


def test_uploaded_file_name_with_markup_is_shown_literally(env):
    name = "[x](http://evil.example) <img src=http://evil.example/y> :rocket: $x$ **b**.safetensors"
    # Opened on the page itself: a `?page=` link switches pages within the run, and AppTest then drops the upload.
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).switch_page("pages/checkpoint.py").run()
    at.selectbox(key="w_checkpoint").set_value("upload").run()
    at.file_uploader(key="upload").upload(name, (env / "classifier.safetensors").read_bytes()).run()
    assert_literal_page(at, "checkpoint")
    assert any(name in t.value for t in at.text)  # "Uploaded: <name>", as st.text shows it
    for page in ("attention", "output"):
        at.switch_page(f"pages/{page}.py").run()
        assert_literal_page(at, page)
    # A file that does not load: its name is quoted in the error messages, literally.
    at.file_uploader(key="upload").set_value((name, b"not a checkpoint", "application/octet-stream")).run()
    assert at.error, "a message, not a figure"
    assert_literal_page(at, "upload error")


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_training_caption_names_the_stored_dtype(env, dtype):
    path = env / "lm.snapshots.safetensors"
    lm = catalog.available()["lm"]
    from transformer.checkpoints.format import load_checkpoint

    ckpt = load_checkpoint(lm.path, device="cpu")
    save_snapshots(path, two_steps(ckpt.model), ckpt.config, ckpt.tokenizer, dtype=dtype)
    name = str(dtype).removeprefix("torch.")
    assert stored_dtypes(path) == (name,)
    at = start({"checkpoint": "lm", "page": "training"})
    assert not at.exception and not at.error, [e.value for e in at.error]
    captions = " ".join(c.value for c in at.caption)
    assert f"stored in {name}" in captions
    assert ("up to that rounding" in captions) == (dtype == torch.float16)
    assert "of 10" in captions  # the planned steps, from the checkpoint's training facts
