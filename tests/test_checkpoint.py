"""Checkpoints: a bit-exact round trip, atomic saves, and a specific CheckpointError for every broken file.

Nothing a user can point the app at may run code: pickles are refused, whatever their suffix.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
import safetensors.torch
import torch
from safetensors import safe_open

import transformer.checkpoints.format as checkpoint_module
from transformer.checkpoints.budget import Budget
from transformer.checkpoints.format import FORMAT, CheckpointError, load_checkpoint, read_checkpoint_parts, save_checkpoint

ROOT = Path(__file__).resolve().parent.parent
TRAINING = {"steps": 120, "final_loss": 0.4375, "data": {"seed": 3, "tasks": ["copy", "reverse"]}}


@pytest.fixture
def saved(make_checkpoint, tmp_path):
    """(path, Checkpoint) of a tiny encoder-decoder saved to disk."""
    ckpt = make_checkpoint("encoder-decoder", seed=1)
    return save_checkpoint(tmp_path / "tiny.safetensors", ckpt.model, ckpt.tokenizer, TRAINING), ckpt


def read_raw(path) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    with safe_open(str(path), framework="pt") as f:
        return f.metadata(), {k: f.get_tensor(k) for k in f.keys()}


def rewrite(path, tensors=None, metadata=None, out=None):
    """Write a tampered copy of a saved checkpoint (to `out`, default: in place)."""
    meta, weights = read_raw(path)
    safetensors.torch.save_file(
        weights if tensors is None else tensors, str(out or path), metadata=meta if metadata is None else metadata
    )
    return out or path


def refused(path, *fragments: str) -> str:
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path, device="cpu")
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return message


@pytest.mark.parametrize(
    ("kind", "overrides"),
    [
        ("encoder-decoder", {}),
        ("encoder", {"n_classes": 3, "class_names": ("neg", "neu", "pos"), "positional": "learned", "n_token_types": 2}),
        ("decoder", {"tie_embeddings": False, "norm_first": False, "activation": "gelu_tanh", "embed_norm": True}),
    ],
)
def test_round_trip_is_bit_exact(make_checkpoint, tmp_path, kind, overrides):
    ckpt = make_checkpoint(kind, seed=2, **overrides)
    path = save_checkpoint(tmp_path / "sub" / "model.safetensors", ckpt.model, ckpt.tokenizer, TRAINING)
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.safetensors"]  # no temp file left behind
    loaded = load_checkpoint(path, device="cpu")
    assert loaded.config == ckpt.config
    assert loaded.tokenizer.to_json() == ckpt.tokenizer.to_json()
    assert loaded.training == TRAINING
    assert loaded.name == "model"
    expected, actual = ckpt.model.state_dict(), loaded.model.state_dict()
    assert list(actual) == list(expected)
    for name, tensor in expected.items():
        assert torch.equal(actual[name], tensor), name
    assert not loaded.model.training
    assert not any(p.requires_grad for p in loaded.model.parameters())
    assert loaded.model.device == torch.device("cpu")


def test_metadata_holds_config_tokenizer_and_training(saved):
    path, ckpt = saved
    meta, _ = read_raw(path)
    assert meta["format"] == FORMAT
    assert json.loads(meta["config"])["kind"] == "encoder-decoder"
    assert json.loads(meta["training"]) == TRAINING
    config, tokenizer, training, tensors = read_checkpoint_parts(path)
    assert config == ckpt.config and training == TRAINING and tokenizer.vocab_size == ckpt.tokenizer.vocab_size
    assert set(tensors) == set(ckpt.model.state_dict())


# --- files that are not checkpoints at all ---


def test_random_bytes_are_not_a_safetensors_file(tmp_path):
    path = tmp_path / "noise.safetensors"
    path.write_bytes(random.Random(0).randbytes(4096))
    refused(path, "noise.safetensors is not a safetensors file", "no valid header")


def test_a_text_file_is_not_a_safetensors_file(tmp_path):
    path = tmp_path / "notes.safetensors"
    path.write_text("hello, this is a README that somebody renamed\n" * 20)
    refused(path, "is not a safetensors file", "no valid header")


def test_an_empty_file_is_not_a_safetensors_file(tmp_path):
    path = tmp_path / "empty.safetensors"
    path.write_bytes(b"")
    refused(path, "empty.safetensors is not a safetensors file (only 0 bytes)")


def test_a_missing_file_is_reported(tmp_path):
    refused(tmp_path / "nowhere.safetensors", "no checkpoint file at", "nowhere.safetensors")


def test_a_truncated_download_is_refused(saved, tmp_path):
    path, _ = saved
    data = path.read_bytes()
    cut_data = tmp_path / "cut_data.safetensors"
    cut_data.write_bytes(data[: len(data) // 2])  # the header survives, the tensors do not
    refused(cut_data, "cut_data.safetensors is not a valid safetensors file")
    cut_header = tmp_path / "cut_header.safetensors"
    cut_header.write_bytes(data[:100])  # the header claims more bytes than the file has
    refused(cut_header, "is not a safetensors file", "truncated download")


# --- safetensors files with the wrong contents ---


def test_missing_metadata_is_named(saved, tmp_path):
    path, _ = saved
    bare = rewrite(path, metadata={"format": FORMAT}, out=tmp_path / "bare.safetensors")
    refused(bare, "bare.safetensors: metadata missing 'config', 'tokenizer', 'training'")
    _, weights = read_raw(path)
    none = tmp_path / "none.safetensors"
    safetensors.torch.save_file(weights, str(none))  # no metadata at all
    refused(none, "metadata missing 'format', 'config', 'tokenizer', 'training'", "not a checkpoint of this project")


def test_unknown_format_is_refused(saved):
    path, _ = saved
    meta, _ = read_raw(path)
    refused(rewrite(path, metadata={**meta, "format": "other-tool/7"}), "unknown checkpoint format 'other-tool/7'")


@pytest.mark.parametrize(
    ("config", "fragments"),
    [
        ('{"kind": "encoder-decoder", ', ["bad config", "config is not valid JSON"]),
        ("[1, 2, 3]", ["bad config", "config must be a JSON object, got list"]),
        ('{"kind": "encoder-decoder", "n_heads": 3}', ["bad config", "d_model (16) must be divisible by n_heads (3)"]),
        ('{"kind": "encoder-decoder", "n_experts": 8}', ["bad config", "unknown config field(s): n_experts"]),
        ('{"kind": "translator"}', ["bad config", "kind must be one of"]),
    ],
)
def test_bad_config_is_refused(saved, config, fragments):
    path, ckpt = saved
    meta, _ = read_raw(path)
    if config.startswith('{"kind": "encoder-decoder", "'):  # keep the rest of the real config
        config = json.dumps({**json.loads(ckpt.config.to_json()), **json.loads(config)})
    refused(rewrite(path, metadata={**meta, "config": config}), *fragments)


def test_bad_tokenizer_and_training_metadata_are_refused(saved, tmp_path):
    path, _ = saved
    meta, _ = read_raw(path)
    refused(rewrite(path, metadata={**meta, "tokenizer": "{oops"}, out=tmp_path / "t.safetensors"), "bad tokenizer")
    refused(
        rewrite(path, metadata={**meta, "training": "{oops"}, out=tmp_path / "j.safetensors"),
        "training metadata is not valid JSON",
    )
    small = json.dumps({**json.loads(meta["config"]), "vocab_size": 50})
    refused(
        rewrite(path, metadata={**meta, "config": small}, out=tmp_path / "v.safetensors"),
        "tokenizer has 120 tokens, config.vocab_size is 50",
    )


def test_shape_mismatch_names_the_weight_and_both_shapes(make_checkpoint, tmp_path):
    ckpt = make_checkpoint("encoder-decoder", d_model=64, d_ff=64)
    path = save_checkpoint(tmp_path / "wide.safetensors", ckpt.model, ckpt.tokenizer)
    _, weights = read_raw(path)
    weights["encoder.layers.0.self_attn.q_proj.weight"] = torch.zeros(64, 32)
    refused(
        rewrite(path, tensors=weights),
        "wide.safetensors: shape of encoder.layers.0.self_attn.q_proj.weight is (64, 32), config says (64, 64)",
    )


def test_missing_and_unexpected_weights_are_named(saved, tmp_path):
    path, _ = saved
    _, weights = read_raw(path)
    fewer = {k: v for k, v in weights.items() if k != "decoder.layers.1.cross_attn.out_proj.bias"}
    refused(
        rewrite(path, tensors=fewer, out=tmp_path / "fewer.safetensors"),
        "missing weight(s) decoder.layers.1.cross_attn.out_proj.bias",
    )
    more = {**weights, "decoder.layers.2.self_attn.q_proj.weight": torch.zeros(16, 16)}
    refused(
        rewrite(path, tensors=more, out=tmp_path / "more.safetensors"),
        "unexpected weight(s) decoder.layers.2.self_attn.q_proj.weight",
    )


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused(saved, bad):
    path, _ = saved
    _, weights = read_raw(path)
    weights["decoder.layers.0.feed_forward.up.weight"][3, 5] = bad
    refused(rewrite(path, tensors=weights), "decoder.layers.0.feed_forward.up.weight contains NaN or infinite values")


def test_integer_weights_are_refused(saved):
    path, _ = saved
    _, weights = read_raw(path)
    weights["tok_embed.weight"] = torch.ones_like(weights["tok_embed.weight"], dtype=torch.int64)
    refused(rewrite(path, tensors=weights), "tok_embed.weight has dtype torch.int64, expected a floating-point tensor")


def test_half_precision_weights_load_as_float32(saved):
    path, ckpt = saved
    _, weights = read_raw(path)
    loaded = load_checkpoint(rewrite(path, tensors={k: v.half() for k, v in weights.items()}), device="cpu")
    for name, tensor in ckpt.model.state_dict().items():
        assert loaded.model.state_dict()[name].dtype == torch.float32
        assert torch.equal(loaded.model.state_dict()[name], tensor.half().float())


# --- legacy .pt / .bin files ---


def legacy_dict(ckpt, config_as_dict: bool) -> dict:
    config = json.loads(ckpt.config.to_json()) if config_as_dict else ckpt.config.to_json()
    return {"config": config, "tokenizer": ckpt.tokenizer.to_json(), "training": TRAINING, "state_dict": ckpt.model.state_dict()}


@pytest.mark.parametrize("suffix", [".pt", ".bin"])
@pytest.mark.parametrize("config_as_dict", [True, False])
def test_legacy_plain_dict_is_accepted(make_checkpoint, tmp_path, suffix, config_as_dict):
    ckpt = make_checkpoint("decoder", seed=4)
    path = tmp_path / f"old{suffix}"
    torch.save(legacy_dict(ckpt, config_as_dict), path)
    loaded = load_checkpoint(path, device="cpu")
    assert loaded.config == ckpt.config and loaded.training == TRAINING
    for name, tensor in ckpt.model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[name], tensor)


def test_legacy_file_without_state_dict_is_refused(tmp_path):
    path = tmp_path / "list.pt"
    torch.save([torch.zeros(2)], path)
    refused(path, "list.pt: a legacy checkpoint must be a dict with a 'state_dict' entry")


class Payload:
    """Unpickling this calls open(marker, "w"): code running at load time, which creates a file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def write_pickle(how: str, obj, path) -> None:
    if how == "torch.save":
        torch.save(obj, path)  # a zip archive with data.pkl inside
    else:
        with open(path, "wb") as f:
            pickle.dump(obj, f)  # a bare pickle stream


