"""`python -m transformer.train --task reverse --out r.safetensors ...` (or under torchrun for DDP)."""

from transformer.train.cli import main

main()
