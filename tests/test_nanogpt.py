"""nanoGPT checkpoints: a ckpt.pt saved as nanoGPT saves it, read into our model, against nanoGPT's own forward.

The reference is a copy of nanoGPT's GPT written here from its description (LayerNorm with an optional
bias, CausalSelfAttention with c_attn/c_proj, MLP with c_fc/GELU/c_proj, pre-LN blocks, wte/wpe/h/ln_f,
an LM head tied to wte), with random weights; its state dict is saved in nanoGPT's checkpoint dict
(model_args, model, iter_num, best_val_loss, config, optimizer) with torch.save, its character
vocabulary in a meta.pkl written by pickle.dump of a plain dict. Bad files are refused, and code in a
pickle never runs.
"""

from __future__ import annotations

import math
import os
import pickle
import shutil

import pytest
import torch
import torch.nn.functional as F
from numerics import assert_close, assert_same_bits, longest_sum, sublayers
from torch import nn

from transformer import CheckpointError, load_checkpoint, trace_text
from transformer.checkpoints.budget import Budget
from transformer.checkpoints.importers import kind_of, load_any
from transformer.checkpoints.importers.nanogpt import load_nanogpt
from transformer.convert import main as convert_main

pytestmark = pytest.mark.numerics

TEXT = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak! Why?\n"
CHARS = sorted(set(TEXT))


# --- nanoGPT's model, as its model.py describes it ----------------------------------------------------------------


class LayerNorm(nn.Module):
    def __init__(self, ndim: int, bias: bool):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None

    def forward(self, x):
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5)


class CausalSelfAttention(nn.Module):
    def __init__(self, d: int, n_head: int, block_size: int, bias: bool, mask_buffer: bool):
        super().__init__()
        self.c_attn = nn.Linear(d, 3 * d, bias=bias)  # q | k | v
        self.c_proj = nn.Linear(d, d, bias=bias)
        self.n_head = n_head
        if mask_buffer:  # nanoGPT keeps this buffer when it cannot use the flash path
            self.register_buffer("bias", torch.tril(torch.ones(block_size, block_size)).view(1, 1, block_size, block_size))

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))  # (B, nh, T, hs)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))  # (B, nh, T, T)
        att = att.masked_fill(torch.tril(torch.ones(T, T, dtype=torch.bool)).logical_not(), float("-inf"))
        y = F.softmax(att, dim=-1) @ v  # (B, nh, T, hs)
        return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))


class MLP(nn.Module):
    def __init__(self, d: int, bias: bool):
        super().__init__()
        self.c_fc = nn.Linear(d, 4 * d, bias=bias)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * d, d, bias=bias)

    def forward(self, x):
        return self.c_proj(self.gelu(self.c_fc(x)))


