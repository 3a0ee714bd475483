"""The training loop: AdamW with warm-up and decay, clipping, evaluation, snapshots, atomic resumable checkpoints.

A step's batch is a pure function of (data seed, step), and the learning rate a pure function of
the step, so a run stopped after N steps and resumed from its saved state continues bit for bit
like a run that was never stopped (on the CPU).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from transformer.checkpoints.format import save_checkpoint
from transformer.checkpoints.snapshots import read_snapshot_states, save_snapshots
from transformer.checkpoints.tokenizer import Tokenizer, train_tokenizer
from transformer.data.tasks import get_task
from transformer.model.config import ModelConfig
from transformer.model.network import TransformerModel
from transformer.train import ddp
from transformer.train.aux import AuxClassifier, aux_loss
from transformer.train.metrics import quality, teacher_forced
from transformer.train.state import TrainState, load_train_state, save_train_state, state_path

# Plan fields that may change between a run and its resumption; every other field must match.
RUNTIME_FIELDS = ("out", "snapshots_out", "state_out", "resume", "stop_after", "progress", "device", "threads")


@dataclass(frozen=True)
class TrainConfig:
    """One training run: task, model shape, optimisation and bookkeeping (the CLI's flags, one per field)."""

    task: str  # translation | lm | agreement (classifier) | copy | reverse | sort | addition
    out: str  # the checkpoint to write (.safetensors)
    # model
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    d_ff: int = 256
    max_len: int = 64
    vocab_size: int = 1000  # tokenizer target size (the model gets the tokenizer's actual size)
    positional: str = "sinusoidal"
    norm_first: bool = True
    # optimisation
    steps: int = 1000
    batch_size: int = 64  # global batch: all ranks together
    lr: float = 1e-3  # peak learning rate, reached after `warmup` steps
    warmup: int = 100
    decay: str = "cosine"  # "cosine" | "linear", down to min_lr_ratio * lr at the last step
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.01
    clip: float = 1.0  # max global gradient norm
    aux_weight: float = 0.0  # classifier only: weight of the training-only subject-number loss (train/aux.py); 0: off
    aux_layer: int = 0  # ... read from the output of this encoder layer (from 0)
    seed: int = 0  # model initialisation
    # data
    data_seed: int = 0  # the training split uses split_seed(data_seed, "train"), held-out "test"
    n_train: int = 20_000
    n_eval: int = 500
    data: str = "{}"  # JSON keyword arguments for the task's generator, e.g. '{"p_repeat": 0.8}'
    # bookkeeping
    eval_every: int = 200
    checkpoint_every: int = 0  # also write the checkpoint (and state) every N steps; 0: only at the end
    n_snapshots: int = 0  # snapshots at step 0 and at steps spaced by doubling up to `steps`; 0: none
    snapshots_out: str = ""  # default: <out stem>.snapshots.safetensors
    snapshot_dtype: str = "float32"  # "float16" halves the snapshots file
    state_out: str = ""  # the resumable training state; default: <out stem>.state.safetensors
    resume: bool = False  # continue from state_out if it exists
    stop_after: int = 0  # stop after this many steps as if killed (state and checkpoint saved); 0: never
    progress: bool = True
    device: str | None = None
    threads: int = 0  # torch.set_num_threads; 0 leaves PyTorch's default

    @property
    def snapshot_path(self) -> Path:
        if self.snapshots_out:
            return Path(self.snapshots_out)
        out = Path(self.out)
        return out.with_name(out.name.removesuffix(".safetensors") + ".snapshots.safetensors")

    @property
    def state_file(self) -> Path:
        return Path(self.state_out) if self.state_out else state_path(self.out)

    def plan(self) -> dict[str, Any]:
        """The fields that define the run's result (a resumed run must share them)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in RUNTIME_FIELDS}


AUX_NOTE = (
    "training-only auxiliary loss (weight {w}, transformer/train/aux.py): at every verb's first token, a linear "
    "head on the output of encoder layer {layer} predicted the gold subject's token and number (sg/pl); "
    "the head is not part of this checkpoint"
)


def snapshot_steps(steps: int, n: int) -> tuple[int, ...]:
    """Step 0 and steps/2^k for k = n-2 .. 0: dense early on, where attention patterns form.

    Falls back to evenly spaced steps when the doubling schedule has duplicates (short runs).
    """
    if n <= 0:
        return ()
    if n == 1:
        return (0,)
    doubling = sorted({0, *(round(steps / 2**k) for k in range(n - 2, -1, -1))})
    if len(doubling) == n:
        return tuple(doubling)
    return tuple(sorted({round(i * steps / (n - 1)) for i in range(n)}))


def lr_at(cfg: TrainConfig, step: int) -> float:
    """Linear warm-up to cfg.lr, then cosine or linear decay to min_lr_ratio * lr at the last step."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    span = max(cfg.steps - cfg.warmup, 1)
    progress = min((step - cfg.warmup) / span, 1.0)
    shape = 0.5 * (1 + math.cos(math.pi * progress)) if cfg.decay == "cosine" else 1 - progress
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * shape)


