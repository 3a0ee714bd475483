"""Training tasks: each turns a seeded corpus into examples, padded batches, a loss and token counts.

A task knows its model kind, which texts its tokenizer learns from, how to encode one example
into token ids, and how to score a batch. The held-out split comes from a different seed than
the training split (`split_seed(data_seed, "train" | "test")`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from transformer.checkpoints.tokenizer import Tokenizer
from transformer.data import TASKS as ALGORITHMIC
from transformer.data import VOCABULARY, agreement_examples, generate_pairs, lm_documents, split_seed

IGNORE = -100  # label value that the loss skips (padding)


@dataclass(frozen=True)
class Encoded:
    """One example as token ids. seq2seq: src/tgt; lm: src only; classifier: src and label."""

    src: tuple[int, ...]
    tgt: tuple[int, ...] = ()  # target ids without BOS/EOS (seq2seq)
    label: int = -1  # class (classifier)
    # classifier only: (token position of a verb's first subword, of its gold subject's first
    # subword, the subject's number: 0 sg, 1 pl) for every verb; the training-only auxiliary loss
    # (train/aux.py) uses them.
    verbs: tuple[tuple[int, int, int], ...] = ()

    def n_targets(self, kind: str) -> int:
        """How many predictions the loss averages over for this example."""
        if kind == "encoder-decoder":
            return len(self.tgt) + 1  # every target token, then EOS
        if kind == "decoder":
            return len(self.src) - 1  # every token after BOS
        return 1


@dataclass(frozen=True)
class Task:
    """A named task: model kind, example generator, tokenizer texts."""

    name: str
    kind: str  # "encoder-decoder" | "decoder" | "encoder"
    class_names: tuple[str, ...] = ()

    # -- raw data ---------------------------------------------------------------------------------
    def examples(self, split: str, n: int, data_seed: int, **kw) -> list[Any]:
        """n raw examples of the split ("train" or "test"): (src, tgt) pairs, Pair, str or AgreementExample."""
        seed = split_seed(data_seed, split)
        if self.name == "translation":
            return generate_pairs(n, seed, **kw)
        if self.name == "lm":
            return lm_examples(n, seed, **kw)
        if self.name == "agreement":
            return agreement_examples(n, seed, **kw)
        return ALGORITHMIC[self.name](n, seed, **kw)

    def texts(self, example: Any) -> tuple[str, ...]:
        """The texts of one example the tokenizer learns from."""
        if self.name == "translation":
            return (example.source_text, example.target_text)
        if self.name == "lm":
            return (example,)
        if self.name == "agreement":
            return (example.sentence.text,)
        return example  # (src, tgt)

    def encode(self, tok: Tokenizer, example: Any, max_len: int) -> Encoded:
        """Token ids of one example, cut to the model's max_len."""
        if self.kind == "encoder-decoder":
            src, tgt = self.texts(example)
            return Encoded(
                src=tok.encode(src, max_len=max_len).ids,
                tgt=tok.encode(tgt, add_special_tokens=False, max_len=max_len - 1).ids,
            )
        if self.kind == "decoder":
            return Encoded(src=tok.encode(example, max_len=max_len + 1).ids)  # inputs and labels are shifted by one
        stream = tok.encode(example.sentence.text, max_len=max_len)
        return Encoded(src=stream.ids, label=example.label, verbs=_verb_facts(stream, example.sentence))

    # -- batches ----------------------------------------------------------------------------------
    def collate(self, items: list[Encoded], pad_id: int, bos_id: int, eos_id: int) -> dict[str, Tensor]:
        """Pad a list of encoded examples into the tensors `loss` needs."""
        if self.kind == "encoder-decoder":
            src = _pad([e.src for e in items], pad_id)
            dec_in = _pad([(bos_id, *e.tgt) for e in items], pad_id)
            labels = _pad([(*e.tgt, eos_id) for e in items], IGNORE)
            return {"input_ids": src, "attention_mask": src != pad_id, "decoder_input_ids": dec_in, "labels": labels}
        if self.kind == "decoder":
            ids = _pad([e.src[:-1] for e in items], pad_id)
            labels = _pad([e.src[1:] for e in items], IGNORE)
            return {"input_ids": ids, "attention_mask": labels != IGNORE, "labels": labels}
        src = _pad([e.src for e in items], pad_id)
        verbs = [(b, *v) for b, e in enumerate(items) for v in e.verbs]  # (row, verb pos, subject pos, number)
        return {
            "input_ids": src,
            "attention_mask": src != pad_id,
            "labels": torch.tensor([e.label for e in items]),
            "verb_index": torch.tensor([(b, v) for b, v, _, _ in verbs], dtype=torch.long).reshape(-1, 2),  # (K, 2)
            "verb_subject": torch.tensor([int(src[b, s]) for b, _, s, _ in verbs], dtype=torch.long),  # (K,) token id
            "verb_number": torch.tensor([n for *_, n in verbs], dtype=torch.long),  # (K,)
        }

    def loss(self, model, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """(summed cross-entropy, number of correct predictions, number of predictions) over the batch."""
        labels = batch["labels"]
        # Targets are right-padded and attention is causal, so no real decoder position ever sees
        # padding: the decoder needs no padding mask (only the encoder does).
        if self.kind == "encoder-decoder":
            logits, _ = model(
                batch["input_ids"], decoder_input_ids=batch["decoder_input_ids"], attention_mask=batch["attention_mask"]
            )
        elif self.kind == "decoder":
            logits, _ = model(batch["input_ids"])
        else:
            logits, _ = model(batch["input_ids"], attention_mask=batch["attention_mask"])
        flat_logits = logits.reshape(-1, logits.shape[-1])  # (B*T, V) or (B, C)
        flat_labels = labels.reshape(-1)
        loss = F.cross_entropy(flat_logits, flat_labels, ignore_index=IGNORE, reduction="sum")
        real = flat_labels != IGNORE
        correct = ((flat_logits.argmax(-1) == flat_labels) & real).sum()
        return loss, correct, real.sum()


def lm_examples(
    n: int,
    seed: int,
    p_induction: float = 0.0,
    induction_len: tuple[int, int] = (10, 25),
    induction_copies: tuple[int, int] = (2, 2),
    **kw,
) -> list[str]:
    """The LM stream: `lm_documents(n, seed, **kw)`, a share of them replaced by induction documents.

    With probability p_induction a document is instead a span of induction_len distinct random
    vocabulary words written induction_copies times ("r1 .. rL r1 .. rL", the shape
    `analysis.induction_scores` probes): each later copy can only be predicted by looking up what
    followed the same word earlier, which is what an induction head does. p_induction = 0 gives
    lm_documents unchanged.
    """
    docs = lm_documents(n, seed, **kw)
    if p_induction <= 0:
        return docs
    rng = random.Random(split_seed(seed, "induction"))
    words = [w for w in VOCABULARY if w != "."]
    out = []
    for doc in docs:
        if rng.random() < p_induction:
            span = " ".join(rng.sample(words, rng.randint(*induction_len)))
            lo, hi = induction_copies
            doc = " ".join([span] * (lo if lo == hi else rng.randint(lo, hi)))  # a fixed count draws nothing
        out.append(doc)
    return out


def _verb_facts(stream, sentence) -> tuple[tuple[int, int, int], ...]:
    """(verb token position, subject token position, subject number 0 sg / 1 pl) per verb, where both
    the verb's and the subject's first tokens survived truncation."""
    first_token = {}
    for i, (a, b) in enumerate(stream.offsets):
        if b > a and a not in first_token:  # specials have empty (0, 0) offsets
            first_token[a] = i
    char_of_word, char = [], 0
    for w in sentence.words:
        char_of_word.append(char)
        char += len(w) + 1
    out = []
    for fact in sentence.verbs:
        verb, subject = first_token.get(char_of_word[fact.verb_pos]), first_token.get(char_of_word[fact.subject_pos])
        if verb is not None and subject is not None:
            out.append((verb, subject, int(fact.number == "pl")))
    return tuple(out)


def _pad(seqs: list[tuple[int, ...]], value: int) -> Tensor:
    """(B, T_max) long tensor, right-padded with `value`."""
    T = max(len(s) for s in seqs)
    out = torch.full((len(seqs), T), value, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.tensor(s, dtype=torch.long)
    return out


TASK_LIST = (
    Task("translation", "encoder-decoder"),
    Task("lm", "decoder"),
    Task("agreement", "encoder", class_names=("violated", "agrees")),  # label 1 = every verb agrees
    *(Task(name, "encoder-decoder") for name in ALGORITHMIC),
)
TASKS: dict[str, Task] = {t.name: t for t in TASK_LIST}
ALIASES = {"classifier": "agreement"}


EXAMPLE_SEED = 2024  # the test split of this seed: texts a model of the task reads, never ones it was trained on


def example_texts(name: str, n: int = 4) -> list[str]:
    """n input texts of task `name` (what its model reads: a source sentence, a document, a sequence), the same every
    time; [] for a name that is no task. For a model trained here on a task the catalogue has no examples of."""
    try:
        task = get_task(name)
    except ValueError:
        return []
    return [task.texts(example)[0] for example in task.examples("test", n, EXAMPLE_SEED)]


def get_task(name: str) -> Task:
    """The task called `name` (also accepts "classifier" for "agreement")."""
    name = ALIASES.get(name, name)
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose one of {', '.join(TASKS)} (or 'classifier')")
    return TASKS[name]
