"""Print the quality table of the shipped checkpoints on held-out generated data, and their best head per job.

`python -m transformer.train.evaluate [--n 2000] [--assets DIR]`. The held-out examples come
from a data seed that no training run uses (`EVAL_SEED`), so they are fresh draws from the same
generators; the table also says how many of them happen to occur verbatim in the training split.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from transformer.checkpoints.catalog import ASSETS
from transformer.checkpoints.format import load_checkpoint
from transformer.data import agreement_probes, split_seed
from transformer.data.tasks import get_task
from transformer.train.metrics import agreement_probe_accuracy, classifier_accuracy, exact_match
from transformer.why.head_jobs import head_scores

EVAL_SEED = 20_240_601  # never a training data_seed
BARS = {
    "translator": ("exact_match", 0.95),
    "reverse": ("exact_match", 0.99),
    "classifier": ("accuracy", 0.95),
    "lm": ("agreement", 0.95),
}


def _key(task_name: str, example) -> str:
    texts = get_task(task_name).texts(example)
    return texts[0] if len(texts) == 1 else " → ".join(texts)


def evaluate(name: str, path: Path, n: int) -> dict:
    """Held-out metrics of one shipped checkpoint (plus how many examples were seen in training)."""
    ckpt = load_checkpoint(path, device="cpu")
    task = get_task(ckpt.training["task"])
    if task.name == "lm":
        probes = agreement_probes(n, split_seed(EVAL_SEED, "probes"))
        result = agreement_probe_accuracy(ckpt.model, ckpt.tokenizer, probes)
        data_kw = json.loads(ckpt.training["plan"]["data"])
        docs = "\n".join(task.examples("train", ckpt.training["n_train"], ckpt.training["data_seed"], **data_kw))
        seen = sum(" ".join((*p.prefix, p.correct)) in docs for p in probes)  # prefix + verb occurs in a training document
        return {**result, "seen_in_training": seen}
    held_out = task.examples("test", n, EVAL_SEED)
    if task.name == "agreement":
        result = classifier_accuracy(ckpt.model, ckpt.tokenizer, task, held_out)
    else:
        result = exact_match(ckpt.model, ckpt.tokenizer, task, held_out)
    data_kw = json.loads(ckpt.training["plan"]["data"])
    train = task.examples("train", ckpt.training["n_train"], ckpt.training["data_seed"], **data_kw)
    seen_keys = {_key(task.name, ex) for ex in train}
    return {**result, "seen_in_training": sum(_key(task.name, ex) in seen_keys for ex in held_out)}


def best_heads(path: Path) -> dict[str, str]:
    """{"job (kind)": "L1 H2 0.93"}: the highest-scoring head for each job."""
    scores = head_scores(load_checkpoint(path, device="cpu"))
    out = {}
    for key, table in scores.items():
        flat = int(table.argmax())
        layer, head = divmod(flat, table.shape[1])
        out[key] = f"L{layer} H{head} {float(table[layer, head]):.2f}"
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m transformer.train.evaluate", description=__doc__.splitlines()[0])
    p.add_argument("--assets", default=str(ASSETS))
    p.add_argument("--n", type=int, default=2000, help="held-out examples per model")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    print(f"held-out data seed {EVAL_SEED}, {args.n} examples per model\n")
    print(f"{'model':<11} {'metric':<26} {'value':>7}  {'bar':>5}  ok")
    for name, (headline, bar) in BARS.items():
        path = Path(args.assets) / f"{name}.safetensors"
        if not path.is_file():
            print(f"{name:<11} (missing: run `make checkpoints`)")
            continue
        result = evaluate(name, path, args.n)
        for metric, value in result.items():
            if isinstance(value, float):
                mark = (
                    ("yes" if value >= bar else "NO")
                    if metric == headline or (name == "classifier" and metric == "accuracy_attractor")
                    else ""
                )
                shown_bar = f"{bar:.2f}" if mark else ""
                print(f"{name:<11} {metric:<26} {value:7.4f}  {shown_bar:>5}  {mark}")
            else:
                print(f"{name:<11} {metric:<26} {value:>7}")
    print("\nbest head per job (layers and heads from 0)")
    for name in BARS:
        path = Path(args.assets) / f"{name}.safetensors"
        if path.is_file():
            for job, where in best_heads(path).items():
                print(f"{name:<11} {job:<32} {where}")


if __name__ == "__main__":
    main()