def batch_indices(data_seed: int, step: int, n_examples: int, batch_size: int) -> torch.Tensor:
    """The global batch of `step`: indices drawn with a generator seeded by (data seed, step)."""
    g = torch.Generator().manual_seed(data_seed * 1_000_003 + step)
    return torch.randint(n_examples, (batch_size,), generator=g)


def _optimizer(model: TransformerModel, cfg: TrainConfig) -> torch.optim.AdamW:
    # Weight decay on matrices only: biases, LayerNorm gains and embeddings are left alone.
    decay = [p for n, p in model.named_parameters() if p.ndim == 2 and "embed" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.ndim == 2 and "embed" not in n)]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.98), eps=1e-8)


def _model_config(cfg: TrainConfig, kind: str, tok: Tokenizer, class_names: tuple[str, ...]) -> ModelConfig:
    return ModelConfig(
        kind=kind,
        vocab_size=tok.vocab_size,
        n_layers=cfg.n_layers,
        n_heads=cfg.n_heads,
        d_model=cfg.d_model,
        d_ff=cfg.d_ff,
        max_len=cfg.max_len,
        positional=cfg.positional,
        norm_first=cfg.norm_first,
        n_classes=len(class_names),
        class_names=class_names,
        pad_id=tok.pad_id,
    )


# hook(event, facts), called on the main rank as the run goes: "start" {step, steps} before the first
# step; "step" {step, loss (mean per target), lr}; "eval" (the history row just added); "snapshot"
# {step, path} once the snapshots file holds that step; "saved" {step, metrics} once the checkpoint is
# written. transformer/train/jobs.py reports a job's progress with it.
Hook = Callable[[str, dict[str, Any]], None]


