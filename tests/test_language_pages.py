"""The app on multilingual translators: the sidebar's source and target language, the link that carries them, and
each session's own translation.

The catalogue offers an M2M-100 folder (as "translator") and an mBART-50 folder (as "reverse") with random weights,
made by `transformers` as released (no forced language in their generation config), converted to our format with
their decoding facts. The translations on the page are checked against transformers' own greedy `generate` on the
folder, given the languages as its users give them (the source's token in the input ids, `forced_bos_token_id`).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_app import charts, frame, no_errors, start, write_tiny
from test_import_bart_family import M2M, MBART, reference
from test_languages import MBART_LANGS, folder_tokenizer, save_released
from test_literal import HOSTILE, assert_no_markup

from server import urlstate
from server.literal import md
from server.notices import HEADLINE
from transformer.checkpoints.format import save_checkpoint
from transformer.checkpoints.importers import load_hf_dir
from transformer.decoding import DEFAULT_NEW_TOKENS
from viz.labels import plotly_text, shown_tokens, unique_labels

pytestmark = pytest.mark.numerics

TEXT = "a dog runs in the park and the cat watches it"
M2M_LANGS = ("__en__", "__fr__", "__de__")
# catalogue name -> (class, languages (the template's first), config fields)
MODELS = {
    "translator": (M2M, M2M_LANGS, {}),
    "reverse": (MBART, MBART_LANGS, dict(scale_embedding=True, decoder_start_token_id=2)),
}


@pytest.fixture(scope="module")
def hf_folders(tmp_path_factory) -> dict[str, Path]:
    """The released-style folders, and beside them an assets folder of the same models in our format (plus a toy LM)."""
    root = tmp_path_factory.mktemp("language_pages")
    assets = root / "assets"
    out = {}
    for name, spec in MODELS.items():
        ckpt = load_hf_dir(save_released(root / name, *spec), device="cpu")
        save_checkpoint(assets / f"{name}.safetensors", ckpt.model, ckpt.tokenizer, training=ckpt.training)
        out[name] = root / name
    write_tiny(assets / "lm.safetensors", "lm")
    return out


@pytest.fixture
def env(serve_assets, hf_folders):
    serve_assets(next(iter(hf_folders.values())).parent / "assets")
    return hf_folders


def translation(folders: dict[str, Path], name: str, source: str, target: str, text: str = TEXT) -> tuple[list[int], str]:
    """transformers' greedy output on the folder for `text` marked as `source`, forced into `target`: the decoder's ids
    without the end token, and their text."""
    tok = folder_tokenizer(MODELS[name][1], source)
    ref = reference(folders[name])
    src = torch.tensor([tok.encode(text).ids])
    forced = tok.token_to_id(target)
    out = ref.generate(src, forced_bos_token_id=forced, num_beams=1, do_sample=False, max_new_tokens=DEFAULT_NEW_TOKENS)
    ids = out[0].tolist()
    ids = ids[:-1] if ids[-1] == ref.generation_config.eos_token_id else ids
    return ids, tok.decode(ids, skip_special_tokens=True)


def shown(at) -> str:
    """The Output page's greedy translation."""
    return at.code[0].value


def chosen(at) -> tuple[str, str]:
    return at.selectbox(key="w_src_lang").value, at.selectbox(key="w_tgt_lang").value


def test_the_sidebar_offers_the_languages_and_the_translation_follows_the_choice(env):
    at = start({"checkpoint": "translator", "text": TEXT, "page": "output"})
    no_errors(at)
    assert not at.warning, [w.value for w in at.warning]
    assert at.selectbox(key="w_src_lang").options == at.selectbox(key="w_tgt_lang").options == list(M2M_LANGS)
    # The folder forces no language: the source is the template's, the target the first other language.
    assert chosen(at) == ("__en__", "__fr__")
    assert (at.query_params["src_lang"], at.query_params["tgt_lang"]) == ("__en__", "__fr__")
    assert shown(at) == translation(env, "translator", "__en__", "__fr__")[1]
    assert any(
        c.value == "The source is marked ` __en__ `; the decoder starts with ` </s> `, then ` __fr__ ` is forced."
        for c in at.sidebar.caption
    )
    assert any(c.value.startswith("Translated from ` __en__ ` into ` __fr__ `") for c in at.caption)

    at.selectbox(key="w_tgt_lang").set_value("__de__").run()
    no_errors(at)
    ids, text = translation(env, "translator", "__en__", "__de__")
    assert shown(at) == text and text != translation(env, "translator", "__en__", "__fr__")[1]
    assert list(frame(at, column="#1").index) == unique_labels(
        at.session_state["_ctx"].ckpt.tokenizer.id_to_token(i) for i in ids
    )
    assert at.query_params["tgt_lang"] == "__de__"

    at.selectbox(key="w_src_lang").set_value("__fr__").run()
    no_errors(at)
    assert shown(at) == translation(env, "translator", "__fr__", "__de__")[1]
    at.switch_page("pages/attention.py").run()
    at.radio(key="attn_kind").set_value("cross").run()
    no_errors(at)
    fig = charts(at)["attn_heatmap"]
    source = folder_tokenizer(M2M_LANGS, "__fr__").encode(TEXT).tokens
    assert fig["layout"]["xaxis"]["ticktext"] == [plotly_text(t) for t in shown_tokens(source)]  # "Ġ" ticked "␣"
    assert fig["layout"]["yaxis"]["ticktext"][:2] == [plotly_text("</s>"), "__de__"]