@pytest.mark.parametrize("how", ["torch.save", "pickle.dump"])
def test_the_payload_really_runs_code_when_unpickled(tmp_path, how):
    """Guard for the test below: the payload does create its marker when loaded the unsafe way."""
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    write_pickle(how, {"state_dict": {}, "config": Payload(marker)}, path)
    if how == "torch.save":
        torch.load(path, weights_only=False)
    else:
        with open(path, "rb") as f:
            pickle.load(f)
    assert marker.exists()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # torch's note on pickle.dump's protocol 4
@pytest.mark.parametrize("suffix", [".pt", ".bin", ".safetensors"])
@pytest.mark.parametrize("how", ["torch.save", "pickle.dump"])
@pytest.mark.parametrize("wrapped", [False, True], ids=["bare", "in-checkpoint-dict"])
def test_code_in_a_pickle_is_refused_without_running(make_checkpoint, tmp_path, suffix, how, wrapped):
    marker = tmp_path / "pwned"
    obj = Payload(marker)
    if wrapped:  # hidden in an otherwise valid legacy checkpoint
        obj = {**legacy_dict(make_checkpoint("decoder"), True), "training": Payload(marker)}
    path = tmp_path / f"model{suffix}"
    write_pickle(how, obj, path)
    if suffix == ".safetensors":
        message = refused(path, "model.safetensors is not a safetensors file")
    else:
        message = refused(path, f"model{suffix} was refused", "it may contain code")
    assert not marker.exists(), f"loading ran the payload ({message})"
    with pytest.raises(CheckpointError):
        read_checkpoint_parts(path)
    assert not marker.exists()


