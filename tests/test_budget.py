"""The memory arithmetic that judges a config before anything is allocated, checked against real models and traces.

`model_bytes` must equal what a built model holds, `trace_bytes` what `Trace.nbytes` reports, and
`light_pass_bytes` must bound what the light pass really allocates; refusals name the config field.
"""

from __future__ import annotations

import itertools
import json

import pytest
import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from transformer.checkpoints import budget as B
from transformer.checkpoints import catalog
from transformer.checkpoints.budget import Budget, BudgetError, check_config, default_budget, max_trace_tokens, trace_bytes
from transformer.checkpoints.format import CheckpointError, expected_shapes, read_header
from transformer.checkpoints.importers import load_hf_dir
from transformer.model.config import ModelConfig
from transformer.model.network import TransformerModel

MiB, GiB = B.MiB, B.GiB
SERVER = default_budget(environ={}, memory=24 * GiB)  # the 24 GiB classroom server
KINDS = ["encoder-decoder", "encoder", "decoder"]


def tiny(kind: str, **overrides) -> ModelConfig:
    fields = dict(kind=kind, vocab_size=50, n_layers=2, n_heads=2, d_model=8, d_ff=12, max_len=40)
    return ModelConfig(**{**fields, **overrides})


# --- the model: weights and position tables ---


@pytest.mark.parametrize(
    ("kind", "positional", "tie", "embed_norm", "final_norm", "n_token_types"),
    list(itertools.product(KINDS, ["sinusoidal", "learned"], [True, False], [True, False], [None, True, False], [0, 2])),
)
def test_model_bytes_counts_every_parameter_and_buffer(kind, positional, tie, embed_norm, final_norm, n_token_types):
    n_classes = 3 if kind == "encoder" and tie else 0
    cfg = tiny(kind, positional=positional, tie_embeddings=tie, embed_norm=embed_norm, final_norm=final_norm,
               n_token_types=n_token_types, n_classes=n_classes)  # fmt: skip
    with torch.device("meta"):
        model = TransformerModel(cfg)
    tensors = [*model.parameters(), *model.buffers()]  # buffers: the non-persistent sinusoidal tables too
    assert B.model_bytes(cfg) == sum(t.numel() * t.element_size() for t in tensors)


def test_model_bytes_of_a_built_model():
    cfg = tiny("encoder-decoder", max_len=300)
    model = TransformerModel(cfg)
    held = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    assert B.model_bytes(cfg) == held
    assert B.model_parts(cfg)["position tables"] == 2 * 300 * 8 * 4  # the encoder's and the decoder's tables


def test_the_meta_device_builds_no_position_table():
    """expected_shapes builds the model on the meta device: a 2 × 244 GiB sinusoidal table costs nothing."""
    cfg = tiny("encoder-decoder", max_len=1_000_000, d_model=65_536, n_heads=1)
    assert B.model_parts(cfg)["position tables"] == 2 * 1_000_000 * 65_536 * 4
    shapes = expected_shapes(cfg)  # would raise (cannot allocate) if the table were built for real
    assert "encoder.embed.pe" not in shapes  # non-persistent: not in the state dict either


# --- a full trace ---


@pytest.mark.parametrize(("kind", "n_classes"), [("encoder-decoder", 0), ("encoder", 0), ("encoder", 3), ("decoder", 0)])
@pytest.mark.parametrize(("n_src", "n_tgt"), [(1, 1), (5, 7), (13, 2), (40, 40)])
def test_trace_bytes_equals_trace_nbytes(kind, n_classes, n_src, n_tgt):
    """Exact, not within a tolerance: trace_bytes counts the tensors Trace.nbytes counts, as it counts them
    (the broadcast mask at full size, an encoder's probs besides its logits)."""
    torch.manual_seed(0)
    cfg = tiny(kind, n_classes=n_classes, norm_first=n_src % 2 == 0)
    model = TransformerModel(cfg).eval()
    src, tgt = torch.randint(0, 50, (1, n_src)), torch.randint(0, 50, (1, n_tgt))
    with torch.inference_mode():
        _, trace = model(src, tgt, trace=True) if kind == "encoder-decoder" else model(src, trace=True)
    expected = trace_bytes(cfg, n_src, n_tgt) if kind == "encoder-decoder" else trace_bytes(cfg, n_src)
    assert expected == trace.nbytes()
    assert sum(B.trace_parts(cfg, n_src, n_tgt).values()) == trace_bytes(cfg, n_src, n_tgt)


