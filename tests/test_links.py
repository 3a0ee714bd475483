"""A switch of checkpoint keeps the user's text; a link holds every option a page shows; CSV files are named by
checkpoint, view and text (issue 18, items 2, 9 and 12). AppTests on the shipped checkpoints."""

from __future__ import annotations

import gc
import io
import re

import pandas as pd
import pytest
from numerics import assert_same_bits
from streamlit.runtime.media_file_manager import MediaFileManager
from test_app import charts, no_errors, start
from test_modern_pages import TEXT as MODERN_TEXT
from test_modern_pages import env, modern_assets  # noqa: F401  (a grouped-query model: the Model view's grouping)

from server import shared, urlstate, widgets
from server.literal import md
from transformer.api import build_model
from transformer.checkpoints.format import save_checkpoint
from transformer.checkpoints.tokenizer import train_tokenizer
from transformer.data.toy_english import generate_corpus
from transformer.model.config import ModelConfig
from viz.labels import SEP

pytestmark = pytest.mark.numerics

OWN = "my grandmother bakes bread every sunday ."


def pick_checkpoint(at, name: str):
    at.sidebar.selectbox(key="w_checkpoint").set_value(name)
    return at.run()


def buttons(at) -> dict[str, object]:
    return {b.label: b for b in at.sidebar.button}


# -- item 2: the typed text survives a switch of checkpoint -----------------------------------------------


def test_typed_text_survives_a_checkpoint_switch_and_the_example_is_a_button(shipped):
    at = start({"text": OWN})
    no_errors(at)
    assert "Use this model's example" in buttons(at)  # the text is not one of the Translator's examples
    at = pick_checkpoint(at, "lm")
    no_errors(at)
    assert at.session_state["sel_text"] == OWN and at.sidebar.text_area(key="w_text").value == OWN
    assert at.query_params["checkpoint"] == "lm" and at.query_params["text"] == OWN
    buttons(at)["Use this model's example"].click()
    at.run()
    first = shared.examples_for("lm")[0]["text"]
    assert at.session_state["sel_text"] == first and at.sidebar.text_area(key="w_text").value == first
    assert "Use this model's example" not in buttons(at)  # it is the example now


def test_an_untouched_example_becomes_the_new_models_example(shipped):
    at = start()  # the Translator's first example, as opened
    assert at.session_state["sel_text"] == shared.examples_for("translator")[0]["text"]
    at = pick_checkpoint(at, "reverse")
    no_errors(at)
    assert at.session_state["sel_text"] == shared.examples_for("reverse")[0]["text"]


def test_a_kept_text_longer_than_the_new_model_reads_is_cut_with_the_message(shipped):
    long = " ".join(["the big dog sees the cats ."] * 200)
    at = start({"text": long, "checkpoint": "lm"})
    at = pick_checkpoint(at, "classifier")
    no_errors(at)
    assert any("longer than this model reads" in w.value for w in at.warning)
    kept = at.session_state["sel_text"]
    assert long.startswith(kept) and 0 < len(kept) < len(long)


# -- item 9: every option in the link, both ways ----------------------------------------------------------


def test_stretch_and_first_token_options_come_from_the_link_and_go_back_into_it(shipped):
    at = start({"page": "attention", "stretch": "1", "skip_first": "1"})
    no_errors(at)
    assert at.toggle(key="attn_stretch").value is True
    assert at.toggle(key="attn_skip_first").value is True
    assert (at.query_params["stretch"], at.query_params["skip_first"]) == ("1", "1")
    at.toggle(key="attn_stretch").set_value(False).run()
    at.toggle(key="attn_skip_first").set_value(False).run()
    no_errors(at)
    assert "stretch" not in at.query_params and "skip_first" not in at.query_params
    at.toggle(key="attn_stretch").set_value(True).run()
    assert at.query_params["stretch"] == "1"
    # Another page and back: the choice is the session's, not the widget's (which Streamlit drops off its page).
    at.switch_page("pages/qkv.py").run()
    at.switch_page("pages/attention.py").run()
    no_errors(at)
    assert at.toggle(key="attn_stretch").value is True and at.query_params["stretch"] == "1"


def test_model_view_colours_come_from_the_link_and_go_back_into_it(shipped):
    at = start({"page": "model_view", "scale": "sqrt", "skip_first": "1"})
    no_errors(at)
    assert at.radio(key="mv_scale").value == "sqrt" and at.toggle(key="mv_skip_first").value is True
    assert (at.query_params["scale"], at.query_params["skip_first"]) == ("sqrt", "1")
    at.radio(key="mv_scale").set_value("stretch").run()
    no_errors(at)
    assert at.query_params["scale"] == "stretch"
    at.radio(key="mv_scale").set_value("linear").run()
    assert "scale" not in at.query_params  # the default leaves the link short


