"""The trainer on tiny tasks: schedule, reproducibility, bit-exact resume, atomic writes, snapshots, progress, DDP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from numerics import assert_close, assert_same_bits

from transformer import ModelConfig, api, load_checkpoint, train_tokenizer
from transformer.checkpoints.format import read_checkpoint_parts, save_checkpoint
from transformer.checkpoints.snapshots import load_snapshots, save_snapshots
from transformer.data.tasks import TASKS, get_task
from transformer.train import TrainConfig, lr_at, snapshot_steps, train
from transformer.train.cli import main as cli_main
from transformer.train.metrics import greedy_decode_batch, verb_logprobs
from transformer.train.state import load_train_state

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.numerics


def tiny(tmp_path: Path, **kw) -> TrainConfig:
    fields = dict(
        task="copy",
        out=str(tmp_path / "m.safetensors"),
        d_model=16,
        n_layers=1,
        n_heads=2,
        d_ff=32,
        max_len=16,
        vocab_size=40,
        steps=12,
        batch_size=8,
        lr=3e-3,
        warmup=3,
        n_train=200,
        n_eval=16,
        eval_every=5,
        progress=False,
        threads=1,
        data=json.dumps({"max_len": 5}),
    )
    fields.update(kw)
    return TrainConfig(**fields)


def weights(path) -> dict[str, torch.Tensor]:
    return read_checkpoint_parts(path)[3]


def test_lr_warms_up_then_decays_to_the_floor():
    cfg = TrainConfig(task="copy", out="x", steps=100, warmup=10, lr=1e-3, min_lr_ratio=0.1)
    lrs = [lr_at(cfg, s) for s in range(100)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert all(a < b for a, b in zip(lrs[:10], lrs[1:10]))  # warm-up rises
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))  # decay never rises
    assert lrs[55] == pytest.approx(1e-4 + 0.9e-3 * 0.5 * (1 + torch.cos(torch.tensor(torch.pi * 45 / 90)).item()))
    assert lr_at(cfg, 100) == pytest.approx(1e-4)
    linear = TrainConfig(task="copy", out="x", steps=100, warmup=10, lr=1e-3, decay="linear", min_lr_ratio=0.0)
    assert lr_at(linear, 55) == pytest.approx(0.5e-3)


def test_snapshot_schedule_starts_at_zero_and_ends_at_the_last_step():
    steps = snapshot_steps(2000, 9)
    assert steps == (0, 16, 31, 62, 125, 250, 500, 1000, 2000)
    short = snapshot_steps(10, 8)  # doubling would repeat steps: fall back to even spacing
    assert len(short) == 8 and short[0] == 0 and short[-1] == 10 and len(set(short)) == 8


@pytest.mark.parametrize("name", sorted(TASKS))
def test_every_task_trains_and_writes_a_loadable_checkpoint(tmp_path, name):
    data = {"lm": {"max_sentences": 2}, "translation": {}, "agreement": {}}.get(name, {"max_len": 4})
    cfg = tiny(tmp_path, task=name, steps=3, n_train=60, n_eval=8, max_len=48, vocab_size=120, data=json.dumps(data))
    info = train(cfg)
    ckpt = load_checkpoint(cfg.out, device="cpu")
    assert ckpt.config.kind == get_task(name).kind
    assert info["task"] == name and info["steps"] == 3 and info["data_seed"] == 0
    assert ckpt.training["metrics"] == info["metrics"] and ckpt.training["wall_time_s"] > 0
    if name == "agreement":
        assert ckpt.config.class_names == ("violated", "agrees") and "accuracy_attractor" in info["metrics"]
    elif name == "lm":
        assert 0.0 <= info["metrics"]["agreement"] <= 1.0
    else:
        assert 0.0 <= info["metrics"]["exact_match"] <= 1.0


def test_same_seed_same_weights_other_seed_other_weights(tmp_path):
    a, b, c = (tiny(tmp_path / d, seed=s) for d, s in (("a", 1), ("b", 1), ("c", 2)))
    for cfg in (a, b, c):
        train(cfg)
    wa, wb, wc = weights(a.out), weights(b.out), weights(c.out)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not all(torch.equal(wa[k], wc[k]) for k in wa)


def test_resume_after_a_stop_is_bit_exact(tmp_path):
    whole = tiny(tmp_path / "whole", steps=20, n_snapshots=5)
    train(whole)
    part = tiny(tmp_path / "part", steps=20, n_snapshots=5, stop_after=8)
    stopped = train(part)
    assert stopped["steps"] == 8 and load_train_state(part.state_file).step == 8
    resumed = train(tiny(tmp_path / "part", steps=20, n_snapshots=5, resume=True))
    assert resumed["steps"] == 20
    w1, w2 = weights(whole.out), weights(part.out)
    assert all(torch.equal(w1[k], w2[k]) for k in w1)
    # Same evaluation history (losses at the same steps), and the snapshots match too.
    h1 = [(h["step"], h["eval_loss"]) for h in load_checkpoint(whole.out, "cpu").training["history"]]
    h2 = [(h["step"], h["eval_loss"]) for h in load_checkpoint(part.out, "cpu").training["history"]]
    assert [s for s, _ in h2] == [5, 8, 10, 15, 20] and [s for s, _ in h1] == [5, 10, 15, 20]
    assert dict(h1) == {s: v for s, v in h2 if s != 8}
    s1, s2 = load_snapshots(whole.snapshot_path, "cpu"), load_snapshots(part.snapshot_path, "cpu")
    assert [s for s, _ in s1] == [s for s, _ in s2] == list(snapshot_steps(20, 5))
    for (_, c1), (_, c2) in zip(s1, s2):
        assert all(torch.equal(x, y) for x, y in zip(c1.model.state_dict().values(), c2.model.state_dict().values()))


def test_resume_refuses_a_different_plan(tmp_path):
    train(tiny(tmp_path, stop_after=4))
    with pytest.raises(ValueError, match="lr"):
        train(tiny(tmp_path, lr=1e-2, resume=True))


def test_snapshots_hold_the_weights_at_the_planned_steps(tmp_path):
    cfg = tiny(tmp_path, steps=16, n_snapshots=8)
    train(cfg)
    snaps = load_snapshots(cfg.snapshot_path, device="cpu")
    assert [s for s, _ in snaps] == list(snapshot_steps(16, 8)) and snaps[0][0] == 0 and len(snaps) == 8
    fresh = api.build_model(snaps[0][1].config, seed=cfg.seed).state_dict()
    assert all(torch.equal(fresh[k], v) for k, v in snaps[0][1].model.state_dict().items())  # step 0 = initialisation
    final = weights(cfg.out)
    assert all(torch.equal(final[k], v) for k, v in snaps[-1][1].model.state_dict().items())
    assert snaps[3][1].training["snapshot_step"] == snaps[3][0] and snaps[3][1].name == "m@" + str(snaps[3][0])


def test_float16_snapshots_round_trip(tmp_path):
    model = api.build_model(ModelConfig(vocab_size=20, d_model=8, d_ff=16, n_heads=2), 0)
    tok = train_tokenizer(["a b c"], "encoder-decoder", 20, 1)
    path = save_snapshots(
        tmp_path / "s.safetensors", [(0, model.state_dict()), (5, model.state_dict())], model.cfg, tok, dtype=torch.float16
    )
    (s0, c0), (s5, _) = load_snapshots(path, "cpu")
    assert (s0, s5) == (0, 5)
    w = c0.model.tok_embed.weight
    assert w.dtype == torch.float32 and torch.equal(w, model.tok_embed.weight.half().float())


@pytest.mark.parametrize("target", ["checkpoint", "snapshots"])
def test_a_failed_write_leaves_the_previous_file_intact(tmp_path, monkeypatch, target):
    cfg = tiny(tmp_path, steps=4, n_snapshots=2)
    train(cfg)
    path = Path(cfg.out if target == "checkpoint" else cfg.snapshot_path)
    before = path.read_bytes()

    def crash(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half a file")  # the temp file is half written ...
        raise OSError("disk full")  # ... when the process dies

    monkeypatch.setattr("transformer.checkpoints.format.save_file", crash)  # every atomic write goes through it
    ckpt = load_checkpoint(cfg.out, "cpu")
    with pytest.raises(OSError, match="disk full"):
        if target == "checkpoint":
            save_checkpoint(path, ckpt.model, ckpt.tokenizer, {})
        else:
            save_snapshots(path, [(0, ckpt.model.state_dict())], ckpt.config, ckpt.tokenizer)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")) == []


def test_progress_bar_shows_loss_accuracy_and_tokens_per_second(tmp_path, capsys):
    out = tmp_path / "cli.safetensors"
    args = ["--task", "sort", "--out", str(out), "--steps", "10", "--d-model", "16", "--n-layers", "1", "--d-ff", "32"]
    args += [
        "--batch-size",
        "8",
        "--n-train",
        "100",
        "--n-eval",
        "8",
        "--eval-every",
        "5",
        "--max-len",
        "16",
        "--vocab-size",
        "30",
    ]
    cli_main(args)
    captured = capsys.readouterr()
    err = captured.err  # the bar lives on stderr, evaluation lines go to stdout
    assert "sort" in err and "10/10" in err
    for field in ("loss=", "acc=", "tok/s="):
        assert field in err
    assert "step 5: train loss" in captured.out and "held-out accuracy" in captured.out
    assert load_checkpoint(out, "cpu").training["steps"] == 10


def test_batched_greedy_decoding_matches_one_at_a_time(tmp_path):
    cfg = tiny(tmp_path, task="reverse", steps=30)
    train(cfg)
    ckpt = load_checkpoint(cfg.out, "cpu")
    tok = ckpt.tokenizer
    sources = [tok.encode(s).ids for s in ("a b c", "q w e r t", "z", "m n o p")]
    batched = greedy_decode_batch(ckpt.model, sources, tok.bos_id, tok.eos_id, tok.pad_id, 12)
    assert batched == [api.greedy_decode(ckpt.model, list(s), ckpt.decoding, 12) for s in sources]


def test_verb_logprobs_sums_the_verbs_subword_tokens(tmp_path):
    cfg = tiny(tmp_path, task="lm", steps=2, n_train=50, max_len=64, vocab_size=60, data="{}")
    train(cfg)
    ckpt = load_checkpoint(cfg.out, "cpu")
    tok, model = ckpt.tokenizer, ckpt.model
    prefixes, verbs = ["the dog that the cats see", "he"], ["remembers", "runs"]
    got = verb_logprobs(model, tok, prefixes, verbs)
    cfg = model.cfg
    for i, (p, v) in enumerate(zip(prefixes, verbs)):
        ids = tok.encode(p + " " + v).ids
        n_verb = len(tok.encode(v, add_special_tokens=False).ids)
        logp = model(torch.tensor([ids]))[0][0].log_softmax(-1)
        want = sum(float(logp[t - 1, ids[t]]) for t in range(len(ids) - n_verb, len(ids)))
        # A padded batch against one text: every sublayer, the output head and the log-softmax over the vocabulary.
        assert_close(got[i], want, terms=max(cfg.d_model, cfg.d_ff, cfg.vocab_size, len(ids)), depth=2 * cfg.n_layers + 2,
                     why="log p(verb | prefix) over a padded batch against one prefix at a time")  # fmt: skip
    assert len(tok.encode("remembers", add_special_tokens=False).ids) > 1  # the sum really spans several tokens


@pytest.mark.slow
def test_a_killed_run_leaves_its_last_checkpoint_intact_and_resumes(tmp_path):
    out, state_file = tmp_path / "k.safetensors", tmp_path / "k.state.safetensors"
    args = ["--task", "copy", "--out", str(out), "--steps", "100000", "--checkpoint-every", "5", "--d-model", "16"]
    args += ["--n-layers", "1", "--d-ff", "32", "--batch-size", "8", "--n-train", "100", "--max-len", "16", "--vocab-size", "40"]
    args += ["--eval-every", "1000000", "--no-progress", "--threads", "1"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "transformer.train", *args], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (state_file.is_file() and load_train_state(state_file).step >= 10):
            time.sleep(0.2)
            if proc.poll() is not None:
                pytest.fail(proc.stderr.read().decode())
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    ckpt = load_checkpoint(out, "cpu")  # loads cleanly: never a half-written file
    state = load_train_state(state_file)
    assert ckpt.training["steps"] % 5 == 0 and state.step % 5 == 0 and state.step >= 10
    # The same plan, resumed from the saved state, carries on from there.
    plan = dict(task="copy", out=str(out), steps=100000, checkpoint_every=5, d_model=16, n_layers=1, d_ff=32, batch_size=8)
    plan.update(n_train=100, max_len=16, vocab_size=40, eval_every=1000000, progress=False, threads=1)
    info = train(TrainConfig(**plan, resume=True, stop_after=state.step + 5))
    assert info["steps"] == state.step + 5 and load_checkpoint(out, "cpu").training["steps"] == state.step + 5


@pytest.mark.slow
def test_torchrun_ddp_on_two_cpu_processes_matches_the_plan(tmp_path):
    common = ["--task", "copy", "--steps", "6", "--d-model", "16", "--n-layers", "1", "--n-heads", "2", "--d-ff", "32"]
    common += ["--batch-size", "8", "--n-train", "200", "--n-eval", "16", "--max-len", "16", "--vocab-size", "40"]
    common += ["--eval-every", "3", "--no-progress", "--threads", "1", "--data", '{"max_len": 5}']
    ddp_dir, one_dir = tmp_path / "ddp", tmp_path / "one"
    env = {**os.environ, "ATTNVIZ_DEVICE": "cpu", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "transformer.train"]
    cmd += [*common, "--out", str(ddp_dir / "m.safetensors"), "--state-out", str(tmp_path / "state" / "s.safetensors")]
    run = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    digests = {}
    for line in run.stdout.splitlines():
        if line.startswith("rank ") and "weights" in line:
            digests[line.split()[1].rstrip(":")] = (line.split("at step ")[1].split(",")[0], line.rsplit(" ", 1)[1])
    assert set(digests) == {"0/2", "1/2"}  # both ranks finished ...
    assert digests["0/2"] == digests["1/2"] and digests["0/2"][0] == "6"  # ... the planned 6 steps, same weights
    assert sorted(p.name for p in ddp_dir.iterdir()) == ["m.safetensors"]  # one checkpoint, written once
    info = load_checkpoint(ddp_dir / "m.safetensors", "cpu").training
    assert info["steps"] == 6 and info["world_size"] == 2
    # One process with the same global batch reaches the same weights (up to float summation order).
    cli_main([*common, "--out", str(one_dir / "m.safetensors")])
    w2, w1 = weights(ddp_dir / "m.safetensors"), weights(one_dir / "m.safetensors")
    # Two ranks average their gradients where one process sums the whole batch: the same float32 sums in
    # another order, so the weights differ by rounding only (measured 4e-9 after these 6 steps). Adam has
    # no useful worst-case bound for that (m/√v turns a rounding of a near-zero gradient into a whole step),
    # so the tolerance is empirical: far above that drift, 20× below the ~2e-4 the warm-up's 6 steps can move a weight.
    drift = max(float((w2[k] - w1[k]).abs().max()) for k in w1)
    assert drift <= 1e-5, f"DDP and one process differ by {drift:.3g}: more than summation order explains"


# ---- the LM stream's induction documents and the classifier's auxiliary loss --------------------


def test_lm_examples_add_repeated_random_spans_only_when_asked():
    from transformer.data import VOCABULARY, lm_documents
    from transformer.data.tasks import lm_examples

    assert lm_examples(30, 4) == lm_documents(30, 4)
    docs, plain = lm_examples(200, 4, p_induction=0.5, induction_len=(6, 9)), lm_documents(200, 4)
    vocab = set(VOCABULARY) - {"."}
    replaced = [doc for doc, orig in zip(docs, plain) if doc != orig]
    for doc in replaced:  # "r1 .. rL r1 .. rL": L = 6..9 distinct vocabulary words, twice
        words = doc.split()
        half = len(words) // 2
        assert words[:half] == words[half:] and 6 <= half <= 9 and len(set(words[:half])) == half
        assert set(words) <= vocab
    assert 70 <= len(replaced) <= 130
    thrice = [d.split() for d in lm_examples(40, 4, p_induction=1.0, induction_len=(4, 4), induction_copies=(3, 3))]
    assert all(len(w) == 12 and w[:4] == w[4:8] == w[8:] for w in thrice)


def test_classifier_examples_carry_each_verbs_subject_token():
    task = get_task("agreement")
    examples = task.examples("train", 40, 0)
    tok = train_tokenizer([e.sentence.text for e in examples], "encoder", 200)
    for ex in examples:
        enc = task.encode(tok, ex, 64)
        stream = tok.encode(ex.sentence.text)
        assert len(enc.verbs) == len(ex.sentence.verbs)
        for (verb, subject, number), fact in zip(enc.verbs, ex.sentence.verbs):
            # The recorded positions are the first subword tokens of the gold verb and subject words.
            assert ex.sentence.words[fact.verb_pos].startswith(stream.tokens[verb])
            assert ex.sentence.words[fact.subject_pos].startswith(stream.tokens[subject])
            assert number == (fact.number == "pl")
    batch = task.collate([task.encode(tok, ex, 64) for ex in examples[:4]], tok.pad_id, tok.bos_id, tok.eos_id)
    k = batch["verb_index"]
    assert k.shape == (sum(len(ex.sentence.verbs) for ex in examples[:4]), 2) and batch["verb_subject"].shape == (len(k),)


def test_auxiliary_loss_trains_a_plain_classifier_and_resumes_bit_exact(tmp_path, monkeypatch):
    from transformer.train import loop
    from transformer.train.aux import AuxClassifier

    # HF's BPE trainer breaks ties between equally frequent merges differently from run to run,
    # so every run here shares one tokenizer: the comparison is about the training loop.
    texts = [e.sentence.text for e in get_task("agreement").examples("train", 80, 0)]
    shared = train_tokenizer(texts, "encoder", 150)
    monkeypatch.setattr(loop, "train_tokenizer", lambda *a, **k: shared)
    kw = dict(task="agreement", steps=10, n_train=80, max_len=48, vocab_size=150, data="{}", aux_weight=1.0, aux_layer=0)
    whole = tiny(tmp_path / "whole", **kw)
    info = train(whole)
    assert "subject" in info["aux_loss"] and info["plan"]["aux_weight"] == 1.0
    ckpt = load_checkpoint(whole.out, "cpu")
    assert not any("aux" in k or "head." in k for k in weights(whole.out))  # the shipped model is a plain classifier
    # The training module gives exactly the model's own class logits.
    task = get_task("agreement")
    batch = task.collate([task.encode(ckpt.tokenizer, ex, 48) for ex in task.examples("test", 6, 0)], 0, 0, 0)
    aux = AuxClassifier(ckpt.model, 0)
    mine, verb_logits = aux(batch["input_ids"], batch["attention_mask"])
    theirs, _ = ckpt.model(batch["input_ids"], attention_mask=batch["attention_mask"])
    # AuxClassifier runs the model's own embedding, layers, norm and head on the same input and threads: the same run.
    assert_same_bits(mine, theirs, why="AuxClassifier's class logits are the model's own")
    assert verb_logits.shape[-1] == ckpt.config.vocab_size + 2
    # Without the auxiliary loss the same seed gives other weights; stopping and resuming gives the same ones.
    plain = tiny(tmp_path / "plain", **{**kw, "aux_weight": 0.0})
    train(plain)
    assert not all(torch.equal(a, b) for a, b in zip(weights(whole.out).values(), weights(plain.out).values()))
    part = tiny(tmp_path / "part", **kw, stop_after=4)
    train(part)
    assert any(k.startswith("_aux.head.") for k in load_train_state(part.state_file).model)  # resumable with its head
    train(tiny(tmp_path / "part", **kw, resume=True))
    w1, w2 = weights(whole.out), weights(part.out)
    assert all(torch.equal(w1[k], w2[k]) for k in w1)