def test_a_2048_token_trace_of_6_by_12_heads_is_the_known_2_4_gib():
    cfg = ModelConfig(kind="encoder", vocab_size=1000, n_layers=6, n_heads=12, d_model=384, d_ff=1536, max_len=2048)
    maps = B.trace_parts(cfg, 2048)["attention maps"]
    assert maps == 6 * (2 * 12 * 2048 * 2048 * 4 + 2048 * 2048)  # scores + weights (float32) + the bool mask
    assert 2.3 * GiB < trace_bytes(cfg, 2048) < 2.5 * GiB


# --- max_trace_tokens ---


@pytest.mark.parametrize("kind", KINDS)
def test_max_trace_tokens_is_the_longest_text_that_fits(kind):
    cfg = tiny(kind, max_len=4096, n_heads=4, d_model=64)
    limits = [1, 100_000, 1 * MiB, 10 * MiB, 512 * MiB, 64 * GiB]  # arithmetic only: nothing is allocated
    found = [max_trace_tokens(cfg, Budget(GiB, limit)) for limit in limits]
    assert found == sorted(found)  # monotone in the budget
    assert found[0] == 0  # not even one token fits in one byte
    assert found[-1] == 4096  # capped at max_len
    for limit, n in zip(limits, found, strict=True):
        assert n == 0 or trace_bytes(cfg, n, n) <= limit
        assert n == cfg.max_len or trace_bytes(cfg, n + 1, n + 1) > limit


def test_max_trace_tokens_for_the_benchmark_model_on_the_server():
    """The random 6 × 12, d_model 384 encoder the benchmarks upload: loadable, full traces up to ~900 tokens."""
    cfg = ModelConfig(kind="encoder", vocab_size=1000, n_layers=6, n_heads=12, d_model=384, d_ff=1536, max_len=2048)
    check_config(cfg, SERVER)
    assert 800 < max_trace_tokens(cfg, SERVER) < 1000


# --- the light pass ---


class PeakStorage(TorchDispatchMode):
    """Peak bytes of tensor storage that the ops run under this mode allocate and keep alive at once."""

    def __init__(self, ignore=()):
        super().__init__()
        self.ignore = {StorageWeakRef(t.untyped_storage()).cdata for t in ignore}
        self.live: dict[int, tuple[StorageWeakRef, int]] = {}
        self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                ref = StorageWeakRef(t.untyped_storage())
                if ref.cdata not in self.ignore and ref.cdata not in self.live:
                    self.live[ref.cdata] = (ref, t.untyped_storage().nbytes())
        self.live = {k: v for k, v in self.live.items() if not v[0].expired()}
        self.peak = max(self.peak, sum(n for _, n in self.live.values()))
        return out


@pytest.mark.parametrize(
    ("kind", "vocab", "T", "norm_first"),
    [
        ("decoder", 5000, 1500, True),  # the logits (T × vocab) and the causal mask dominate
        ("decoder", 100, 300, False),
        ("encoder", 100, 2048, True),  # 32 queries per pooling block: 128-query blocks
        ("encoder", 100, 5000, False),  # 79 queries per pooling block: blocks of one pooling row
        ("encoder-decoder", 3000, 700, True),
    ],
)
def test_light_pass_bytes_bounds_what_the_light_pass_allocates(kind, vocab, T, norm_first):
    """Measured op by op (live tensor storage); the estimate is an upper bound and less than 3× loose."""
    torch.manual_seed(0)
    cfg = ModelConfig(kind=kind, vocab_size=vocab, n_layers=2, n_heads=4, d_model=64, d_ff=256, max_len=T,
                      norm_first=norm_first, activation="gelu")  # fmt: skip
    model = TransformerModel(cfg).eval()
    ids = torch.randint(0, vocab, (1, T))
    mode = PeakStorage(ignore=[*model.parameters(), *model.buffers(), ids])
    with torch.inference_mode(), mode:
        model(ids, ids, pool=B.LIGHT_PASS_CELLS) if kind == "encoder-decoder" else model(ids, pool=B.LIGHT_PASS_CELLS)
    estimate = B.light_pass_bytes(cfg, T)
    assert mode.peak <= estimate < 3 * mode.peak, (mode.peak, estimate)