def test_model_view_grouping_comes_from_the_link_and_goes_back_into_it(env):  # noqa: F811
    at = start({"checkpoint": "lm", "page": "model_view", "text": MODERN_TEXT, "group": "1"})
    no_errors(at)
    assert at.toggle(key="mv_group").value is True and at.query_params["group"] == "1"
    assert charts(at)["mv_grid"]["layout"]["xaxis"]["ticktext"][0] == "H0 · kv0"  # the grouped view is drawn
    at.toggle(key="mv_group").set_value(False).run()
    no_errors(at)
    assert "group" not in at.query_params


BAD_OPTIONS = [
    ("stretch", "yes<b>"),
    ("scale", "cubic`x`"),
    ("skip_first", ":red[2]"),
    ("flow", "on**"),
    ("method", "ig<script>"),
    ("ig_steps", "100`x`"),
    ("dec_pos", "-1"),
    ("sublayers", "[no](x)"),
    ("window", "9e9"),
    ("copies", ":blue[1]"),
]
CHOICES = ("scale", "method", "ig_steps")  # one of a list: the warning quotes up to 30 characters (a number or switch: 20)


@pytest.mark.parametrize(("name", "value"), BAD_OPTIONS)
def test_bad_option_values_are_ignored_with_a_literal_warning(shipped, name, value):
    at = start({"page": "model_view", name: value})
    no_errors(at)
    warned = [w.value for w in at.warning if f"Ignored the link's {name} {md(value, 30 if name in CHOICES else 20)}" in w.value]
    assert len(warned) == 1, [w.value for w in at.warning]
    assert at.radio(key="mv_scale").value == "linear" and name not in at.query_params


def test_parse_reads_the_why_pages_options():
    link = {"flow": "0", "method": "integrated-gradients", "ig_steps": "128", "dec_pos": "3", "sublayers": "0", "window": "7"}
    view = urlstate.parse({**link, "copies": "1"}, ("lm",))
    assert (view.flow, view.method, view.steps, view.dec_pos) == (False, "integrated gradients", 128, 3)
    assert (view.sublayers, view.window, view.copies, view.warnings) == (False, 7, True, ())
    empty = urlstate.parse({}, ("lm",))
    assert (empty.flow, empty.method, empty.steps, empty.dec_pos, empty.sublayers, empty.window, empty.copies) == (None,) * 7
    for word, method in urlstate.SALIENCY_METHODS.items():
        assert urlstate.method_word(method) == word
    bad = urlstate.parse({name: value for name, value in BAD_OPTIONS}, ("lm",))
    assert len(bad.warnings) == len(BAD_OPTIONS)
    assert (bad.flow, bad.method, bad.steps, bad.dec_pos, bad.sublayers, bad.window, bad.copies) == (None,) * 7


def test_clamp_keeps_a_value_within_a_range_that_starts_above_zero():
    warnings: list[str] = []
    assert urlstate.clamp(12, 24, "window end", warnings, low=19) == 19
    assert urlstate.clamp(99, 24, "window end", warnings, low=19) == 23
    assert urlstate.clamp(20, 24, "window end", warnings, low=19) == 20
    assert warnings == [
        "window end 12 is out of range (19–23); showing window end 19.",
        "window end 99 is out of range (19–23); showing window end 23.",
    ]


def test_rollout_and_saliency_options_come_from_the_link_and_go_back_into_it(shipped):
    link = {"flow": "0", "method": "integrated-gradients", "ig_steps": "128", "dec_pos": "1"}
    at = start({"page": "attribution", "checkpoint": "translator", "kind": "encoder self", "layer": "0", **link})
    no_errors(at)
    assert at.toggle(key="attr_flow_on").value is False and "attr_flow" not in charts(at)  # off, though cheap here
    assert at.radio(key="attr_method").value == "integrated gradients"
    assert at.select_slider(key="attr_steps").value == 128
    assert at.selectbox(key="attr_dec_position").value == 1
    assert any("128 steps from the all-zero token vectors" in c.value for c in at.caption)  # the saliency drawn used them
    assert {name: at.query_params[name] for name in link} == link
    # Back to each default: the option leaves the link.
    at.select_slider(key="attr_steps").set_value(64).run()
    assert "ig_steps" not in at.query_params and at.query_params["method"] == "integrated-gradients"
    at.radio(key="attr_method").set_value("gradient × input").run()
    last = len(at.selectbox(key="attr_dec_position").options) - 1
    at.selectbox(key="attr_dec_position").set_value(last).run()
    no_errors(at)
    assert not {"method", "ig_steps", "dec_pos"} & set(at.query_params)
    at.toggle(key="attr_flow_on").set_value(True).run()
    no_errors(at)
    assert "attr_flow" in charts(at) and at.query_params["flow"] == "1"  # a choice, kept as the layer changes


