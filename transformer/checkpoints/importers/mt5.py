"""mT5: T5 v1.1's network over a 250 000-token vocabulary; its config, plan and checks are T5's (t5.py)."""

from transformer.checkpoints.importers import t5

FAMILY = t5.MT5
