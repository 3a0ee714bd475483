"""Training-only auxiliary loss for the agreement classifier: each verb names its subject and the subject's number.

The classifier's own signal is one bit per sentence, which teaches long-range agreement slowly.
The auxiliary heads add dense targets at every verb: from the residual stream after encoder layer
`layer`, at the verb's first token, predict (1) the token id of the verb's gold subject (its head
noun or pronoun, first subword; `transformer.data.toy_english` VerbFact.subject_pos) and (2)
whether that subject is singular or plural (VerbFact.number); the loss is the sum of the two
cross-entropies, averaged over verbs. Naming the subject needs attention from the verb to the
subject noun itself (its determiner also tells the number, but not which noun it is), so this
encourages the verb -> subject head that `analysis.agreement_scores` looks for, and hands the
next layer's [CLS] what it needs to compare against the verb's own form.

The heads (LayerNorm + Linear(d_model, vocab + 2)) exist only during training: the checkpoint
holds the plain encoder classifier, and the auxiliary weights are kept only in the resumable state.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from transformer.model.network import TransformerModel, padding_mask

STATE_PREFIX = "_aux."  # auxiliary weights in the training state, beside the model's


class AuxClassifier(nn.Module):
    """An encoder classifier plus the auxiliary subject-number head on layer `layer`'s output."""

    def __init__(self, model: TransformerModel, layer: int):
        super().__init__()
        if model.cfg.kind != "encoder" or not model.cfg.n_classes:
            raise ValueError("the auxiliary agreement loss needs an encoder classifier")
        if not 0 <= layer < model.cfg.n_layers:
            raise ValueError(f"aux_layer {layer} is not a layer of a {model.cfg.n_layers}-layer encoder")
        self.model = model
        self.layer = layer
        self.norm = nn.LayerNorm(model.cfg.d_model)
        self.head = nn.Linear(model.cfg.d_model, model.cfg.vocab_size + 2)  # subject token id, then sg/pl

    def aux_state(self) -> dict[str, Tensor]:
        return {f"{STATE_PREFIX}{k}": v for k, v in self.state_dict().items() if not k.startswith("model.")}

    def load_aux_state(self, tensors: dict[str, Tensor]) -> None:
        own = {k[len(STATE_PREFIX) :]: v for k, v in tensors.items() if k.startswith(STATE_PREFIX)}
        self.norm.load_state_dict({k[len("norm.") :]: v for k, v in own.items() if k.startswith("norm.")})
        self.head.load_state_dict({k[len("head.") :]: v for k, v in own.items() if k.startswith("head.")})

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> tuple[Tensor, Tensor]:
        """Class logits (B, C), exactly as model(input_ids, attention_mask) gives them, and aux logits (B, T, vocab + 2)."""
        m = self.model
        x = m.encoder.embed(m.tok_embed(input_ids))
        mask = padding_mask(attention_mask.bool(), input_ids.shape[1])
        mid = x
        for i, layer in enumerate(m.encoder.layers):
            x, _ = layer(x, mask)
            if i == self.layer:
                mid = x
        if m.encoder.final_norm is not None:
            x = m.encoder.final_norm(x)
        return m.classifier(x[:, 0]), self.head(self.norm(mid))


def aux_loss(net: nn.Module, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(summed class cross-entropy, correct, n, MEAN auxiliary loss per verb: subject id + subject number)."""
    logits, verb_logits = net(batch["input_ids"], batch["attention_mask"])
    labels = batch["labels"]
    loss = F.cross_entropy(logits, labels, reduction="sum")
    correct = (logits.argmax(-1) == labels).sum()
    where = batch["verb_index"]  # (K, 2): batch row, token position
    if where.shape[0] == 0:
        return loss, correct, torch.tensor(labels.shape[0]), verb_logits.sum() * 0.0
    picked = verb_logits[where[:, 0], where[:, 1]]  # (K, vocab + 2)
    aux = F.cross_entropy(picked[:, :-2], batch["verb_subject"]) + F.cross_entropy(picked[:, -2:], batch["verb_number"])
    return loss, correct, torch.tensor(labels.shape[0]), aux