def test_attention_flow_follows_the_layer_until_it_is_chosen(shipped):
    at = start({"page": "attribution", "checkpoint": "translator", "kind": "encoder self", "layer": "0"})
    assert at.toggle(key="attr_flow_on").value is True and "flow" not in at.query_params  # cheap: on by default
    at = start({"page": "attribution", "checkpoint": "translator", "kind": "cross", "layer": "0"})
    assert at.toggle(key="attr_flow_on").value is False and "flow" not in at.query_params  # costly: off by default
    at = start({"page": "attribution", "checkpoint": "translator", "kind": "cross", "layer": "0", "flow": "1"})
    no_errors(at)
    assert at.toggle(key="attr_flow_on").value is True and at.query_params["flow"] == "1"


def test_a_decoder_position_past_the_text_is_clamped_with_one_warning(shipped):
    at = start({"page": "attribution", "checkpoint": "translator", "kind": "encoder self", "dec_pos": "999"})
    no_errors(at)
    last = len(at.selectbox(key="attr_dec_position").options) - 1
    assert at.selectbox(key="attr_dec_position").value == last
    expected = f"decoder position 999 is out of range (0–{last}); showing decoder position {last}."
    assert [w.value for w in at.warning] == [expected]
    assert "dec_pos" not in at.query_params  # the last position is the default
    at.run()
    assert not at.warning  # said once


def test_logit_lens_sublayers_come_from_the_link_and_go_back_into_it(shipped):
    at = start({"page": "lens", "checkpoint": "lm", "sublayers": "0"})
    no_errors(at)
    assert at.toggle(key="lens_sublayers").value is False and at.query_params["sublayers"] == "0"
    rows = charts(at)["lens_grid"]["data"][0]["y"]
    assert not any("attention" in str(row) for row in rows), rows  # one row per layer
    at.toggle(key="lens_sublayers").set_value(True).run()
    no_errors(at)
    assert "sublayers" not in at.query_params


def test_ablation_copies_come_from_the_link_and_go_back_into_it(shipped):
    text = "the dog sees the cat . the dog sees the cat ."  # repeated: copying predicts some next tokens
    at = start({"page": "ablation", "checkpoint": "lm", "text": text, "copies": "1"})
    no_errors(at)
    assert at.toggle(key="abl_copies").value is True and at.query_params["copies"] == "1"
    assert any(c.value.startswith("Counted positions:") for c in at.caption)
    at.toggle(key="abl_copies").set_value(False).run()
    no_errors(at)
    assert "copies" not in at.query_params


@pytest.fixture(scope="module")
def wide_vocab(tmp_path_factory):
    """A language model whose logit lens reads a window of positions: a vocabulary of 300 000 (its tokenizer uses
    150 of them) unembedded from 81 rows, 20 positions at a time of the 24 it reads."""
    texts = [s.text for s in generate_corpus(200, 0)]
    tok = train_tokenizer(texts, "decoder", vocab_size=150, min_frequency=1)
    cfg = ModelConfig(kind="decoder", vocab_size=300_000, n_layers=40, n_heads=2, d_model=16, d_ff=32, max_len=24)
    folder = tmp_path_factory.mktemp("wide")
    save_checkpoint(folder / "lm.safetensors", build_model(cfg, seed=0), tok, {"task": "lm"})
    return folder


LONG = "the big dog near the old tables sees the cats . the small cat sees the big dog ."  # past 24 tokens