def train(cfg: TrainConfig, hook: Hook | None = None) -> dict[str, Any]:
    """Run (or resume) the training `cfg` describes; returns the training metadata written to the checkpoint."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    where, device = ddp.setup(cfg.device)
    try:
        return _train(cfg, where, device, hook if where.is_main else None)
    finally:
        ddp.teardown(where)


def _train(cfg: TrainConfig, where: ddp.Dist, device: torch.device, hook: Hook | None = None) -> dict[str, Any]:
    report = hook or (lambda event, facts: None)
    task = get_task(cfg.task)
    if cfg.batch_size % where.world_size:
        raise ValueError(f"batch_size {cfg.batch_size} must divide evenly over {where.world_size} ranks")
    data_kw = json.loads(cfg.data)
    state = load_train_state(cfg.state_file) if cfg.resume and cfg.state_file.is_file() else None
    if state is not None and state.plan != cfg.plan():
        diff = sorted(k for k in cfg.plan() if state.plan.get(k) != cfg.plan()[k])
        raise ValueError(f"cannot resume {cfg.state_file}: the run's plan differs in {', '.join(diff)}")

    train_raw = task.examples("train", cfg.n_train, cfg.data_seed, **data_kw)
    held_out = task.examples("test", cfg.n_eval, cfg.data_seed, **data_kw)
    if state is not None:
        tok_json = state.tokenizer
    elif where.is_main:  # rank 0 trains the tokenizer and sends it to the others
        tok_json = train_tokenizer([t for ex in train_raw for t in task.texts(ex)], task.kind, cfg.vocab_size).to_json()
    else:
        tok_json = ""
    tok = Tokenizer.from_json(ddp.broadcast_text(tok_json, where, device))
    mcfg = _model_config(cfg, task.kind, tok, task.class_names)

    torch.manual_seed(cfg.seed)
    model = TransformerModel(mcfg).to(device)
    aux = AuxClassifier(model, cfg.aux_layer).to(device) if cfg.aux_weight else None
    trainee = aux if aux is not None else model  # what the optimizer and DDP see
    trainee.train()
    opt = _optimizer(trainee, cfg)
    start, history, wall_before = 0, [], 0.0
    if state is not None:
        model.load_state_dict({k: v.to(device) for k, v in state.model.items() if not k.startswith("_aux.")})
        if aux is not None:
            aux.load_aux_state({k: v.to(device) for k, v in state.model.items()})
        opt.load_state_dict(state.optimizer)
        torch.set_rng_state(state.rng)
        start, history, wall_before = state.step, state.history, state.wall_time_s
    net = ddp.wrap(trainee, where, device)

    encoded = [task.encode(tok, ex, cfg.max_len) for ex in train_raw]
    n_targets = torch.tensor([e.n_targets(task.kind) for e in encoded], dtype=torch.float64)
    n_tokens = torch.tensor([len(e.src) + len(e.tgt) for e in encoded])
    eval_batch = task.collate([task.encode(tok, ex, cfg.max_len) for ex in held_out[:256]], tok.pad_id, tok.bos_id, tok.eos_id)

    planned_snaps = snapshot_steps(cfg.steps, cfg.n_snapshots)
    snaps: list[tuple[int, dict[str, torch.Tensor]]] = []
    if where.is_main and state is not None and planned_snaps and cfg.snapshot_path.is_file():
        snaps = [(s, sd) for s, sd in read_snapshot_states(cfg.snapshot_path)[3] if s <= start]
    started = time.perf_counter()

    def wall() -> float:
        return wall_before + time.perf_counter() - started

    def metadata(step: int, metrics: dict) -> dict[str, Any]:
        return {
            "task": task.name,
            "steps": step,
            "planned_steps": cfg.steps,
            "seed": cfg.seed,
            "data_seed": cfg.data_seed,
            "n_train": cfg.n_train,
            "metrics": metrics,
            "history": history,
            "wall_time_s": round(wall(), 2),
            "world_size": where.world_size,
            "device": device.type,
            "snapshot_steps": list(planned_snaps),
            "plan": cfg.plan(),
            **({"aux_loss": AUX_NOTE.format(w=cfg.aux_weight, layer=cfg.aux_layer)} if aux is not None else {}),
        }

    def snapshot(step: int) -> None:
        snaps.append((step, {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}))
        dtype = getattr(torch, cfg.snapshot_dtype)
        save_snapshots(cfg.snapshot_path, snaps, mcfg, tok, metadata(step, {}), dtype=dtype)
        report("snapshot", {"step": step, "path": str(cfg.snapshot_path)})

    def own_state() -> dict[str, torch.Tensor]:
        return {**model.state_dict(), **(aux.aux_state() if aux is not None else {})}

    def save(step: int, metrics: dict) -> dict:
        info = metadata(step, metrics)
        save_checkpoint(cfg.out, model, tok, info)
        rng = torch.get_rng_state()
        save_train_state(
            cfg.state_file,
            TrainState(step, own_state(), opt.state_dict(), rng, cfg.plan(), history, wall(), tok.to_json()),
        )
        return info

    if where.is_main and start == 0 and 0 in planned_snaps:
        snapshot(0)
    bar = tqdm(total=cfg.steps, initial=start, desc=task.name, disable=not (cfg.progress and where.is_main), dynamic_ncols=True)
    run_loss = run_correct = run_n = 0.0
    tokens_seen, tick = 0, time.perf_counter()
    info: dict[str, Any] = {}
    done = start
    report("start", {"step": start, "steps": cfg.steps})
    for step in range(start, cfg.steps):
        idx = batch_indices(cfg.data_seed, step, len(encoded), cfg.batch_size)
        mine = idx[where.rank :: where.world_size]
        batch = {k: v.to(device) for k, v in task.collate([encoded[i] for i in mine], tok.pad_id, tok.bos_id, tok.eos_id).items()}
        lr = lr_at(cfg, step)
        for group in opt.param_groups:
            group["lr"] = lr
        if aux is not None:
            loss_sum, correct, n, aux_mean = aux_loss(net, batch)
            extra = cfg.aux_weight * aux_mean
        else:
            loss_sum, correct, n = task.loss(net, batch)
            extra = 0.0
        # Normalise by the GLOBAL number of predictions; DDP averages over ranks, hence * world_size.
        (loss_sum * (where.world_size / float(n_targets[idx].sum())) + extra).backward()
        torch.nn.utils.clip_grad_norm_(trainee.parameters(), cfg.clip)
        opt.step()
        opt.zero_grad(set_to_none=True)

        done = step + 1
        run_loss, run_correct, run_n = run_loss + float(loss_sum.detach()), run_correct + int(correct), run_n + int(n)
        tokens_seen += int(n_tokens[idx].sum())
        report("step", {"step": done, "loss": float(loss_sum.detach()) / max(int(n), 1), "lr": lr})
        if bar.disable is False:
            elapsed = max(time.perf_counter() - tick, 1e-9)
            bar.set_postfix(
                {
                    "loss": f"{run_loss / max(run_n, 1):.3f}",
                    "acc": f"{run_correct / max(run_n, 1):.3f}",
                    "tok/s": f"{tokens_seen / elapsed:.0f}",
                },
                refresh=False,
            )
            bar.update(1)
        last = done == cfg.steps or done == cfg.stop_after
        if where.is_main and (done % cfg.eval_every == 0 or last):
            trainee.eval()
            held = teacher_forced(model, task, eval_batch)
            trainee.train()
            history.append(
                {
                    "step": done,
                    "train_loss": run_loss / max(run_n, 1),
                    "eval_loss": held["loss"],
                    "eval_accuracy": held["accuracy"],
                    "lr": lr,
                }
            )
            if not bar.disable:
                bar.write(
                    f"step {done}: train loss {run_loss / max(run_n, 1):.4f}, held-out loss {held['loss']:.4f}, "
                    f"held-out accuracy {held['accuracy']:.4f}"
                )
            run_loss = run_correct = run_n = 0.0
            report("eval", dict(history[-1]))
        if where.is_main and done in planned_snaps:
            snapshot(done)
        if where.is_main and (last or (cfg.checkpoint_every and done % cfg.checkpoint_every == 0)):
            final = done == cfg.steps
            metrics = quality(model, tok, task, held_out, cfg.data_seed) if final else dict(history[-1]) if history else {}
            info = save(done, metrics)
            report("saved", {"step": done, "metrics": metrics})
            if final and not bar.disable:
                bar.write(f"{task.name}: {json.dumps(metrics)}")
        if cfg.stop_after and done >= cfg.stop_after:
            break
    bar.close()
    print(f"rank {where.rank}/{where.world_size}: {task.name} at step {done}, weights {ddp.weights_digest(model)}", flush=True)
    return info
