"""BART, mBART, Marian and M2M-100 folders imported into our model: parity with `transformers`, greedy output token
for token, the position tables, refusals.

Each folder is a tiny `transformers` model with random weights (tests/hf_reference.py: norm gains off 1; the
final_logits_bias set non-zero here, since `randomise` moves parameters and it is a buffer), saved by
`save_pretrained`, with a byte-level BPE trained here whose special tokens and template are the family's
(BART "<s> $A </s>", mBART-50 "en_XX $A </s>", Marian "$A </s>" with <pad> last, M2M-100 "__en__ $A </s>"); nothing
is downloaded. `verify.compare` runs transformers' own class (eager attention, float32) on the folder and returns
the largest difference of every layer's encoder self, decoder self and cross weights and of the next-token
probabilities, for a given target; `generate(num_beams=1, do_sample=False)` is the reference for greedy output.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import transformers
from hf_reference import CORPUS, TEXTS, copy_folder, randomise
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, processors, trainers
from transformers.models.m2m_100.modeling_m2m_100 import M2M100SinusoidalPositionalEmbedding
from transformers.models.marian.modeling_marian import MarianSinusoidalPositionalEmbedding

from transformer import CheckpointError
from transformer.api import greedy_decode, streams, trace_text
from transformer.checkpoints.format import Checkpoint
from transformer.checkpoints.importers import bart, judge_folder, load_hf_dir, m2m_100, marian, mbart
from transformer.checkpoints.verify import compare
from transformer.model.network import TransformerModel
from transformer.model.positions import sinusoidal_table

pytestmark = pytest.mark.numerics

# The issue's contract: ours and transformers' eager float32 differ by float32 rounding only. Measured on these
# tiny models: at most a few 1e-7 (see the report printed by each test, `pytest -s`).
TOL = 1e-4
TARGET = "a dog runs in the park and the cat watches it"  # the decoder's text after the start (and language) token


def tokenizer(specials: tuple[str, ...], template: str, added: tuple[str, ...] = ()) -> HFTokenizer:
    """A byte-level BPE trained on CORPUS: `specials` first (ids 0, 1, …), then the merges, then `added` special
    tokens (language codes, Marian's <pad>); `template` says what encoding a source adds around it."""
    tok = HFTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320, special_tokens=list(specials), initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    tok.add_special_tokens(list(added))
    marks = [t for t in template.split() if t != "$A"]
    tok.post_processor = processors.TemplateProcessing(single=template, special_tokens=[(t, tok.token_to_id(t)) for t in marks])
    return tok


BART_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")  # <s>=0 <pad>=1 </s>=2 <unk>=3, as BART's, mBART's and M2M-100's
PAD3_SPECIALS = ("<s>", "<unk>", "</s>", "<pad>")  # <pad>=3 (KoBART's): BART still reads row t + 2, M2M-100 starts at 4
BART_TOK = tokenizer(BART_SPECIALS, "<s> $A </s>")
BART_PAD3_TOK = tokenizer(PAD3_SPECIALS, "<s> $A </s>")
MBART_TOK = tokenizer(BART_SPECIALS, "en_XX $A </s>", ("en_XX", "de_DE"))  # mBART-50's source template
MARIAN_TOK = tokenizer(("</s>", "<unk>"), "$A </s>", ("<pad>",))  # opus-mt: </s>=0 <unk>=1, <pad> the last id
M2M_TOK = tokenizer(BART_SPECIALS, "__en__ $A </s>", ("__en__", "__de__"))
M2M_PAD3_TOK = tokenizer(PAD3_SPECIALS, "__en__ $A </s>", ("__en__", "__de__"))
MARIAN_PAD = MARIAN_TOK.token_to_id("<pad>")

# encoder and decoder of different depths; one n_heads and d_ff (our config has one of each)
SIZES = dict(
    d_model=32, encoder_layers=2, decoder_layers=3, encoder_attention_heads=4, decoder_attention_heads=4,
    encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64,
)  # fmt: skip
BART, MBART = transformers.BartForConditionalGeneration, transformers.MBartForConditionalGeneration
MARIAN, M2M = transformers.MarianMTModel, transformers.M2M100ForConditionalGeneration
MARIAN_IDS = dict(
    pad_token_id=MARIAN_PAD, decoder_start_token_id=MARIAN_PAD, eos_token_id=0, forced_eos_token_id=0, bos_token_id=None
)
PAD3_IDS = dict(pad_token_id=3, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2)


# name -> (class, tokenizer, config fields, the forced first token or None, what our config must say)
CASES = {
    "bart": (BART, BART_TOK, {}, None, dict(norm_first=False, embed_norm=True, positional="learned", position_offset=2,
                                            logits_bias=True, tie_embeddings=True, scale_embeddings=False, activation="gelu")),
    "bart_untied_scaled": (BART, BART_TOK, dict(tie_word_embeddings=False, scale_embedding=True, activation_function="relu"),
                           None, dict(tie_embeddings=False, scale_embeddings=True, activation="relu", logits_bias=True)),
    "bart_pad3": (BART, BART_PAD3_TOK, PAD3_IDS, None, dict(position_offset=2)),
    "bart_base": (transformers.BartModel, BART_TOK, {}, None, dict(logits_bias=False, tie_embeddings=True)),
    "mbart50": (MBART, MBART_TOK, dict(scale_embedding=True, decoder_start_token_id=2), "de_DE",
                dict(norm_first=True, final_norm=True, embed_norm=True, positional="learned", position_offset=2,
                     logits_bias=True, scale_embeddings=True)),
    "mbart_untied_bos_start": (MBART, MBART_TOK, dict(tie_word_embeddings=False), None, dict(tie_embeddings=False)),
    "marian": (MARIAN, MARIAN_TOK, dict(scale_embedding=True, activation_function="swish", **MARIAN_IDS), None,
               dict(norm_first=False, embed_norm=False, positional="sinusoidal", sinusoidal_layout="split",
                    position_offset=0, logits_bias=True, scale_embeddings=True, activation="silu")),
    "marian_untied": (MARIAN, MARIAN_TOK, dict(scale_embedding=True, tie_word_embeddings=False, **MARIAN_IDS), None,
                      dict(tie_embeddings=False)),
    "m2m": (M2M, M2M_TOK, {}, "__de__", dict(norm_first=True, final_norm=True, embed_norm=False, positional="sinusoidal",
                                            sinusoidal_layout="fairseq", position_offset=2, logits_bias=False,
                                            scale_embeddings=True, activation="relu", tie_embeddings=True)),
    "m2m_untied_pad3": (M2M, M2M_PAD3_TOK, dict(tie_word_embeddings=False, **PAD3_IDS), "__de__",
                        dict(position_offset=4, tie_embeddings=False)),
}  # fmt: skip


def build(cls, tok: HFTokenizer, seed: int = 1, **fields) -> torch.nn.Module:
    """A random-weight `cls` for `tok`'s vocabulary: weights moved off their init, a non-zero final_logits_bias, and
    (untied) the stacks' embed_tokens equal to `shared`, as one embedding (ours) needs."""
    torch.manual_seed(0)
    model = cls(cls.config_class(**{"vocab_size": tok.get_vocab_size(), **SIZES, **fields})).eval()
    randomise(model, seed)
    base = getattr(model, "model", model)
    with torch.no_grad():
        if hasattr(model, "final_logits_bias"):
            model.final_logits_bias.copy_(
                torch.randn(model.final_logits_bias.shape, generator=torch.Generator().manual_seed(seed))
            )
        if not model.config.tie_word_embeddings:
            base.encoder.embed_tokens.weight.copy_(base.shared.weight)
            base.decoder.embed_tokens.weight.copy_(base.shared.weight)
    return model


def make(path: Path, name: str, seed: int = 1, generation: dict | None = None, **more) -> Path:
    """CASES[name] with `more` config fields, saved into `path` with its tokenizer; its generation config forces the
    case's first token, and has the `generation` settings."""
    cls, tok, fields, forced, _ = CASES[name]
    model = build(cls, tok, seed, **{**fields, **more})
    if forced is not None:
        model.generation_config.forced_bos_token_id = tok.token_to_id(forced)
    for key, value in (generation or {}).items():
        setattr(model.generation_config, key, value)
    model.save_pretrained(path)
    tok.save(str(path / "tokenizer.json"))
    return path


def reference(folder: Path) -> torch.nn.Module:
    """transformers' generation class on the folder, as a user would load it (float32, eager attention)."""
    return transformers.AutoModelForSeq2SeqLM.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager").eval()


def parity(folder: Path, texts=TEXTS, target: str = TARGET) -> dict:
    """verify.compare on `folder`: every layer's encoder self, decoder self and cross weights and the next-token
    probabilities, with `target` after the decoding prefix."""
    ckpt = load_hf_dir(folder, device="cpu")
    result = compare(folder, ckpt, tuple(texts), targets=(target,))
    att, out = result["max_attention_diff"], result["max_output_diff"]
    print(f"{folder.name}: attention {att:.2e}, output {out:.2e}, {result['tokens']} tokens")
    assert att <= TOL and out <= TOL, f"attention {att:.2e}, output {out:.2e} > TOL {TOL}"
    return {"ckpt": ckpt, "attention": att, "output": out}


@pytest.mark.parametrize("name", CASES)
def test_matches_transformers(tmp_path, name):
    folder = make(tmp_path / name, name)
    ckpt = parity(folder)["ckpt"]
    assert judge_folder(folder) == ckpt.training["model_type"]  # the model pickers offer it (config.json alone)
    cfg, expect = ckpt.config, CASES[name][4]
    assert {key: getattr(cfg, key) for key in expect} == expect
    assert (cfg.kind, cfg.n_layers, cfg.dec_layers, cfg.n_heads, cfg.d_ff, cfg.max_len, cfg.layer_norm_eps) == (
        "encoder-decoder", 2, 3, 4, 64, 64, 1e-5,
    )  # fmt: skip


# BartModel's folder has no generation config (its class cannot generate): the plain settings only
GREEDY = [pytest.param(name, n, id=f"{name}-{'no_repeat_3' if n else 'plain'}") for name in CASES for n in (0, 3)
          if not (n and name == "bart_base")]  # fmt: skip


@pytest.mark.parametrize(("name", "ngrams"), GREEDY)
def test_greedy_output_equals_generate(tmp_path, name, ngrams):
    """Token for token as transformers' greedy generate, with the family's start token, the forced language token,
    and the forced EOS at the length limit: long enough (random weights) to be more than the first few steps.
    A tiny random model with a tied head mostly repeats one token; BART-CNN's no_repeat_ngram_size=3 in the
    generation config makes it walk through many (so a wrong position in a cached step would show).
    A base-model folder (BartModel) is generated from as transformers' generation class reads it: no logits bias."""
    folder = make(tmp_path / name, name, generation={"no_repeat_ngram_size": ngrams} if ngrams else None)
    ckpt, ref = load_hf_dir(folder, device="cpu"), reference(folder)
    tok, forced = CASES[name][1], CASES[name][3]
    n = 24
    for text in TEXTS:
        src = list(ckpt.tokenizer.encode(text).ids)
        ours = greedy_decode(ckpt.model, src, ckpt.decoding, max_new_tokens=n)
        theirs = ref.generate(torch.tensor([src]), num_beams=1, do_sample=False, max_new_tokens=n)[0].tolist()
        print(f"{name}: {theirs}")
        assert theirs[0] == ckpt.decoding.start
        expected = theirs[1:-1] if theirs[-1] in ckpt.decoding.eos else theirs[1:]
        assert ours == expected
        assert len(ours) >= 8, f"too short to show much: {theirs}"
        assert not ngrams or len(set(ours)) >= 4, f"too few distinct tokens: {theirs}"
        if forced is not None:
            assert ours[0] == tok.token_to_id(forced)
        if name.startswith("m2m"):  # fairseq does not number a pad token (see m2m_100.py); the output holds none
            assert ref.config.pad_token_id not in ours


def test_generation_settings(tmp_path):
    """The start, end and forced tokens the loader read, per family (from generation_config.json, as generate does)."""
    got = {}
    for name in ("bart", "mbart50", "mbart_untied_bos_start", "marian", "m2m"):
        d = load_hf_dir(make(tmp_path / name, name), device="cpu").decoding
        got[name] = (d.start, d.eos, d.forced_bos, d.forced_eos)
    lang = MBART_TOK.token_to_id("de_DE"), M2M_TOK.token_to_id("__de__")
    assert got == {
        "bart": (2, (2,), None, (2,)),
        "mbart50": (2, (2,), lang[0], (2,)),
        "mbart_untied_bos_start": (0, (2,), None, (2,)),  # MBartConfig has no decoder_start_token_id: bos starts
        "marian": (MARIAN_PAD, (0,), None, (0,)),
        "m2m": (2, (2,), lang[1], ()),
    }


# --- the position tables ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("d", [32, 33])
def test_sinusoid_layouts_equal_transformers_tables(d):
    """Marian's split table from position 0 and M2M-100's fairseq table from pad + 1, at an even and an odd width."""
    marian_table = MarianSinusoidalPositionalEmbedding(64, d).create_weight()
    assert (sinusoidal_table(64, d, "split", 0) - marian_table).abs().max() <= 1e-7
    for pad in (1, 3):
        full = M2M100SinusoidalPositionalEmbedding.get_embedding(64 + pad + 1, d, pad)
        assert (sinusoidal_table(64, d, "fairseq", pad + 1) - full[pad + 1 :]).abs().max() <= 1e-7


@pytest.mark.parametrize("name", ["bart", "marian", "m2m", "m2m_untied_pad3"])
def test_imported_position_tables_are_transformers(tmp_path, name):
    """The rows our stacks add equal the rows transformers reads for positions 0 … max_len − 1."""
    folder = make(tmp_path / name, name)
    model, ref = load_hf_dir(folder, device="cpu").model, reference(folder).model
    n = model.cfg.max_len
    tokens = torch.full((1, n), 5)  # no pad token: M2M-100 numbers them from pad + 1
    for ours, theirs in ((model.encoder.embed, ref.encoder.embed_positions), (model.decoder.embed, ref.decoder.embed_positions)):
        if model.cfg.positional == "learned":  # BART: the file's table, token t reading row t + 2
            assert torch.equal(ours.positions.weight, theirs.weight)
            rows, reference_rows = ours.positions(torch.arange(n) + model.cfg.position_offset), theirs(tokens)[0]
        elif model.cfg.sinusoidal_layout == "split":  # Marian's module takes the input's shape
            rows, reference_rows = ours.pe, theirs(tokens.shape)
        else:
            rows, reference_rows = ours.pe, theirs(tokens)[0]
        assert rows.shape == reference_rows.shape == (n, model.cfg.d_model)
        assert (rows - reference_rows).abs().max() <= 1e-7


@pytest.mark.parametrize(
    ("name", "break_it"),
    [
        ("bart", "offset"),  # token t reads row t, not t + 2
        ("marian", "interleaved"),  # our own sinusoid's layout in place of Marian's
        ("m2m", "offset"),  # fairseq's table from position 0, not pad + 1
    ],
)
def test_positions_are_not_vacuous(tmp_path, name, break_it):
    """The parity above can fail: the same weights with the positions read wrongly are far from the reference."""
    folder = make(tmp_path / name, name)
    ckpt = load_hf_dir(folder, device="cpu")
    cfg, state = ckpt.config, ckpt.model.state_dict()
    if break_it == "interleaved":
        wrong = dataclasses.replace(cfg, sinusoidal_layout="interleaved")
    else:
        wrong = dataclasses.replace(cfg, position_offset=0)
        if cfg.positional == "learned":  # the first max_len rows: token t reads row t
            for stack in ("encoder", "decoder"):
                state[f"{stack}.embed.positions.weight"] = state[f"{stack}.embed.positions.weight"][: cfg.max_len]
    model = TransformerModel.from_weights(wrong, state).eval().requires_grad_(False)
    broken = Checkpoint(model=model, tokenizer=ckpt.tokenizer, training=ckpt.training, name="broken")
    result = compare(folder, broken, TEXTS, targets=(TARGET,))
    print(f"{name} with {break_it}: attention {result['max_attention_diff']:.2e}, output {result['max_output_diff']:.2e}")
    assert result["max_attention_diff"] > 1e-2, result


# --- odd inputs -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["bart", "marian", "m2m"])
def test_a_source_longer_than_the_positions_is_cut(tmp_path, name):
    """max_position_embeddings 16: the source keeps its first 15 tokens and its closing </s>, says how many it lost,
    and the cut text (every row of the tables in use) is still at parity."""
    folder = make(tmp_path / name, name, max_position_embeddings=16)
    ckpt = parity(folder, texts=(TEXTS[0],), target="a dog")["ckpt"]
    source, _ = streams(ckpt, TEXTS[0], target="")
    full = CASES[name][1].encode(TEXTS[0]).ids
    assert len(full) > 16 and source.truncated == len(full) - 16
    assert list(source.ids) == full[:15] + full[-1:]


@pytest.mark.parametrize("name", ["bart", "mbart50", "m2m"])
def test_an_empty_target_is_the_decoding_prefix(tmp_path, name):
    """target "": the decoder reads only its start token (and the forced language token), and is at parity there."""
    folder = make(tmp_path / name, name)
    ckpt = parity(folder, target="")["ckpt"]
    trace = trace_text(ckpt, TEXTS[1], target="")
    assert tuple(trace.target.ids) == ckpt.decoding.prefix
    assert trace.probs.shape[1] == len(ckpt.decoding.prefix)


# --- config mapping and refusals --------------------------------------------------------------------------------

GENERATION_KEYS = ("decoder_start_token_id", "bos_token_id", "eos_token_id", "pad_token_id", "forced_bos_token_id",
                   "forced_eos_token_id")  # fmt: skip


@pytest.mark.parametrize(
    ("family", "cls"),
    [
        (bart, transformers.BartConfig),
        (mbart, transformers.MBartConfig),
        (marian, transformers.MarianConfig),
        (m2m_100, transformers.M2M100Config),
    ],
)
def test_absent_fields_take_transformers_defaults(family, cls):
    """A config.json that leaves fields out means the family config class's defaults, generation ids included."""
    ours, theirs = family.config({"model_type": cls.model_type}), cls()
    assert (ours["vocab_size"], ours["d_model"], ours["max_len"]) == (
        theirs.vocab_size,
        theirs.d_model,
        theirs.max_position_embeddings,
    )
    assert (ours["n_layers"], ours["n_decoder_layers"]) == (theirs.encoder_layers, theirs.decoder_layers)
    assert (ours["n_heads"], ours["d_ff"]) == (theirs.encoder_attention_heads, theirs.encoder_ffn_dim)
    assert ours["activation"] == {"gelu": "gelu", "relu": "relu"}[theirs.activation_function]
    assert (ours["scale_embeddings"], ours["tie_embeddings"]) == (theirs.scale_embedding, theirs.tie_word_embeddings)
    if family is m2m_100:
        assert ours["position_offset"] == theirs.pad_token_id + 1
    assert {k: family.FAMILY.generation.get(k) for k in GENERATION_KEYS} == {k: getattr(theirs, k, None) for k in GENERATION_KEYS}


def test_facts(tmp_path):
    facts = {
        name: load_hf_dir(make(tmp_path / name, name), device="cpu").training for name in ("bart", "marian", "m2m_untied_pad3")
    }
    assert facts["bart"]["positions"] == "learned; token t reads row t + 2"
    assert (facts["bart"]["layer_norm"], facts["bart"]["embedding_norm"], facts["bart"]["logits_bias"]) == (
        "post-LN (after each residual add)", True, True,
    )  # fmt: skip
    assert facts["bart"]["embedding_scale"] == 1.0 and facts["marian"]["embedding_scale"] == pytest.approx(32**0.5)
    assert facts["marian"]["positions"] == "sinusoidal, [sin | cos] halves (Marian), from position 0"
    m2m = facts["m2m_untied_pad3"]
    assert m2m["positions"] == "sinusoidal, fairseq's [sin | cos] halves, from position 4 (pad_token_id + 1)"
    assert (m2m["layer_norm"], m2m["embedding_norm"], m2m["logits_bias"]) == ("pre-LN, a final LayerNorm per stack", False, False)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("bart_family")
    return {name: make(root / name, name) for name in ("bart", "mbart50", "marian", "m2m", "bart_untied_scaled")}


def refused(folder: Path, tmp_path: Path, **changes) -> str:
    """load_hf_dir's CheckpointError message for a copy of `folder` whose config.json has `changes`."""
    with pytest.raises(CheckpointError) as e:
        load_hf_dir(copy_folder(folder, tmp_path / "edited", **changes), device="cpu")
    return str(e.value)


@pytest.mark.parametrize(
    ("name", "changes", "names"),
    [
        ("bart", dict(encoder_attention_heads=2), ("encoder_attention_heads", "decoder_attention_heads", "n_heads")),
        ("bart", dict(decoder_ffn_dim=48), ("encoder_ffn_dim", "decoder_ffn_dim", "d_ff")),
        ("bart", dict(activation_function="gelu_fast"), ("activation_function", "gelu_fast")),
        ("bart", dict(normalize_before=True), ("normalize_before",)),  # transformers 3's switches, set for another layout
        ("bart", dict(add_final_layer_norm=True), ("add_final_layer_norm",)),
        ("bart", dict(static_position_embeddings=True), ("static_position_embeddings",)),
        ("bart", dict(extra_pos_embeddings=0), ("extra_pos_embeddings",)),
        ("bart", dict(add_bias_logits=True), ("add_bias_logits",)),
        ("bart", dict(do_blenderbot_90_layernorm=True), ("do_blenderbot_90_layernorm",)),
        ("bart", dict(is_encoder_decoder=False), ("is_encoder_decoder",)),
        ("bart", dict(decoder_layers=0), ("decoder_layers",)),
        ("mbart50", dict(normalize_before=False), ("normalize_before",)),
        ("mbart50", dict(normalize_embedding=False), ("normalize_embedding",)),
        ("marian", dict(share_encoder_decoder_embeddings=False), ("share_encoder_decoder_embeddings",)),
        ("marian", dict(decoder_vocab_size=400), ("decoder_vocab_size", "one vocabulary")),
        ("marian", dict(normalize_embedding=True), ("normalize_embedding",)),
        ("m2m", dict(pad_token_id="<pad>"), ("pad_token_id",)),
        ("m2m", dict(normalize_before=False), ("normalize_before",)),
        ("m2m", dict(quantization_config=dict(quant_method="gptq")), ("quantization_config",)),
    ],
)  # fmt: skip
def test_refusals_name_the_field(folders, tmp_path, name, changes, names):
    message = refused(folders[name], tmp_path, **changes)
    assert all(n in message for n in names), message


def edit_weights(folder: Path, to: Path, edit) -> Path:
    """A copy of `folder` whose model.safetensors went through `edit(tensors)`."""
    copy = copy_folder(folder, to)
    tensors = load_file(copy / "model.safetensors")
    edit(tensors)
    save_file(tensors, copy / "model.safetensors", metadata={"format": "pt"})
    return copy


def test_one_token_embedding(folders, tmp_path):
    """Our model reads one embedding in both stacks and (tied) the head: a file whose copies differ is refused,
    one whose copies agree is read and they are listed as left out."""
    untied = folders["bart_untied_scaled"]
    ckpt = load_hf_dir(untied, device="cpu")
    assert {"model.encoder.embed_tokens.weight", "model.decoder.embed_tokens.weight"} <= set(
        load_file(untied / "model.safetensors")
    )
    assert {"encoder.embed_tokens.weight", "decoder.embed_tokens.weight"} <= set(ckpt.training["ignored"])

    def nudge(t):
        t["model.encoder.embed_tokens.weight"][0, 0] += 1.0

    with pytest.raises(CheckpointError, match="encoder.embed_tokens.weight differs from shared.weight"):
        load_hf_dir(edit_weights(untied, tmp_path / "enc", nudge), device="cpu")

    def own_head(t):
        t["lm_head.weight"] = t["model.shared.weight"] + 1.0

    with pytest.raises(CheckpointError, match="tie_word_embeddings=true, but the file's lm_head.weight differs"):
        load_hf_dir(edit_weights(folders["m2m"], tmp_path / "head", own_head), device="cpu")

    def same_head(t):
        t["lm_head.weight"] = t["model.shared.weight"].clone()

    assert (
        "lm_head.weight"
        in load_hf_dir(edit_weights(folders["m2m"], tmp_path / "same", same_head), device="cpu").training["ignored"]
    )


def test_a_saved_marian_table_must_be_the_sinusoid(folders, tmp_path):
    """Older Marian files hold the sinusoid: transformers would use the file's, so it must be ours (to float rounding)."""
    table = MarianSinusoidalPositionalEmbedding(64, 32).create_weight()

    def saved(t):
        t["model.encoder.embed_positions.weight"] = table.clone()
        t["model.decoder.embed_positions.weight"] = table.clone()

    folder = edit_weights(folders["marian"], tmp_path / "saved", saved)
    assert "encoder.embed_positions.weight" in parity(folder)["ckpt"].training["ignored"]

    def interleaved(t):
        t["model.decoder.embed_positions.weight"] = sinusoidal_table(64, 32, "interleaved")

    with pytest.raises(CheckpointError, match="decoder.embed_positions.weight is not Marian's sinusoid"):
        load_hf_dir(edit_weights(folders["marian"], tmp_path / "wrong", interleaved), device="cpu")