# --- atomic saves ---


def test_a_failed_save_leaves_the_earlier_file_intact(saved, make_checkpoint, monkeypatch):
    path, _ = saved
    before = path.read_bytes()

    def half_written(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(before[: len(before) // 3])  # part of a file, then the disk fills up
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint_module, "save_file", half_written)
    other = make_checkpoint("encoder-decoder", seed=9)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(path, other.model, other.tokenizer, {"steps": 1})
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # the temp file is gone too
    assert load_checkpoint(path, device="cpu").training == TRAINING


def test_saving_again_replaces_the_file(saved, make_checkpoint):
    path, _ = saved
    other = make_checkpoint("encoder-decoder", seed=9)
    save_checkpoint(path, other.model, other.tokenizer, {"steps": 1})
    loaded = load_checkpoint(path, device="cpu")
    assert loaded.training == {"steps": 1}
    assert torch.equal(loaded.model.tok_embed.weight, other.model.tok_embed.weight)
    assert [p.name for p in path.parent.iterdir()] == [path.name]


# --- configs judged before anything is allocated ---

HOSTILE_LOAD = """
import resource, sys
from transformer.checkpoints.format import CheckpointError, load_checkpoint
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    load_checkpoint(sys.argv[1], device="cpu")
    print("loaded")
except CheckpointError as e:
    print(e)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)  # peak growth in MiB (ru_maxrss: KiB)
"""


def with_config(path, out, **changes):
    """A copy of a saved checkpoint, same weights, whose config says `changes`."""
    meta, _ = read_raw(path)
    return rewrite(path, metadata={**meta, "config": json.dumps({**json.loads(meta["config"]), **changes})}, out=out)


@pytest.fixture
def wide(make_checkpoint, tmp_path):
    """A ~1.3 MB decoder (d_model 256, one layer) saved to disk: real weights for hostile configs to claim."""
    ckpt = make_checkpoint("decoder", n_layers=1, n_heads=4, d_model=256, d_ff=64)
    return save_checkpoint(tmp_path / "wide.safetensors", ckpt.model, ckpt.tokenizer, TRAINING)


@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss is in KiB on Linux")
def test_a_small_file_claiming_a_huge_position_table_allocates_nothing(wide, tmp_path):
    """1 MB of weights, a config whose sinusoidal table would be 1 GB: refused, and the process never grew.

    Run in a fresh process so its peak RSS says what loading allocated: building that model would
    add > 1 GiB (the table and the sin/cos temporaries that fill it).
    """
    path = with_config(wide, tmp_path / "hostile.safetensors", max_len=1_000_000)
    assert path.stat().st_size < 2_000_000
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ATTNVIZ_MAX_MODEL_MB": "256"}
    done = subprocess.run([sys.executable, "-c", HOSTILE_LOAD, str(path)], capture_output=True, text=True, env=env, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    message, grown = done.stdout.strip().splitlines()
    assert message.startswith("hostile.safetensors: config.max_len is 1,000,000: the position tables alone would take 976.6 MiB")
    assert "this server's limit for one model is 256.0 MiB" in message
    assert int(grown) < 200, f"loading grew the process by {grown} MiB"


def test_the_budget_is_judged_before_reading_or_building(wide, tmp_path, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("called before the config was judged")

    monkeypatch.setattr(checkpoint_module, "read_tensors", forbidden)
    monkeypatch.setattr(checkpoint_module, "expected_shapes", forbidden)  # not even a meta-device model
    refused(with_config(wide, tmp_path / "a.safetensors", max_len=10**8), "config.max_len is 100,000,000: more than")
    refused(with_config(wide, tmp_path / "b.safetensors", d_model=65_536), "config.d_model is 65,536 with config.n_layers 1")
    refused(
        with_config(wide, tmp_path / "c.safetensors", vocab_size=900_000, tie_embeddings=False), "config.vocab_size is 900,000"
    )


def test_a_header_that_disagrees_with_the_config_is_refused_before_the_data_is_read(wide, tmp_path, monkeypatch):
    monkeypatch.setattr(checkpoint_module, "read_tensors", lambda path, judged: pytest.fail("tensor data was read"))
    refused(
        with_config(wide, tmp_path / "d.safetensors", d_ff=128),
        "d.safetensors: shape of decoder.layers.0.feed_forward.up.weight is (64, 256), config says (128, 256)",
    )
    refused(with_config(wide, tmp_path / "n.safetensors", n_layers=2), "missing weight(s) decoder.layers.1.")


def test_an_unknown_header_dtype_is_refused(saved):
    path, _ = saved
    _, weights = read_raw(path)
    weights["tok_embed.weight"] = weights["tok_embed.weight"].to(torch.float8_e4m3fn)
    refused(rewrite(path, tensors=weights), "tok_embed.weight has dtype F8_E4M3, expected a floating-point tensor")


def test_a_legacy_file_is_judged_before_the_model_is_built(make_checkpoint, tmp_path, monkeypatch):
    ckpt = make_checkpoint("decoder", seed=4)
    path = tmp_path / "old.pt"
    torch.save({**legacy_dict(ckpt, True), "config": {**json.loads(ckpt.config.to_json()), "max_len": 10**6}}, path)
    monkeypatch.setattr(checkpoint_module, "TransformerModel", lambda cfg: pytest.fail("a model was built"))
    with pytest.raises(CheckpointError, match=r"old\.pt: config\.max_len is 1,000,000: the position tables"):
        load_checkpoint(path, device="cpu", budget=Budget(32 * 1024**2, 512 * 1024**2))


def test_an_explicit_budget_is_used(saved):
    path, _ = saved
    with pytest.raises(CheckpointError, match="this server's limit for one model is 1.0 KiB"):
        load_checkpoint(path, device="cpu", budget=Budget(1024, 512 * 1024**2))


# --- files replaced while they are read (a training run renames a new one over the old one) ---

REWRITER = """
import sys, time, torch
from transformer.checkpoints.format import atomic_save_file
versions = [({"w": torch.full((n, 8), float(n))}, {"format": "x", "n": str(n), "pad": "p" * n}) for n in (100, 133)]
for i in range(10**9):
    atomic_save_file(versions[i % 2][0], sys.argv[1], versions[i % 2][1])
    time.sleep(0.005)
"""


def test_a_file_renamed_over_again_and_again_is_always_read_whole(tmp_path):
    """Another process replaces the file up to 200 times a second, alternating two sizes; every read gets one version.

    Before reads were checked, about 1 read in 100 here mixed one version's header with the other's
    tensors, or failed on the other's size (seen in CI as a training-state file "smaller than the
    required mapping size").
    """
    path = tmp_path / "r.safetensors"
    checkpoint_module.atomic_save_file({"w": torch.full((100, 8), 100.0)}, path, {"format": "x", "n": "100"})
    first = path.stat().st_ino
    writer = subprocess.Popen([sys.executable, "-c", REWRITER, str(path)], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        deadline = time.monotonic() + 60
        while path.stat().st_ino == first and time.monotonic() < deadline:  # the writer has started
            time.sleep(0.01)
        seen, switches = [100], 0
        while switches < 100 and time.monotonic() < deadline:  # about 0.5 s on an idle machine
            metadata, tensors = checkpoint_module.read_safetensors(path)
            n = int(metadata["n"])
            assert tensors["w"].shape == (n, 8) and bool((tensors["w"] == n).all()), f"a read mixed two versions: {n=}"
            switches += n != seen[-1]
            seen.append(n)
        assert writer.poll() is None, "the writer stopped"
    finally:
        writer.kill()
        writer.wait()
    assert switches >= 100, f"{len(seen) - 1} reads saw the file replaced only {switches} times: too few to tell"


def test_a_file_replaced_between_its_header_and_its_tensors_is_read_again(saved, make_checkpoint, monkeypatch):
    path, _ = saved
    other = make_checkpoint("encoder-decoder", seed=9)
    newer = save_checkpoint(path.with_name("newer.safetensors"), other.model, other.tokenizer, {"steps": 1})
    original, calls = checkpoint_module.read_tensors, []

    def replaced_first(p, judged):
        calls.append(p)
        if len(calls) == 1:
            os.replace(newer, path)  # a training run's rename, after the header was read
        return original(p, judged)

    monkeypatch.setattr(checkpoint_module, "read_tensors", replaced_first)
    loaded = load_checkpoint(path, device="cpu")
    assert loaded.training == {"steps": 1} and len(calls) == 2
    assert torch.equal(loaded.model.tok_embed.weight, other.model.tok_embed.weight)


def test_a_file_replaced_after_judging_by_one_over_the_budget_is_judged_again(wide, tmp_path, monkeypatch):
    """The swap cannot smuggle a model past the budget: the new file is judged before any of its data is read."""
    hostile = with_config(wide, tmp_path / "hostile.safetensors", max_len=10**8)
    original, calls = checkpoint_module.read_tensors, []

    def swapped(p, judged):
        calls.append(p)
        os.replace(hostile, wide)
        return original(p, judged)

    monkeypatch.setattr(checkpoint_module, "read_tensors", swapped)
    refused(wide, "wide.safetensors: config.max_len is 100,000,000: more than")
    assert len(calls) == 1


def test_a_file_that_never_stops_changing_gets_a_clear_message(saved, monkeypatch):
    path, ckpt = saved
    original = checkpoint_module.read_tensors

    def rewritten(p, judged):
        save_checkpoint(path, ckpt.model, ckpt.tokenizer, TRAINING)
        return original(p, judged)

    monkeypatch.setattr(checkpoint_module, "read_tensors", rewritten)
    refused(path, "tiny.safetensors kept changing while it was read (8 tries); is something still writing it?")


def test_a_header_read_does_not_fail_on_a_file_replaced_by_another_size(saved, tmp_path, monkeypatch):
    """safetensors maps a file's data through a second open by name; a rename in between is read again, not refused."""
    path, _ = saved
    small = rewrite(path, metadata={**read_raw(path)[0], "training": "{}"}, out=tmp_path / "small.safetensors")
    original, calls = checkpoint_module.safe_open, []

    def renamed_in_between(name, **kwargs):
        calls.append(name)
        if len(calls) == 1:
            os.replace(small, path)
        return original(name, **kwargs)

    monkeypatch.setattr(checkpoint_module, "safe_open", renamed_in_between)
    metadata, _ = checkpoint_module.read_header(path)
    assert metadata["training"] == "{}" and len(calls) == 2
