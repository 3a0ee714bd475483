"""`python -m transformer.train --task reverse --out r.safetensors ...` (or under torchrun for DDP)."""

from .cli import main

main()