def test_the_link_restores_the_languages(env):
    at = start({"checkpoint": "reverse", "text": TEXT, "page": "output", "src_lang": "fr_XX", "tgt_lang": "de_DE"})
    no_errors(at)
    assert not at.warning, [w.value for w in at.warning]
    assert chosen(at) == ("fr_XX", "de_DE")
    assert shown(at) == translation(env, "reverse", "fr_XX", "de_DE")[1]
    assert (at.query_params["src_lang"], at.query_params["tgt_lang"]) == ("fr_XX", "de_DE")
    at.switch_page("pages/checkpoint.py").run()
    no_errors(at)
    assert (at.query_params["src_lang"], at.query_params["tgt_lang"]) == ("fr_XX", "de_DE")
    rules = [t.value for t in at.text if t.value.startswith("Starts with")]
    assert rules[0].startswith("Starts with </s>, then de_DE (forced); ends at </s>")
    # A target of one's own follows the forced language too.
    at.switch_page("pages/attention.py").run()
    at.toggle(key="w_auto_target").set_value(False).run()
    at.text_input(key="w_target").input("a dog").run()
    at.radio(key="attn_kind").set_value("cross").run()
    no_errors(at)
    target = folder_tokenizer(MBART_LANGS, "en_XX").encode("a dog", add_special_tokens=False).tokens
    expected = [plotly_text(t) for t in shown_tokens(("</s>", "de_DE", *target))]
    assert charts(at)["attn_heatmap"]["layout"]["yaxis"]["ticktext"] == expected
    # Another model: its own languages, from its own defaults.
    at.selectbox(key="w_checkpoint").set_value("translator").run()
    no_errors(at)
    assert chosen(at) == ("__en__", "__fr__")


def test_languages_the_model_does_not_have_fall_back_with_a_literal_warning(env):
    at = start({"checkpoint": "translator", "text": TEXT, "page": "output", "src_lang": "**de**", "tgt_lang": "de_DE"})
    no_errors(at)
    warnings = [w.value for w in at.warning]
    assert "The link's source language ` **de** ` is not one of this model's 3 languages; showing ` __en__ `." in warnings
    assert "The link's target language ` de_DE ` is not one of this model's 3 languages; showing ` __fr__ `." in warnings
    assert chosen(at) == ("__en__", "__fr__") and at.query_params["tgt_lang"] == "__fr__"
    assert shown(at) == translation(env, "translator", "__en__", "__fr__")[1]

    at = start({"checkpoint": "translator", "text": TEXT, "tgt_lang": "<b>" * 10})
    assert any(w.value.startswith("Ignored the link's tgt_lang ` <b><b>") for w in at.warning)
    assert chosen(at) == ("__en__", "__fr__")

    at = start({"checkpoint": "lm", "text": TEXT, "tgt_lang": "__de__"})
    no_errors(at)
    assert [w.value for w in at.warning if not w.value.startswith(HEADLINE)] == [
        "This model has no languages to choose: ignored the link's target language ` __de__ `."
    ]
    assert "src_lang" not in at.query_params and "tgt_lang" not in at.query_params
    assert all(s.key not in ("w_src_lang", "w_tgt_lang") for s in at.selectbox)


def test_two_sessions_with_different_languages_each_get_their_own_translation(env):
    german = start({"checkpoint": "translator", "text": TEXT, "page": "output", "tgt_lang": "__de__"})
    french = start({"checkpoint": "translator", "text": TEXT, "page": "output", "tgt_lang": "__fr__"})
    no_errors(german)
    no_errors(french)
    expected = {lang: translation(env, "translator", "__en__", lang)[1] for lang in ("__de__", "__fr__")}
    assert expected["__de__"] != expected["__fr__"]
    assert (shown(german), shown(french)) == (expected["__de__"], expected["__fr__"])
    german.run()  # the French session's run, cached since, is not the German one's
    assert shown(german) == expected["__de__"]
    # Each session's Attention page draws its own decoder tokens.
    for at, lang in ((german, "__de__"), (french, "__fr__")):
        at.switch_page("pages/attention.py").run()
        at.radio(key="attn_kind").set_value("cross").run()
        no_errors(at)
        assert charts(at)["attn_heatmap"]["layout"]["yaxis"]["ticktext"][1] == lang


def test_a_links_languages_are_short_plain_strings_until_the_model_judges_them():
    view = urlstate.parse({"src_lang": HOSTILE, "tgt_lang": "deu_Latn", "checkpoint": "translator"}, ("translator",))
    assert (view.source_lang, view.target_lang) == (None, "deu_Latn")
    assert view.warnings == (
        f"Ignored the link's src_lang {md(HOSTILE, 30)}: not a language token (e.g. en_XX, __de__, deu_Latn).",
    )
    assert_no_markup(view.warnings[0], "warning")
    assert urlstate.parse({"tgt_lang": ""}, ()) == urlstate.parse({}, ()) == urlstate.UrlView()
