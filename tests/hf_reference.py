"""Reference Hugging Face folders for the import tests: `transformers` models with random weights saved by
`save_pretrained`, and a tokenizer.json trained here. Nothing is downloaded."""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"  # before transformers is imported: never reach for the hub

import torch
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, processors, trainers

CORPUS = [
    "the cat sat on the mat because it was warm .",
    "a dog runs in the park and the cat watches it",
    "grandma bakes bread every sunday ; the street smells of it !",
    "attention is a weighted sum of values by query key similarity",
] * 20
TEXTS = (
    "the cat sat on the mat because it was warm and the dog runs in the park while grandma bakes",
    "a dog runs",
)  # the first is longer than the tests' sliding windows (4 to 8 tokens)


def bpe_tokenizer(bos: str | None = "<s>", eos: str = "</s>", vocab_size: int = 320) -> HFTokenizer:
    """A byte-level BPE like Llama 3's / GPT-NeoX's, trained on CORPUS; adds `bos` before every text when given."""
    tok = HFTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = [s for s in (bos, eos, "<pad>") if s]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    if bos:
        tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", special_tokens=[(bos, tok.token_to_id(bos))])
    return tok


def randomise(model: torch.nn.Module, seed: int = 1, scale: float = 0.1) -> None:
    """Move every weight off its init (norm gains too: ones or zeros would hide a swapped or a dropped norm)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * scale)


def save_random(model: torch.nn.Module, tok: HFTokenizer, path: Path, seed: int = 1, **save) -> Path:
    """Randomise `model`, save it with `save_pretrained` and `tok` as tokenizer.json into `path`."""
    randomise(model, seed)
    model.save_pretrained(path, **save)
    tok.save(str(path / "tokenizer.json"))
    return path


def token_ids(tok: HFTokenizer, text: str) -> list[int]:
    return tok.encode(text).ids


def edit_config(folder: Path, **changes) -> Path:
    """Rewrite config.json with `changes` (None deletes a field)."""
    path = folder / "config.json"
    hf = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            hf.pop(key, None)
        else:
            hf[key] = value
    path.write_text(json.dumps(hf))
    return folder


def copy_folder(folder: Path, to: Path, **changes) -> Path:
    """A copy of `folder` whose config.json has `changes` (None deletes a field)."""
    to.mkdir()
    for f in folder.iterdir():
        (to / f.name).write_bytes(f.read_bytes())
    return edit_config(to, **changes)