# --- the budget itself ---


@pytest.mark.parametrize(
    ("memory", "model", "trace"),
    [
        (24 * GiB, 1 * GiB, 512 * MiB),  # the classroom server: the caps
        (8 * GiB, 512 * MiB, 256 * MiB),  # 1/16 and 1/32
        (2 * GiB, 256 * MiB, 256 * MiB),  # the floors
        (1024 * GiB, 1 * GiB, 512 * MiB),
    ],
)
def test_default_budget_is_fitted_to_the_machine(memory, model, trace):
    assert default_budget(environ={}, memory=memory) == Budget(model, trace)


def test_default_budget_reads_this_machine():
    budget = default_budget(environ={})
    assert B.MODEL_FLOOR <= budget.model_bytes <= B.MODEL_CAP and B.TRACE_FLOOR <= budget.trace_bytes <= B.TRACE_CAP


def test_environment_overrides():
    env = {B.MODEL_MB_ENV: "2048", B.TRACE_MB_ENV: " 64 "}
    assert default_budget(environ=env, memory=24 * GiB) == Budget(2 * GiB, 64 * MiB)
    assert default_budget(environ={B.MODEL_MB_ENV: ""}, memory=24 * GiB) == SERVER  # empty: the default


@pytest.mark.parametrize("value", ["abc", "0", "-5", "1.5", "1e3", "2 GB", str(B.MAX_ENV_MB + 1)])
@pytest.mark.parametrize("name", [B.MODEL_MB_ENV, B.TRACE_MB_ENV])
def test_a_bad_override_names_the_variable(name, value):
    with pytest.raises(ValueError, match=f"{name}=.*whole number of MiB"):
        default_budget(environ={name: value}, memory=24 * GiB)


def test_budget_refuses_non_positive_sizes():
    with pytest.raises(ValueError, match="Budget.trace_bytes must be a positive number"):
        Budget(GiB, 0)


