"""The shipped checkpoints reach the quality bars on held-out generated data (seeds never used in training)."""

from __future__ import annotations

import pytest

from transformer import load_checkpoint
from transformer.checkpoints.catalog import assets_dir
from transformer.data import agreement_probes, split_seed
from transformer.data.tasks import get_task
from transformer.train.metrics import agreement_probe_accuracy, classifier_accuracy, exact_match

HELD_OUT_SEED = 987_654  # the shipped models trained on data seed 0 (split "train")


def shipped(name: str):
    path = assets_dir() / f"{name}.safetensors"  # $ATTNVIZ_ASSETS checks a fresh `make checkpoints` run
    if not path.is_file():
        pytest.fail(f"{path} is missing: run `make checkpoints`")
    return load_checkpoint(path, device="cpu")


def held_out(task_name: str, n: int):
    """Examples from the task's generator under a data seed no shipped model was trained on."""
    return get_task(task_name).examples("test", n, HELD_OUT_SEED)


def test_translator_exact_match():
    ckpt = shipped("translator")
    result = exact_match(ckpt.model, ckpt.tokenizer, get_task("translation"), held_out("translation", 300))
    assert result["exact_match"] >= 0.95, result


def test_reverse_exact_match():
    ckpt = shipped("reverse")
    result = exact_match(ckpt.model, ckpt.tokenizer, get_task("reverse"), held_out("reverse", 300))
    assert result["exact_match"] >= 0.99, result


def test_classifier_accuracy_overall_and_with_attractors():
    ckpt = shipped("classifier")
    assert ckpt.config.class_names == ("violated", "agrees")
    result = classifier_accuracy(ckpt.model, ckpt.tokenizer, get_task("agreement"), held_out("agreement", 600))
    assert result["n_attractor"] >= 200
    assert result["accuracy"] >= 0.95 and result["accuracy_attractor"] >= 0.95, result


def test_lm_prefers_the_correctly_inflected_verb():
    ckpt = shipped("lm")
    probes = agreement_probes(400, split_seed(HELD_OUT_SEED, "probes"))
    result = agreement_probe_accuracy(ckpt.model, ckpt.tokenizer, probes)
    assert result["n_attractor"] >= 100
    assert result["agreement"] >= 0.95, result


@pytest.mark.parametrize("name", ["translator", "lm", "classifier", "reverse"])
def test_shipped_training_metadata_records_the_run(name):
    info = shipped(name).training
    assert info["steps"] == info["planned_steps"] > 0
    assert {"task", "data_seed", "metrics", "wall_time_s"} <= set(info)
    assert info["metrics"]  # the held-out evaluation at the end of training
