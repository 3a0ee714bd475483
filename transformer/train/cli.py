"""The trainer's command line: one flag per `TrainConfig` field, for every task and model kind."""

from __future__ import annotations

import argparse
import dataclasses
import typing

from transformer.data.tasks import TASKS
from transformer.train.loop import TrainConfig, train


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m transformer.train",
        description="Train a model on a generated task; torchrun --nproc_per_node=N runs it with DDP.",
    )
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.name == "task":
            p.add_argument(flag, required=True, help=f"one of {', '.join(TASKS)} (or classifier)")
        elif f.name == "out":
            p.add_argument(flag, required=True, help="checkpoint path (.safetensors)")
        elif hints[f.name] is bool:
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default)
        else:
            kind = {int: int, float: float}.get(hints[f.name], str)
            p.add_argument(flag, type=kind, default=f.default, help=f"default: {f.default}")
    return p


def main(argv: list[str] | None = None) -> dict:
    args = parser().parse_args(argv)
    return train(TrainConfig(**vars(args)))