class Block(nn.Module):
    def __init__(self, d, n_head, block_size, bias, mask_buffer):
        super().__init__()
        self.ln_1 = LayerNorm(d, bias)
        self.attn = CausalSelfAttention(d, n_head, block_size, bias, mask_buffer)
        self.ln_2 = LayerNorm(d, bias)
        self.mlp = MLP(d, bias)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, n_layer, n_head, n_embd, block_size, vocab_size, bias, mask_buffer=False, **_):
        super().__init__()
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(vocab_size, n_embd),
                wpe=nn.Embedding(block_size, n_embd),
                h=nn.ModuleList(Block(n_embd, n_head, block_size, bias, mask_buffer) for _ in range(n_layer)),
                ln_f=LayerNorm(n_embd, bias),
            )
        )
        self.lm_head = nn.Linear(n_embd, vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight  # weight tying

    def forward(self, idx):
        pos = torch.arange(idx.shape[1])
        x = self.transformer.wte(idx) + self.transformer.wpe(pos)
        for block in self.transformer.h:
            x = block(x)
        return self.lm_head(self.transformer.ln_f(x))  # (B, T, vocab)


# --- writing checkpoints as nanoGPT does ---------------------------------------------------------------------------


def model_args(bias: bool = True, **changes) -> dict:
    return dict(n_layer=2, n_head=4, n_embd=32, block_size=128, bias=bias, vocab_size=len(CHARS), dropout=0.0) | changes


def make_gpt(args: dict, seed: int = 0, mask_buffer: bool = False) -> GPT:
    torch.manual_seed(seed)
    gpt = GPT(**args, mask_buffer=mask_buffer).eval()
    with torch.no_grad():  # off the init, LayerNorm gains and biases too, so a swapped or dropped tensor shows
        for p in gpt.parameters():
            p.add_(torch.randn(p.shape) * 0.2)
    return gpt


def write_meta(folder, chars=CHARS, **changes) -> None:
    meta = {"vocab_size": len(chars), "itos": dict(enumerate(chars)), "stoi": {c: i for i, c in enumerate(chars)}} | changes
    with open(folder / "meta.pkl", "wb") as f:
        pickle.dump(meta, f)


def write_ckpt(folder, gpt: GPT, args: dict, compiled: bool = False, legacy: bool = False, **extra) -> None:
    """torch.save of the dict nanoGPT's train.py saves (after one AdamW step, so the optimizer state is real)."""
    optimizer = torch.optim.AdamW(gpt.parameters(), lr=1e-9)
    gpt(torch.tensor([[0, 1, 2]])).sum().backward()
    optimizer.step()
    optimizer.zero_grad()
    state = gpt.state_dict()
    if compiled:  # torch.compile's wrapper module
        state = {f"_orig_mod.{k}": v for k, v in state.items()}
    ckpt = {
        "model": state,
        "optimizer": optimizer.state_dict(),
        "model_args": args,
        "iter_num": 250,
        "best_val_loss": torch.tensor(1.4697),
        "config": {"dataset": "shakespeare_char", "batch_size": 12, "compile": compiled, "dtype": "float32"},
    } | extra
    torch.save(ckpt, folder / "ckpt.pt", _use_new_zipfile_serialization=not legacy)


@pytest.fixture
def out_dir(tmp_path):
    """A nanoGPT out_dir: ckpt.pt of a random bias=True model with its meta.pkl; returns (folder, reference GPT)."""
    folder = tmp_path / "out-shakespeare-char"
    folder.mkdir()
    gpt = make_gpt(model_args())
    write_ckpt(folder, gpt, model_args())
    write_meta(folder)
    return folder, gpt


def reference_logits(gpt: GPT, ids) -> torch.Tensor:
    with torch.no_grad():
        return gpt(torch.tensor([list(ids)]))[0]


def assert_matches(ckpt, gpt: GPT, text: str = TEXT) -> None:
    """Our logits and next-token probabilities against nanoGPT's forward on the same ids, within float32 rounding."""
    trace = trace_text(ckpt, text)
    ids = trace.source.ids
    assert list(ids) == [CHARS.index(c) for c in text], "one token per character, nanoGPT's ids"
    ref = reference_logits(gpt, ids)
    terms, depth = longest_sum(ckpt.config, len(ids)), sublayers(ckpt.config, head=True)
    assert_close(trace.logits[0], ref, terms=terms, depth=depth, why="logits against nanoGPT's forward")
    assert_close(trace.probs[0], ref.softmax(-1), terms=terms, depth=depth, why="probabilities against nanoGPT's forward")


# --- the model and its vocabulary -----------------------------------------------------------------------------------


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("compiled", [False, True], ids=["plain", "compiled"])
def test_a_nanogpt_checkpoint_computes_what_nanogpt_computes(tmp_path, bias, compiled):
    args = model_args(bias)
    gpt = make_gpt(args, seed=1, mask_buffer=not compiled)  # the causal-mask buffer is in the state dict, and ignored
    write_ckpt(tmp_path, gpt, args, compiled=compiled)
    write_meta(tmp_path)
    ckpt = load_nanogpt(tmp_path, device="cpu")
    cfg = ckpt.config
    assert (cfg.kind, cfg.n_layers, cfg.n_heads, cfg.d_model, cfg.d_ff, cfg.max_len) == ("decoder", 2, 4, 32, 128, 128)
    assert (cfg.norm_bias, cfg.attn_bias, cfg.attn_out_bias, cfg.mlp_bias) == (bias,) * 4
    assert any(n.endswith(".bias") for n in ckpt.model.state_dict()) == bias
    assert ckpt.training == {
        "source": "nanogpt",
        "iter_num": 250,
        "best_val_loss": pytest.approx(1.4697),
        "vocabulary": "characters (meta.pkl)",
        "unknown characters": f"characters outside its {len(CHARS)}-character vocabulary are read as '?'",
        "dataset": "shakespeare_char",
    }
    assert_matches(ckpt, gpt)


def test_the_ckpt_file_itself_and_load_any_open_it_too(out_dir):
    folder, gpt = out_dir
    assert kind_of(folder) == kind_of(folder / "ckpt.pt") == "nanogpt"
    for path in (folder, folder / "ckpt.pt"):
        ckpt = load_any(path, device="cpu")
        assert ckpt.name == "out-shakespeare-char"
        assert_matches(ckpt, gpt)


def test_a_ckpt_in_torchs_legacy_format_loads_too(tmp_path):
    """Read memory-mapped when it can be (torch's zip format), whole when it cannot (the legacy one): the same model."""
    gpt = make_gpt(model_args(), seed=2)
    write_ckpt(tmp_path, gpt, model_args(), legacy=True)
    write_meta(tmp_path)
    with pytest.raises(RuntimeError, match="mmap"):
        torch.load(tmp_path / "ckpt.pt", weights_only=True, mmap=True)
    assert_matches(load_nanogpt(tmp_path, device="cpu"), gpt)


def test_characters_outside_the_vocabulary_are_read_as_the_placeholder(out_dir):
    ckpt = load_nanogpt(out_dir[0], device="cpu")
    text = "Speak 🙂👍🏽, Привет, 東京!\n"
    stream = ckpt.tokenizer.encode(text)
    assert len(stream.ids) == len(text)  # one token per character (code point), newline included
    for ch, token, (start, stop) in zip(text, stream.tokens, stream.offsets, strict=True):
        assert token == (ch if ch in CHARS else "?") and text[start:stop] == ch
    assert ckpt.tokenizer.decode(stream.ids) == "".join(c if c in CHARS else "?" for c in text)
    assert ckpt.tokenizer.decode(ckpt.tokenizer.encode(TEXT).ids) == TEXT  # no spaces added between characters
    trace = trace_text(ckpt, text)  # the model reads it without trouble
    assert trace.probs.shape == (1, len(text), len(CHARS)) and bool(torch.isfinite(trace.probs).all())


def test_without_a_question_mark_the_placeholder_is_a_space(tmp_path):
    chars = [c for c in CHARS if c != "?"]
    args = model_args(vocab_size=len(chars))
    write_ckpt(tmp_path, make_gpt(args), args)
    write_meta(tmp_path, chars)
    ckpt = load_nanogpt(tmp_path, device="cpu")
    assert ckpt.tokenizer.encode("a?é").tokens == ("a", " ", " ")
    assert ckpt.training["unknown characters"].endswith("are read as ' '")


def test_a_tokenizer_json_beside_it_is_the_vocabulary(tmp_path):
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import models, pre_tokenizers

    inner = HFTokenizer(models.WordLevel({w: i for i, w in enumerate(["[UNK]", "the", "cat", "sat"])}, unk_token="[UNK]"))
    inner.pre_tokenizer = pre_tokenizers.Whitespace()
    inner.save(str(tmp_path / "tokenizer.json"))
    args = model_args(vocab_size=8)  # nanoGPT pads the vocabulary (50304 for GPT-2's 50257): more rows than tokens is fine
    gpt = make_gpt(args)
    write_ckpt(tmp_path, gpt, args)
    ckpt = load_nanogpt(tmp_path, device="cpu")
    assert ckpt.training["vocabulary"] == "tokenizer.json" and "unknown characters" not in ckpt.training
    trace = trace_text(ckpt, "the cat sat")
    assert trace.source.ids == (1, 2, 3)
    ref = reference_logits(gpt, trace.source.ids)
    assert_close(trace.logits[0], ref, terms=longest_sum(ckpt.config, 3), depth=sublayers(ckpt.config, True), why="logits")


def test_convert_writes_the_same_model(out_dir, tmp_path, capsys):
    folder, gpt = out_dir
    out = tmp_path / "converted.safetensors"
    assert convert_main([str(folder / "ckpt.pt"), str(out)]) == 0
    assert "nanoGPT at iteration 250" in capsys.readouterr().out
    converted, direct = load_checkpoint(out, device="cpu"), load_nanogpt(folder, device="cpu")
    assert converted.config == direct.config and converted.training == direct.training
    assert converted.tokenizer.to_json() == direct.tokenizer.to_json()
    for name, t in direct.model.state_dict().items():
        assert_same_bits(converted.model.state_dict()[name], t, why=f"{name}: the converted file against the import")
    assert converted.tokenizer.encode("héllo").tokens == ("h", "?", "l", "l", "o")
    assert_matches(converted, gpt)
    assert convert_main([str(out), str(tmp_path / "again.safetensors")]) == 2  # already ours: nothing to convert


# --- refusals ------------------------------------------------------------------------------------------------------


class Hostile:
    """Unpickling this runs a shell command that creates `path`: proof that code ran."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def test_the_hostile_payload_really_runs_when_unpickled_plainly(tmp_path):
    """The payload below is live: plain pickle.loads runs it (so the refusal test proves something)."""
    marker = tmp_path / "ran"
    pickle.loads(pickle.dumps({"itos": Hostile(str(marker))}))
    assert marker.exists()


def test_a_meta_pkl_holding_a_global_is_refused_and_nothing_runs(out_dir, tmp_path):
    folder, _ = out_dir
    marker = tmp_path / "code-ran"
    (folder / "meta.pkl").write_bytes(pickle.dumps({"vocab_size": 3, "itos": Hostile(str(marker))}))
    with pytest.raises(
        CheckpointError, match=r"meta\.pkl holds a Python object \((posix|os|nt)\.system\): refused, nothing was run"
    ):
        load_nanogpt(folder, device="cpu")
    assert not marker.exists()
    # A global that would not even run code is refused the same way: nothing but plain data comes out.
    (folder / "meta.pkl").write_bytes(pickle.dumps({"itos": {0: "a"}, "extra": torch.Size([1])}))
    with pytest.raises(CheckpointError, match=r"meta\.pkl holds a Python object \(torch\.Size\)"):
        load_nanogpt(folder, device="cpu")


@pytest.mark.parametrize(
    ("meta", "message"),
    [
        ({"vocab_size": 3, "itos": {0: "a", 1: "b", 2: "c"}, "stoi": {"a": 0, "b": 2, "c": 1}}, r"'stoi' is not the inverse"),
        ({"itos": {0: "ab", 1: "c"}}, r"id 0 is 'ab', not one character"),
        ({"itos": {0: "a", 2: "c"}}, r"ids of 'itos' must be 0 to 1"),
        ({"itos": {0: "a", 1: "a"}}, r"same character to two ids"),
        ({"vocab_size": 5, "itos": {0: "a"}}, r"vocab_size is 5, but 'itos' has 1"),
        ({"vocab_size": 50257}, r"neither 'itos' nor 'stoi'.*tokenizer\.json"),
        ({"itos": {0: b"a"}}, r"holds a bytes"),
        ({"itos": {0: "a"}, "s": {1, 2}}, r"holds a set"),
    ],
)
def test_a_bad_character_vocabulary_is_refused(out_dir, meta, message):
    folder, _ = out_dir
    (folder / "meta.pkl").write_bytes(pickle.dumps(meta))
    with pytest.raises(CheckpointError, match=message):
        load_nanogpt(folder, device="cpu")


def test_a_large_or_broken_meta_pkl_is_refused(out_dir):
    folder, _ = out_dir
    (folder / "meta.pkl").write_bytes(pickle.dumps({"itos": dict(enumerate(CHARS))})[:-5])
    with pytest.raises(CheckpointError, match=r"meta\.pkl is not a readable pickle"):
        load_nanogpt(folder, device="cpu")
    (folder / "meta.pkl").write_bytes(b"\x80\x04" + b"x" * 10_000_001)
    with pytest.raises(CheckpointError, match=r"too large for a character vocabulary"):
        load_nanogpt(folder, device="cpu")


def test_a_ckpt_with_a_pickled_class_is_refused_and_nothing_runs(out_dir, tmp_path):
    folder, gpt = out_dir
    marker = tmp_path / "code-ran"
    torch.save({"model_args": model_args(), "model": gpt.state_dict(), "config": Hostile(str(marker))}, folder / "ckpt.pt")
    with pytest.raises(CheckpointError, match=r"ckpt\.pt was refused: torch\.load\(weights_only=True\) does not accept it"):
        load_nanogpt(folder, device="cpu")
    assert not marker.exists()


def test_no_vocabulary_is_refused_before_the_checkpoint_is_read(out_dir, monkeypatch):
    folder, _ = out_dir
    (folder / "meta.pkl").unlink()
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("the checkpoint was read"))
    with pytest.raises(CheckpointError, match=r"no vocabulary beside ckpt\.pt.*meta\.pkl.*tokenizer\.json"):
        load_nanogpt(folder, device="cpu")


def resave(folder, change) -> None:
    obj = torch.load(folder / "ckpt.pt", weights_only=True)
    change(obj)
    torch.save(obj, folder / "ckpt.pt")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda o: o["model_args"].update(n_embd=48), r"transformer\.wte\.weight has shape \(\d+, 32\), but model_args \(.*n_embd=48.*\) imply \(\d+, 48\)"),
        (lambda o: o["model_args"].update(n_layer=3), r"missing weight 'transformer\.h\.2\.attn\.c_attn\.weight' \(needed for our decoder\.layers\.2\.self_attn\.q_proj\.weight\)"),
        (lambda o: o["model_args"].update(bias=False), r"unexpected weight\(s\) transformer\.h\.0\.attn\.c_attn\.bias"),
        (lambda o: o["model_args"].update(n_head=5), r"model_args cannot describe a working model: d_model \(32\) must be divisible"),
        (lambda o: o["model_args"].update(block_size=0), r"model_args\['block_size'\] must be a positive integer"),
        (lambda o: o["model_args"].update(rotary=True), r"model_args has field\(s\) nanoGPT's GPT does not: rotary"),
        (lambda o: o.pop("model_args"), r"not a nanoGPT checkpoint: expected a dict with 'model_args' and 'model'"),
        (lambda o: o["model"].update({"transformer.extra": [1, 2]}), r"model entry 'transformer\.extra' is a list, not a named tensor"),
        (lambda o: o["model"]["transformer.h.1.mlp.c_fc.weight"].fill_(float("nan")), r"contains NaN"),
        (lambda o: o["model"].update({"transformer.h.0.attn.c_attn.weight": torch.zeros(96, 32, dtype=torch.int32)}), r"dtype torch\.int32"),
    ],
    ids=["n_embd", "n_layer", "bias", "n_head", "block_size", "unknown-arg", "no-model_args", "non-tensor", "nan", "int"],
)  # fmt: skip
def test_a_checkpoint_that_does_not_fit_its_model_args_is_refused(out_dir, change, message):
    folder, _ = out_dir
    resave(folder, change)
    with pytest.raises(CheckpointError, match=message):
        load_nanogpt(folder, device="cpu")


def test_an_untied_lm_head_is_read_as_its_own_weight(out_dir):
    """nanoGPT ties the LM head to wte; a copy that was trained apart (a modified nanoGPT) keeps its own head."""
    folder, gpt = out_dir
    gpt.lm_head.weight = nn.Parameter(gpt.transformer.wte.weight.detach().clone() + 0.5)
    write_ckpt(folder, gpt, model_args())
    ckpt = load_nanogpt(folder, device="cpu")
    assert not ckpt.config.tie_embeddings
    assert_matches(ckpt, gpt)


def test_a_model_too_large_for_the_budget_is_refused_before_it_is_built(out_dir, monkeypatch):
    folder, _ = out_dir
    resave(folder, lambda o: o["model_args"].update(block_size=100_000))  # wpe would be (100000, 32): the state dict disagrees
    import transformer.checkpoints.importers.nanogpt as nanogpt

    monkeypatch.setattr(nanogpt, "TransformerModel", lambda *a: pytest.fail("a model was built"))
    with pytest.raises(CheckpointError, match=r"ckpt\.pt \(model_args\): config\.max_len"):
        load_nanogpt(folder, device="cpu", budget=Budget(model_bytes=64 * 1024**2, trace_bytes=64 * 1024**2))


def test_a_missing_ckpt_is_named(tmp_path):
    with pytest.raises(CheckpointError, match=r"no ckpt\.pt"):
        load_nanogpt(tmp_path / "ckpt.pt", device="cpu")
    shutil.rmtree(tmp_path)
