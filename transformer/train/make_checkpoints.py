"""Regenerate every shipped checkpoint in assets/ from scratch (`make checkpoints`).

Four recipes, trained two at a time in separate processes (one thread each: on a 2-core machine
that beats one run using both cores). Resumable state goes to a temporary folder and is
thrown away; assets/ receives the checkpoints and the snapshot files.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import tempfile
import time
from pathlib import Path

from transformer.checkpoints.catalog import ASSETS
from transformer.train.loop import TrainConfig, train

# name -> TrainConfig fields (out/state paths are filled in at run time). Longest first, so two
# workers finish at about the same time. Every tokenizer gets enough room (vocab_size) to keep
# nearly every Toy English word whole: shorter sequences, and one token per word for the probes.
RECIPES: dict[str, dict] = {
    "lm": dict(
        task="lm",
        d_model=128,
        n_layers=2,
        n_heads=4,
        d_ff=256,
        max_len=64,
        vocab_size=1000,
        steps=3000,
        batch_size=32,
        lr=1.5e-3,
        warmup=100,
        min_lr_ratio=0.3,  # the induction head forms late (about step 1500): keep the rate up for it
        n_train=20_000,
        # 35 % of documents are a span of 3-10 random words written 3-6 times (several copies give
        # many induction targets per document, and spans of varying length rule out a fixed
        # "look L back" shortcut); the rest are 1-3 Toy English sentences rich in relative clauses.
        data=json.dumps(
            {
                "p_induction": 0.35,
                "induction_len": [3, 10],
                "induction_copies": [3, 6],
                "min_sentences": 1,
                "max_sentences": 3,
                "p_repeat": 0.3,
                "p_relative": 0.5,
            }
        ),
        n_snapshots=9,
        snapshot_dtype="float16",
    ),
    "translator": dict(
        task="translation",
        d_model=128,
        n_layers=2,
        n_heads=4,
        d_ff=256,
        max_len=48,
        vocab_size=1200,
        steps=1800,
        batch_size=64,
        lr=1.5e-3,
        warmup=100,
        n_train=30_000,
        n_snapshots=9,
        snapshot_dtype="float16",
    ),
    "classifier": dict(
        task="agreement",
        d_model=128,
        n_layers=2,
        n_heads=4,
        d_ff=256,
        max_len=48,
        vocab_size=1000,
        steps=2000,
        batch_size=64,
        lr=2e-3,
        warmup=150,
        n_train=30_000,
        # Training-only auxiliary loss (train/aux.py): after layer 0, every verb predicts its gold
        # subject's token and number. Dense supervision: the classifier converges in a third of
        # the steps, and layer 0 grows a verb -> subject head. The checkpoint has no aux weights.
        aux_weight=0.3,
        aux_layer=0,
    ),
    "reverse": dict(
        task="reverse",
        d_model=64,
        n_layers=2,
        n_heads=4,
        d_ff=256,
        max_len=16,
        vocab_size=64,
        steps=1200,
        batch_size=64,
        lr=2e-3,
        warmup=100,
        n_train=20_000,
    ),
}


def recipe(name: str, out_dir: Path, state_dir: Path, **overrides) -> TrainConfig:
    fields = {**RECIPES[name], **overrides}
    return TrainConfig(
        out=str(out_dir / f"{name}.safetensors"),
        state_out=str(state_dir / f"{name}.state.safetensors"),
        progress=False,
        threads=1,
        eval_every=500,
        **fields,
    )


def _run(cfg: TrainConfig) -> tuple[str, float, dict]:
    t0 = time.perf_counter()
    info = train(cfg)
    return Path(cfg.out).stem, time.perf_counter() - t0, info.get("metrics", {})


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m transformer.train.make_checkpoints", description=__doc__.splitlines()[0])
    p.add_argument("--out-dir", default=str(ASSETS))
    p.add_argument("--only", nargs="*", choices=list(RECIPES), help="train only these (default: all)")
    p.add_argument("--jobs", type=int, default=2, help="models trained at once (one CPU thread each)")
    p.add_argument("--set", nargs="*", default=[], metavar="FIELD=JSON", help="override a recipe field for every model")
    args = p.parse_args(argv)
    overrides = {k: json.loads(v) for k, v in (s.split("=", 1) for s in args.set)}
    names = args.only or list(RECIPES)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="attnviz-train-") as state_dir:
        cfgs = [recipe(n, Path(args.out_dir), Path(state_dir), **overrides) for n in names]
        ctx = mp.get_context("spawn")  # fresh interpreters: no shared torch thread pools
        with ctx.Pool(max(1, min(args.jobs, len(cfgs))), maxtasksperchild=1) as pool:
            for name, seconds, metrics in pool.imap_unordered(_run, cfgs):
                shown = {k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items()}
                print(f"{name}: {seconds:.0f} s  {shown}", flush=True)
    total = time.perf_counter() - t0
    size = sum(f.stat().st_size for f in Path(args.out_dir).glob("*.safetensors"))
    print(f"all done in {total:.0f} s; {args.out_dir} holds {size / 1e6:.1f} MB of .safetensors")


if __name__ == "__main__":
    main()