def test_logit_lens_window_comes_from_the_link_is_clamped_and_goes_back_into_it(serve_assets, wide_vocab):
    serve_assets(wide_vocab)
    at = start({"page": "lens", "checkpoint": "lm", "text": LONG, "window": "20"})
    no_errors(at)
    slider = at.slider(key="lens_window_end")
    assert (slider.min, slider.max, slider.value) == (19, 23, 20)
    columns = [x.split(SEP)[0] for x in charts(at)["lens_grid"]["data"][0]["x"]]
    assert columns == [str(p) for p in range(1, 21)] and at.query_params["window"] == "20"  # 20 positions, ending at 20
    slider.set_value(23).run()
    no_errors(at)
    assert "window" not in at.query_params  # the default: the window ends at the last position
    at = start({"page": "lens", "checkpoint": "lm", "text": LONG, "window": "3"})
    no_errors(at)
    assert at.slider(key="lens_window_end").value == 19 and at.query_params["window"] == "19"
    clamped = [w.value for w in at.warning if "window end" in w.value]
    assert clamped == ["window end 3 is out of range (19–23); showing window end 19."]


HOSTILE_NAME = "<b>gpt2</b> :red[x] `x`.safetensors"


def test_a_link_to_a_checkpoint_this_server_lacks_says_so_and_keeps_the_text(shipped):
    at = start({"checkpoint": HOSTILE_NAME, "text": "3 1 2 9 5"})
    no_errors(at)
    warning = next(w.value for w in at.warning if "Unknown checkpoint" in w.value)
    assert md(HOSTILE_NAME, 40) in warning  # literally, in one code span
    assert "this server does not have it" in warning and "the link's text" in warning
    assert at.session_state["sel_checkpoint"] == "translator" and at.session_state["sel_text"] == "3 1 2 9 5"


def test_a_link_made_on_an_uploaded_model_says_so(shipped):
    at = start({"uploaded": HOSTILE_NAME, "text": "3 1 2 9 5"})
    no_errors(at)
    warning = next(w.value for w in at.warning if "uploaded model" in w.value)
    assert md(HOSTILE_NAME) in warning and "which this server no longer holds" in warning and "the link's text" in warning
    assert at.session_state["sel_checkpoint"] == "translator" and at.session_state["sel_text"] == "3 1 2 9 5"


def test_an_uploaded_models_link_names_its_files(shipped, tmp_path):
    from test_app import write_tiny

    path = write_tiny(tmp_path / "mine.safetensors", "lm")
    at = start({"checkpoint": "lm"})
    pick_checkpoint(at, "upload")
    at.file_uploader(key="upload").upload("mine.safetensors", path.read_bytes()).run()
    no_errors(at)
    assert at.query_params["uploaded"] == "mine.safetensors" and "checkpoint" not in at.query_params
    digest = at.query_params["upload"]
    assert re.fullmatch(r"[0-9a-f]{64}", digest) and at.session_state["_upload_digest"] == digest


def test_an_uploads_link_opens_it_in_another_session_while_the_server_holds_it(shipped, tmp_path):
    from test_app import charts, write_tiny

    from server import shared

    path = write_tiny(tmp_path / "mine.safetensors", "lm")
    at = start({"checkpoint": "lm"})
    pick_checkpoint(at, "upload")
    at.file_uploader(key="upload").upload("mine.safetensors", path.read_bytes()).run()
    at.text_area(key="w_text").input("the dog runs .").run()
    no_errors(at)
    link = dict(at.query_params)
    # Another browser (another session, no files of its own) opens the link: the same model, text and head.
    other = start({**link})
    no_errors(other)
    assert other.session_state["sel_checkpoint"] == "upload" and other.session_state["sel_text"] == "the dog runs ."
    assert_same_bits(
        charts(other)["attn_heatmap"]["data"][0]["z"], charts(at)["attn_heatmap"]["data"][0]["z"], why="one shared trace"
    )
    assert any(c.value.startswith(f"Opened from a link: {md('mine.safetensors', 300)}") for c in other.sidebar.caption)
    assert dict(other.query_params)["upload"] == link["upload"]
    # A digest the server does not hold (let go, or another server's): the literal warning, the default model.
    gone = start({**link, "upload": "0" * 64})
    no_errors(gone)
    assert gone.session_state["sel_checkpoint"] != "upload"
    assert any("which this server no longer holds" in w.value and md("mine.safetensors") in w.value for w in gone.warning)
    # The server lets it go (no cache, no session holds it): the link says so instead of opening it.
    del at, other
    shared.load_upload.clear()
    gc.collect()
    assert shared.linked_uploads().get(link["upload"]) is None
    late = start({**link})
    assert late.session_state["sel_checkpoint"] != "upload"
    assert any("which this server no longer holds" in w.value for w in late.warning)


