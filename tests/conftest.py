"""Shared fixtures: a tiny tokenizer and tiny seeded checkpoints, built in memory in well under a second."""

from __future__ import annotations

import os

import pytest
import torch

from transformer.api import build_model
from transformer.checkpoints.format import Checkpoint
from transformer.checkpoints.tokenizer import train_tokenizer
from transformer.model.config import ModelConfig

TINY_TEXTS = [
    "the cat sat on the mat",
    "the dogs near the cat are happy",
    "a bird sings while the cats sleep",
    "the keys to the cabinet are on the table",
    "she reads the book that the teacher wrote",
    "two small dogs run across the green field",
] * 3


def pytest_addoption(parser):
    parser.addoption(
        "--reference-threads",
        type=int,
        default=int(os.environ.get("ATTNVIZ_TEST_REFERENCE_THREADS", "1")),
        help="torch threads for the tests' own computations (default 1, the app's; the app's model runs keep theirs). "
        "make test runs the numerical tests again with 2, so a bit-exact expectation across thread counts fails here too.",
    )


@pytest.fixture(autouse=True)
def reference_threads(request):
    """Every test starts on --reference-threads torch threads (one setting for the whole process), and ends as it began."""
    n = request.config.getoption("--reference-threads")
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    yield n
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def make_checkpoint():
    """make_checkpoint(kind, seed=0, **config) -> an in-memory Checkpoint (eval, no grad) with a tiny BPE tokenizer."""

    def make(kind: str = "encoder-decoder", seed: int = 0, **overrides) -> Checkpoint:
        tokenizer = train_tokenizer(TINY_TEXTS, kind, vocab_size=120, min_frequency=1)
        fields = dict(kind=kind, vocab_size=tokenizer.vocab_size, n_layers=2, n_heads=2, d_model=16, d_ff=32, max_len=64)
        config = ModelConfig(**{**fields, **overrides})
        model = build_model(config, seed=seed).eval().requires_grad_(False)
        return Checkpoint(model=model, tokenizer=tokenizer, training={"seed": seed}, name=f"tiny-{kind}")

    return make


@pytest.fixture
def serve_assets(monkeypatch):
    """`serve_assets(folder)`: the app's catalogue is that folder's checkpoints (MiniLM left out), on the CPU."""
    from transformer.checkpoints import catalog

    def serve(folder) -> None:
        monkeypatch.setenv("ATTNVIZ_DEVICE", "cpu")
        monkeypatch.setenv(catalog.ASSETS_ENV, str(folder))
        monkeypatch.setenv(catalog.NO_MINILM_ENV, "1")

    return serve


@pytest.fixture
def shipped(monkeypatch):
    """The app on the shipped checkpoints of assets/ (MiniLM left out), on the CPU: {name: CatalogEntry}."""
    from transformer.checkpoints import catalog

    monkeypatch.setenv("ATTNVIZ_DEVICE", "cpu")
    monkeypatch.delenv(catalog.ASSETS_ENV, raising=False)
    monkeypatch.setenv(catalog.NO_MINILM_ENV, "1")
    return catalog.available()
