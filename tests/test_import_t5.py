"""T5 and mT5 folders imported into our model: parity with `transformers`, greedy translation, the position bias, refusals.

Each folder is a tiny `transformers` model with random weights saved by `save_pretrained`, with a tokenizer.json
trained here (T5's specials: <pad>=0, </s>=1, <unk>=2, "$A </s>"); nothing is downloaded. `verify.compare` runs
transformers' own class (eager attention, float32) on the folder with a target text and returns the largest
difference of every layer's encoder self, decoder self and cross weights and of the next-token probabilities.
transformers 5 saves a T5 with its head tied (no lm_head.weight); a v1.1 / Flan-T5 file from transformers 4 has
its own head and tie_word_embeddings false, and `untied` writes one like it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import transformers
from hf_reference import CORPUS, TEXTS, edit_config, randomise
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, processors, trainers

from transformer import CheckpointError
from transformer.api import attention_maps, greedy_decode, pool_trace, streams, trace_text
from transformer.checkpoints.importers import load_hf_dir
from transformer.checkpoints.importers import t5 as t5_family
from transformer.checkpoints.verify import compare
from transformer.model.network import TransformerModel

pytestmark = pytest.mark.numerics

# float32 rounding only; measured at most 1e-6, exactly 0 for most (the same float32 operations in the same order):
# printed by each test, `pytest -s`
TOL = 1e-4


def t5_tokenizer(vocab_size: int = 160) -> HFTokenizer:
    """A sentencepiece-style BPE (▁ marks a word's start) with T5's specials and template, trained on CORPUS."""
    tok = HFTokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<pad>", "</s>", "<unk>"], show_progress=False)
    tok.train_from_iterator(CORPUS, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return tok


TOK = t5_tokenizer()
SIZES = dict(
    vocab_size=TOK.get_vocab_size(), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4, layer_norm_epsilon=1e-5,
    decoder_start_token_id=0, eos_token_id=1, pad_token_id=0,  # as every released T5 config says
)  # fmt: skip
T5, MT5 = transformers.T5ForConditionalGeneration, transformers.MT5ForConditionalGeneration
SOURCES = TEXTS + ("grandma bakes bread every sunday ; the street smells of it !",)
TARGETS = ("the dog runs in the park", "a cat sat", "attention is a weighted sum of values by query key similarity")
# 31 source tokens, 31 decoder tokens: distances past a max_distance of 16
LONG_SOURCE = TEXTS[0] + " ; the street smells of it !"
LONG_TARGET = CORPUS[1] + " because " + CORPUS[0] + " ; the street smells of it !"


def build(cls=T5, **fields) -> torch.nn.Module:
    torch.manual_seed(0)
    return cls(cls.config_class(**{**SIZES, **fields})).eval()


def make(path: Path, cls=T5, seed: int = 1, **fields) -> Path:
    """A random-weight `cls` with SIZES overridden by `fields`, saved into `path` with TOK (head tied: no lm_head)."""
    model = build(cls, **fields)
    randomise(model, seed)
    model.save_pretrained(path)
    TOK.save(str(path / "tokenizer.json"))
    return path


def edit_weights(folder: Path, **tensors: torch.Tensor) -> Path:
    """Add or replace tensors of model.safetensors (a name's dots written as __)."""
    path = folder / "model.safetensors"
    state = load_file(path)
    state.update({name.replace("__", "."): t for name, t in tensors.items()})
    save_file(state, path, metadata={"format": "pt"})
    return folder


def untied(folder: Path, seed: int = 2, **config) -> Path:
    """Give `folder` its own lm_head.weight and the stacks' embed_tokens copies, with config.json as a transformers-4
    v1.1 file has it (tie_word_embeddings false: no d_model^-0.5 before the head) updated with `config`."""
    shared = load_file(folder / "model.safetensors")["shared.weight"]
    head = torch.randn(shared.shape, generator=torch.Generator().manual_seed(seed))
    edit_weights(
        folder, lm_head__weight=head, encoder__embed_tokens__weight=shared.clone(), decoder__embed_tokens__weight=shared.clone()
    )
    return edit_config(folder, **{"tie_word_embeddings": False, "scale_decoder_outputs": None, **config})


def parity(folder: Path, sources=SOURCES, targets=TARGETS) -> dict:
    ckpt = load_hf_dir(folder, device="cpu")
    result = compare(folder, ckpt, tuple(sources), tuple(targets))
    att, out = result["max_attention_diff"], result["max_output_diff"]
    print(f"{folder.name}: attention {att:.2e}, output {out:.2e}, {result['tokens']} tokens")
    assert att <= TOL and out <= TOL, f"attention {att:.2e}, output {out:.2e} > TOL {TOL}"
    return {"ckpt": ckpt, "attention": att, "output": out}


# name -> (class, config fields, None for a tied head or config.json changes that go with the file's own head,
#          what our config must say about it)
CASES = {
    # v1.0: relu, the head tied to shared and its input scaled; a decoder deeper than the encoder
    "t5_v1_0": (
        T5,
        dict(num_decoder_layers=3),
        None,
        dict(mlp="plain", activation="relu", n_layers=2, dec_layers=3, head_scale=32**-0.5),
    ),
    # v1.1 / Flan-T5 from transformers 4: gated-gelu (gelu_new), its own head, no scaling; a shallower decoder
    "t5_v1_1": (
        T5,
        dict(feed_forward_proj="gated-gelu", num_decoder_layers=1),
        {},
        dict(mlp="gated", activation="gelu_tanh", dec_layers=1, head_scale=1.0),
    ),
    # heads wider than d_model / num_heads (t5-11b's shape), gated silu, and a v1.1 file saved again by
    # transformers 5: tie_word_embeddings true beside scale_decoder_outputs false and the file's own head
    "t5_wide_heads_silu": (
        T5,
        dict(d_kv=16, feed_forward_proj="gated-silu"),
        dict(tie_word_embeddings=True, scale_decoder_outputs=False),
        dict(head_dim=16, d_head=16, mlp="gated", activation="silu", head_scale=1.0),
    ),
    # transformers 5's unscaled tied head: no lm_head in the file
    "t5_tied_unscaled": (T5, dict(tie_word_embeddings=False), None, dict(head_scale=1.0, mlp="plain")),
    # the bare model: no head in the file, transformers' generation class ties it to shared
    "t5_model": (transformers.T5Model, dict(), None, dict(head_scale=32**-0.5)),
    # mT5: gated-gelu by default, its own head, never scaled
    "mt5": (MT5, dict(), {}, dict(mlp="gated", activation="gelu_tanh", head_scale=1.0)),
}


@pytest.mark.parametrize("name", CASES)
def test_matches_transformers(tmp_path, name):
    cls, fields, head_config, expect = CASES[name]
    folder = make(tmp_path / name, cls, **fields)
    if head_config is not None:
        untied(folder, **head_config)
    ckpt = parity(folder)["ckpt"]
    cfg = ckpt.config
    assert {key: getattr(cfg, key) for key in expect} == expect
    assert (cfg.kind, cfg.positional, cfg.norm, cfg.scale_scores, cfg.rel_buckets, cfg.rel_max_distance) == (
        "encoder-decoder", "relative", "rms", False, 32, 128,
    )  # fmt: skip
    assert cfg.layer_norm_eps == 1e-5 and not (cfg.attn_bias or cfg.attn_out_bias or cfg.mlp_bias)
    state = load_file(folder / "model.safetensors")
    if head_config is None:  # no lm_head.weight in the file: loaded tied, the head is the embedding itself
        assert cfg.tie_embeddings and torch.equal(ckpt.model.tok_embed.weight, state["shared.weight"])
    else:
        assert not cfg.tie_embeddings and torch.equal(ckpt.model.lm_head.weight, state["lm_head.weight"])
    if head_config is not None:
        assert set(ckpt.training["ignored"]) == {"decoder.embed_tokens.weight", "encoder.embed_tokens.weight"}


def test_the_released_t5_configs_architecture_name(tmp_path):
    """t5-small … t5-3b's config.json still name transformers 2's class, T5WithLMHeadModel (T5ForConditionalGeneration)."""
    folder = edit_config(make(tmp_path / "t5_2x"), architectures=["T5WithLMHeadModel"], scale_decoder_outputs=None)
    ckpt = parity(folder)["ckpt"]
    assert ckpt.training["architecture"] == "T5WithLMHeadModel" and ckpt.config.head_scale == 32**-0.5


def test_few_buckets_on_long_texts(tmp_path):
    """8 buckets up to distance 16, on a 31-token source and target: the exact, logarithmic and last buckets (every
    distance past 16) are all used, in both directions in the encoder and backwards in the decoder."""
    folder = make(tmp_path / "t5_buckets", relative_attention_num_buckets=8, relative_attention_max_distance=16)
    source, target = streams(load_hf_dir(folder, device="cpu"), LONG_SOURCE, LONG_TARGET)
    assert len(source.ids) == len(target.ids) == 31
    cfg = parity(folder, (LONG_SOURCE,), (LONG_TARGET,))["ckpt"].config
    assert (cfg.rel_buckets, cfg.rel_max_distance) == (8, 16)


@pytest.fixture(scope="module")
def v1_0(tmp_path_factory):
    return make(tmp_path_factory.mktemp("t5") / "t5_v1_0", relative_attention_num_buckets=8, relative_attention_max_distance=16)


@torch.inference_mode()
def test_scores_are_q_k_plus_the_bias_transformers_computes(v1_0):
    """Every head's traced scores are q·k (unscaled) + the traced bias; the bias is block 0's compute_bias of each
    stack (the encoder's looking both ways, the decoder's back), the same in every layer; cross-attention has none."""
    ckpt = load_hf_dir(v1_0, device="cpu")
    ref = T5.from_pretrained(v1_0, dtype=torch.float32).eval()
    trace = trace_text(ckpt, LONG_SOURCE, LONG_TARGET)
    n_src, n_tgt = len(trace.source.ids), len(trace.target.ids)
    expected = {
        "encoder self": ref.encoder.block[0].layer[0].SelfAttention.compute_bias(n_src, n_src)[0],
        "decoder self": ref.decoder.block[0].layer[0].SelfAttention.compute_bias(n_tgt, n_tgt)[0],
    }
    assert not torch.equal(expected["decoder self"], expected["decoder self"].transpose(1, 2))  # the decoder's buckets: one way
    worst = 0.0
    for kind, bias in expected.items():
        for layer in range(trace.n_layers(kind)):
            for h in range(ckpt.config.n_heads):
                head = trace.head(kind, layer, h)
                assert torch.equal(head["bias"], bias[h])
                worst = max(worst, float((head["q"] @ head["k"].T + head["bias"] - head["scores"]).abs().max()))
    print(f"scores vs q·k + bias: {worst:.2e}")
    assert worst <= 1e-5
    assert all(trace.attention("cross", layer).bias is None for layer in range(trace.n_layers("cross")))


def test_the_model_view_maps_include_the_bias(v1_0):
    """The model view's pooled pass (its own attention loop) equals the pooled full trace on every T5 kind."""
    ckpt = load_hf_dir(v1_0, device="cpu")
    maps = attention_maps(ckpt, LONG_SOURCE, LONG_TARGET, max_cells=8)
    pooled = pool_trace(trace_text(ckpt, LONG_SOURCE, LONG_TARGET), max_cells=8)
    assert set(maps.maps) == {"encoder self", "decoder self", "cross"}
    for kind, m in maps.maps.items():
        assert m.shape == pooled.maps[kind].shape and float((m - pooled.maps[kind]).abs().max()) <= 1e-6, kind


def test_greedy_translation_equals_generate(tmp_path):
    """Our greedy decoding and transformers' generate(num_beams=1) agree token for token. Random weights: the tied
    relu model runs to max_new_tokens on every text; the gated model's </s> head row is made 1.5× longer so that
    two texts stop at </s> (after 9 and 4 tokens) and one runs on."""
    gated = untied(make(tmp_path / "gated", feed_forward_proj="gated-gelu"))
    head = load_file(gated / "model.safetensors")["lm_head.weight"]
    head[1] *= 1.5
    edit_weights(gated, lm_head__weight=head)
    ends = []
    for folder in (make(tmp_path / "relu"), gated):
        ckpt = load_hf_dir(folder, device="cpu")
        ref = T5.from_pretrained(folder, dtype=torch.float32).eval()
        for text in SOURCES:
            src = list(ckpt.tokenizer.encode(text).ids)
            ours = greedy_decode(ckpt.model, src, ckpt.decoding, max_new_tokens=12)
            theirs = ref.generate(torch.tensor([src]), num_beams=1, do_sample=False, max_new_tokens=12)[0].tolist()
            stopped = theirs[-1] == 1
            assert theirs[0] == ckpt.decoding.start == 0
            assert ours == theirs[1 : -1 if stopped else None], (folder.name, text, ours, theirs)
            assert len(ours) > 3, (folder.name, text, theirs)
            ends.append((folder.name, len(ours), stopped))
            _, target = streams(ckpt, text, max_new_tokens=12)  # the app's stream: the start token, then ours
            assert list(target.ids) == [0, *ours]
    print(ends)
    assert ends == [("relu", 12, False)] * 3 + [("gated", 9, True), ("gated", 4, True), ("gated", 12, False)]


def test_decoding_settings_from_the_folder(v1_0, tmp_path):
    """generation_config.json's ids, or without one T5's: start with <pad> (0), stop at </s> (1)."""
    decoding = load_hf_dir(v1_0, device="cpu").decoding
    assert (decoding.start, decoding.eos, decoding.prefix, decoding.max_length) == (0, (1,), (0,), 21)
    assert decoding.default_length  # no max_length in the folder: generate's default of 20 new tokens
    bare = tmp_path / "bare"
    bare.mkdir()
    for f in v1_0.iterdir():
        if f.name != "generation_config.json":
            (bare / f.name).write_bytes(f.read_bytes())
    edit_config(bare, decoder_start_token_id=None, eos_token_id=None, pad_token_id=None)
    decoding = load_hf_dir(bare, device="cpu").decoding
    assert (decoding.start, decoding.eos) == (0, (1,))


@torch.inference_mode()
def test_a_long_source_is_cut_and_an_empty_target_reads_the_start_token(tmp_path):
    """n_positions 16 (T5 ignores it; for us the most a text is read): the source keeps its first 15 tokens and
    </s>, and the decoder given "" reads its start token alone; both equal transformers on those ids."""
    folder = make(tmp_path / "t5_short", n_positions=16)
    ckpt = load_hf_dir(folder, device="cpu")
    assert ckpt.config.max_len == 16
    trace = trace_text(ckpt, LONG_SOURCE, "")
    full = TOK.encode(LONG_SOURCE).ids
    assert trace.source.truncated == len(full) - 16 and list(trace.source.ids) == [*full[:15], 1]
    assert list(trace.target.ids) == [0]
    ref = T5.from_pretrained(folder, dtype=torch.float32).eval()
    out = ref(input_ids=torch.tensor([trace.source.ids]), decoder_input_ids=torch.tensor([[0]]))
    diff = float((trace.probs - out.logits.softmax(-1)).abs().max())
    print(f"cut source, empty target: output {diff:.2e}")
    assert trace.probs.shape == (1, 1, SIZES["vocab_size"]) and diff <= TOL
    assert parity(folder, (LONG_SOURCE,), ("",))["output"] <= TOL


def test_parity_is_not_vacuous(v1_0):
    """The same weights with one T5 choice undone are far from transformers: q·k scaled by 1/√d_head, the decoder's
    buckets looking both ways, or the head's input left unscaled."""
    ckpt = load_hf_dir(v1_0, device="cpu")
    for change in (dict(scale_scores=True), dict(head_scale=1.0)):
        cfg = dataclasses.replace(ckpt.config, **change)
        broken = dataclasses.replace(ckpt, model=TransformerModel.from_weights(cfg, ckpt.model.state_dict()).eval())
        result = compare(v1_0, broken, SOURCES, TARGETS)
        print(f"{change}: attention {result['max_attention_diff']:.2e}, output {result['max_output_diff']:.2e}")
        assert max(result["max_attention_diff"], result["max_output_diff"]) > 1e-2
    ckpt.model.decoder.rel_bias.bidirectional = True
    result = compare(v1_0, ckpt, (LONG_SOURCE,), (LONG_TARGET,))
    print(f"bidirectional decoder buckets: attention {result['max_attention_diff']:.2e}")
    assert result["max_attention_diff"] > 1e-2


def test_facts(tmp_path):
    v1_0 = load_hf_dir(make(tmp_path / "v1_0"), device="cpu").training
    assert (v1_0["model_type"], v1_0["architecture"], v1_0["feed_forward"], v1_0["scaled_head"]) == (
        "t5", "T5ForConditionalGeneration", "relu", True,
    )  # fmt: skip
    assert (v1_0["relative_buckets"], v1_0["relative_max_distance"]) == (32, 128)
    assert v1_0["context"] == "any length (relative positions); the app reads at most 512 tokens"
    v1_1 = load_hf_dir(untied(make(tmp_path / "v1_1", feed_forward_proj="gated-gelu")), device="cpu").training
    assert (v1_1["feed_forward"], v1_1["scaled_head"]) == ("gated gelu_new", False)


# --- config.json fields and transformers' reading of them ---


MINIMAL = dict(vocab_size=300, d_model=64, num_heads=4)


@pytest.mark.parametrize(
    ("cls", "fields"),
    [
        (transformers.T5Config, {}),
        (transformers.T5Config, dict(num_decoder_layers=3, d_kv=32, feed_forward_proj="gated-gelu", tie_word_embeddings=False)),
        (transformers.T5Config, dict(feed_forward_proj="gelu", tie_word_embeddings=True)),  # plain gelu: the exact one
        (transformers.T5Config, dict(feed_forward_proj="gated-silu", scale_decoder_outputs=True, tie_word_embeddings=False)),
        # a saved dense_act_fn / is_gated_act wins over feed_forward_proj, as T5Config reads them
        (transformers.T5Config, dict(feed_forward_proj="gated-gelu", dense_act_fn="relu", is_gated_act=False)),
        (transformers.MT5Config, {}),
        (transformers.MT5Config, dict(feed_forward_proj="relu", tie_word_embeddings=True)),
    ],
)  # fmt: skip
def test_config_as_transformers_reads_it(cls, fields):
    """A config.json that leaves fields out means transformers' defaults; a field means what the model class makes of it."""
    hf = {"model_type": cls.model_type, **MINIMAL, **fields}
    ours, theirs = t5_family.config(hf), cls.from_dict(hf)
    assert (ours["n_layers"], ours["n_decoder_layers"]) == (theirs.num_layers, theirs.num_decoder_layers)
    assert (ours["head_dim"] or ours["d_model"] // ours["n_heads"]) == theirs.d_kv
    assert (ours["d_ff"], ours["layer_norm_eps"]) == (theirs.d_ff, theirs.layer_norm_epsilon)
    assert (ours["rel_buckets"], ours["rel_max_distance"]) == (
        theirs.relative_attention_num_buckets, theirs.relative_attention_max_distance,
    )  # fmt: skip
    assert (ours["mlp"] == "gated") == theirs.is_gated_act
    assert ours["activation"] == {"relu": "relu", "gelu": "gelu", "gelu_new": "gelu_tanh", "silu": "silu"}[theirs.dense_act_fn]
    scaled = getattr(theirs, "scale_decoder_outputs", False)  # MT5ForConditionalGeneration never scales
    assert ours["head_scale"] == (theirs.d_model**-0.5 if scaled else 1.0)


GENERATION_KEYS = ("decoder_start_token_id", "bos_token_id", "eos_token_id", "pad_token_id", "forced_bos_token_id",
                   "forced_eos_token_id")  # fmt: skip


@pytest.mark.parametrize(("family", "cls"), [(t5_family.FAMILY, transformers.T5Config), (t5_family.MT5, transformers.MT5Config)])
def test_generation_ids_default_to_the_config_class(family, cls):
    """The ids a config.json leaves out: the config class's, but T5Config has no decoder_start_token_id (its generate
    would refuse to start) where T5 starts with <pad>, as MT5Config says and every released T5 config writes."""
    theirs = {k: getattr(cls(), k, None) for k in GENERATION_KEYS}
    if cls is transformers.T5Config:
        assert theirs["decoder_start_token_id"] is None
        theirs["decoder_start_token_id"] = theirs["pad_token_id"]
    assert {k: family.generation.get(k) for k in GENERATION_KEYS} == theirs


# --- refusals ---


def refused(folder: Path, tmp_path: Path, config: dict | None = None, **tensors: torch.Tensor) -> str:
    """load_hf_dir's CheckpointError message for a copy of `folder` with config.json `config` and `tensors` changed."""
    copy = tmp_path / "edited"
    copy.mkdir()
    for f in folder.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    edit_config(copy, **(config or {}))
    if tensors:
        edit_weights(copy, **tensors)
    with pytest.raises(CheckpointError) as e:
        load_hf_dir(copy, device="cpu")
    return str(e.value)


@pytest.mark.parametrize(
    ("changes", "names"),
    [
        (dict(feed_forward_proj="gated-quick_gelu", dense_act_fn=None), ("feed_forward_proj", "gated-quick_gelu")),
        (dict(feed_forward_proj="tanh", dense_act_fn=None), ("feed_forward_proj", "tanh")),
        (dict(feed_forward_proj="relu-gated", dense_act_fn=None), ("feed_forward_proj", "relu-gated")),
        (dict(num_decoder_layers=3), ("decoder.block.2", "missing")),
        (dict(relative_attention_num_buckets=16), ("relative_attention_bias", "shape")),
        (dict(architectures=["T5ForSequenceClassification"]), ("architectures", "T5ForSequenceClassification")),
        (dict(architectures=["T5EncoderModel"]), ("architectures", "T5EncoderModel")),  # no decoder, no head
    ],
    ids=["gated_quick_gelu", "tanh", "malformed", "decoder_layers", "buckets", "classifier", "encoder_only"],
)
def test_refusals_name_the_field(v1_0, tmp_path, changes, names):
    message = refused(v1_0, tmp_path, changes)
    assert all(n in message for n in names), message


def test_a_stack_embedding_that_differs_from_shared_is_refused(v1_0, tmp_path):
    """transformers keeps a differing encoder.embed_tokens for the encoder alone; we have one embedding."""
    shared = load_file(v1_0 / "model.safetensors")["shared.weight"]
    message = refused(v1_0, tmp_path, encoder__embed_tokens__weight=shared + 0.01)
    assert "encoder.embed_tokens.weight differs from shared.weight" in message, message


def test_a_tied_scaled_head_whose_file_holds_another_is_refused(v1_0, tmp_path):
    """v1.0's config (head tied, input scaled) beside a different lm_head.weight: transformers 4 read shared.weight,
    transformers 5 reads the file's head; which one the author meant is not ours to guess."""
    head = load_file(v1_0 / "model.safetensors")["shared.weight"] + 0.01
    message = refused(v1_0, tmp_path, lm_head__weight=head)
    assert "lm_head.weight differs" in message and "tie_word_embeddings" in message, message


def test_a_relative_bias_outside_block_0_is_refused(v1_0, tmp_path):
    """T5 reads only block 0's table; one in another block is another network's (UMT5: one per layer)."""
    message = refused(
        v1_0, tmp_path, encoder__block__1__layer__0__SelfAttention__relative_attention_bias__weight=torch.zeros(8, 4)
    )
    assert "unexpected weight" in message and "encoder.block.1.layer.0.SelfAttention.relative_attention_bias" in message