def test_a_bad_upload_digest_is_ignored_with_a_literal_warning(shipped):
    at = start({"upload": "<b>x</b>", "uploaded": "a.safetensors"})
    no_errors(at)
    assert any("not the digest of an upload" in w.value and md("<b>x</b>", 20) in w.value for w in at.warning)


def test_parse_reads_the_options_and_the_link_writes_them_back():
    view = urlstate.parse({"stretch": "1", "skip_first": "0", "scale": "sqrt", "group": "1"}, ("lm",))
    assert (view.stretch, view.skip_first, view.scale, view.group, view.warnings) == (True, False, "sqrt", True, ())
    assert urlstate.parse({}, ("lm",)).stretch is None
    assert (urlstate.switch(True), urlstate.switch(False)) == ("1", "0")


# -- item 12: CSV names and the Model view's tokens ---------------------------------------------------------


@pytest.fixture
def downloads(monkeypatch) -> dict[str, tuple[str, object]]:
    """What each Download CSV button hands Streamlit: {button key: (file name, the callable building the CSV)}."""
    seen: dict[str, tuple[str, object]] = {}
    add = MediaFileManager.add_deferred

    def record(self, data_callable, mimetype, coordinates, file_name=None, *, element_id=""):
        seen[element_id.rsplit("-", 1)[-1]] = (file_name, data_callable)
        return add(self, data_callable, mimetype, coordinates, file_name, element_id=element_id)

    monkeypatch.setattr(MediaFileManager, "add_deferred", record)
    return seen


def test_csv_names_carry_checkpoint_view_and_text(shipped, downloads):
    names = {}
    for checkpoint, text in (
        ("translator", "the cat sees the dog ."),
        ("reverse", "the cat sees the dog ."),
        ("translator", "a dog ."),
    ):
        downloads.clear()
        at = start({"checkpoint": checkpoint, "text": text, "kind": "cross", "layer": "1", "head": "1"})
        no_errors(at)
        names[checkpoint, text] = downloads["csv_attn_heatmap"][0]
        ctx = at.session_state["_ctx"]  # the text as the model read it (the Reverse model reads 16 tokens)
        assert names[checkpoint, text] == f"{checkpoint}_weights_cross_L1_H1_{widgets.text_hash(ctx.text, ctx.target)}.csv"
    assert len(set(names.values())) == 3, names  # no two downloads collide
    again = start({"checkpoint": "translator", "text": "a dog .", "kind": "cross", "layer": "1", "head": "1"})
    no_errors(again)
    assert downloads["csv_attn_heatmap"][0] == names["translator", "a dog ."]  # stable: the same view, the same name


@pytest.mark.parametrize(
    "hostile", ["../../etc/passwd", "<script>alert(1)</script>", "名前 with spaces", "x" * 500, "...", 'a"b\\c\n:d']
)
def test_csv_names_are_sanitised(hostile):
    name = widgets.download_name(hostile, "weights_cross_L1_H1", "text", None)
    stem, ext = name.rsplit(".", 1)
    assert ext == "csv" and all(c.isascii() and (c.isalnum() or c in "._-") for c in stem), name
    assert not name.startswith(".") and "/" not in name and len(name) <= 2 * widgets.NAME_CHARS + 40


def test_model_view_csv_carries_query_and_key_tokens(shipped, downloads):
    text = "the big dog near the old tables sees the cats ."
    at = start({"page": "model_view", "checkpoint": "lm", "text": text})
    no_errors(at)
    name, make = downloads["csv_mv_grid"]
    assert name.startswith("lm_model_view_decoder_self_") and name.endswith(f"_{widgets.text_hash(text, None)}.csv")
    table = pd.read_csv(io.StringIO(make()), keep_default_na=False)
    tokens = shared.tokens_for(at.session_state["_ctx"].identity, text, None, at.session_state["_ctx"].ckpt)[0].tokens
    one = table[(table["layer"] == 0) & (table["head"] == 0)]
    assert (one["query_from"] == one["query_to"]).all()  # a short text: one token per cell
    for row in one.itertuples():
        assert (row.query_tokens, row.key_tokens) == (tokens[row.query_from], tokens[row.key_from])


def test_compare_csv_of_b_names_checkpoint_b(shipped, downloads):
    at = start({"page": "compare", "cmp": "checkpoints", "checkpoint2": "reverse", "text": "the cat ."})
    no_errors(at)
    assert downloads["csv_cmp_heatmap_a"][0].startswith("translator_compare_a_")
    assert downloads["csv_cmp_heatmap_b"][0].startswith("reverse_compare_b_")