def test_format_bytes():
    assert [B.format_bytes(n) for n in (12, 2048, 5 * MiB, 3 * GiB // 2, 3 * 1024**4)] == [
        "12 bytes",
        "2.0 KiB",
        "5.0 MiB",
        "1.5 GiB",
        "3.0 TiB",
    ]


# --- what is accepted and what is refused ---

MINILM = ModelConfig(kind="encoder", vocab_size=30522, n_layers=6, n_heads=12, d_model=384, d_ff=1536, max_len=512,
                     positional="learned", n_token_types=2, embed_norm=True, norm_first=False, activation="gelu")  # fmt: skip
BENCHMARK = ModelConfig(kind="encoder", vocab_size=1000, n_layers=6, n_heads=12, d_model=384, d_ff=1536, max_len=2048)


@pytest.mark.parametrize("budget", [SERVER, default_budget(environ={}, memory=2 * GiB)], ids=["server", "floors"])
def test_shipped_minilm_and_benchmark_models_fit(budget):
    configs = [MINILM, BENCHMARK]
    for name in ("translator", "lm", "classifier", "reverse"):  # their configs only: the headers are read, not the weights
        metadata, _ = read_header(catalog.ASSETS / f"{name}.safetensors")
        configs.append(ModelConfig.from_json(metadata["config"]))
    for cfg in configs:
        check_config(cfg, budget)
        assert max_trace_tokens(cfg, budget) >= min(cfg.max_len, B.MIN_TRACE_TOKENS)
    assert max_trace_tokens(MINILM, budget) == 512  # MiniLM's full trace at max_len fits even the floor


def refusal(cfg: ModelConfig, budget: Budget = SERVER) -> BudgetError:
    with pytest.raises(BudgetError) as info:
        check_config(cfg, budget)
    return info.value


def test_a_huge_sinusoidal_table_is_refused_naming_max_len():
    e = refusal(tiny("decoder", d_model=512, n_heads=8, max_len=1_000_000))
    assert e.field == "max_len"
    assert str(e).startswith("config.max_len is 1,000,000: the position tables alone would take 1.9 GiB")
    assert "this server's limit for one model is 1.0 GiB" in str(e)


@pytest.mark.parametrize(
    ("overrides", "field", "fragment"),
    [
        ({"vocab_size": 900_000, "d_model": 512, "n_heads": 8}, "vocab_size", "token embedding and LM head"),
        ({"d_ff": 262_144, "d_model": 1024, "n_heads": 8}, "d_ff", "feed-forward sublayers"),
        ({"d_model": 16_384, "n_heads": 8}, "d_model", "with config.n_layers 2: the attention sublayers and norms"),
        ({"n_classes": 100_000, "d_model": 4096, "n_heads": 8, "vocab_size": 50}, "n_classes", "classification head"),
    ],
)
def test_a_model_over_budget_names_its_largest_part(overrides, field, fragment):
    kind = "encoder" if "n_classes" in overrides else "decoder"
    e = refusal(tiny(kind, tie_embeddings=kind == "encoder", max_len=64, **overrides))
    assert e.field == field and fragment in str(e), str(e)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("max_len", 10**8, "config.max_len is 100,000,000: more than the 1,000,000 this app accepts"),
        ("n_layers", 10**6, "config.n_layers is 1,000,000: more than the 64 this app accepts"),
        ("n_classes", 3.0, "config.n_classes must be a non-negative integer, got 3.0"),
        ("n_token_types", True, "config.n_token_types must be a non-negative integer, got True"),
    ],
)
def test_sanity_caps_come_first(field, value, message):
    cfg = tiny("encoder")
    object.__setattr__(cfg, field, value)  # past ModelConfig's own checks, as a hand-made config could be
    e = refusal(cfg)
    assert e.field == field and str(e) == message


def test_a_model_that_cannot_trace_one_sentence_is_refused():
    small = Budget(GiB, 64 * MiB)
    e = refusal(tiny("decoder", vocab_size=200_000, max_len=512), small)
    assert e.field == "vocab_size" and "a full trace of only 64 tokens would take" in str(e) and "logits and probs" in str(e)
    e = refusal(tiny("encoder", n_heads=1024, d_model=1024, n_layers=8, d_ff=16, max_len=512), small)
    assert e.field == "n_heads" and "with config.n_layers 8" in str(e) and "attention maps" in str(e)


def test_a_text_of_max_len_tokens_must_fit_the_light_pass():
    """A long max_len with tiny weights: the model fits, a full trace is cut, but the light pass at max_len must fit."""
    e = refusal(tiny("decoder", max_len=100_000))  # the causal mask alone: 100 000² bytes
    assert e.field == "max_len" and "even the light pass over a text of that length" in str(e)
    check_config(tiny("decoder", max_len=8192), SERVER)  # a 64 MiB causal mask: fine


def test_hf_import_judges_the_config_before_reading_the_weights(make_checkpoint, tmp_path):
    """model.safetensors here is garbage: the budget refusal must come before anything reads it."""
    folder = tmp_path / "huge-bert"
    folder.mkdir()
    tok = make_checkpoint("encoder").tokenizer
    (folder / "tokenizer.json").write_text(tok.to_json())
    hf = {"model_type": "bert", "architectures": ["BertModel"], "vocab_size": tok.vocab_size, "num_hidden_layers": 2,
          "num_attention_heads": 2, "hidden_size": 16, "intermediate_size": 32, "max_position_embeddings": 900_000}  # fmt: skip
    (folder / "config.json").write_text(json.dumps(hf))
    (folder / "model.safetensors").write_bytes(b"not read")
    with pytest.raises(CheckpointError, match=r"config\.json: config\.max_len is 900,000: even the light pass"):
        load_hf_dir(folder, device="cpu", budget=SERVER)
