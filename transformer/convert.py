"""Convert a Hugging Face-format model folder into one of our one-file checkpoints.

    python -m transformer.convert HF_DIR OUT.safetensors

`load_checkpoint(OUT)` then gives exactly what `load_hf_dir(HF_DIR)` gives: same config, tokenizer,
training metadata and bit-identical weights.
"""

from __future__ import annotations

import argparse
import sys

from transformer.checkpoints.format import CheckpointError, save_checkpoint
from transformer.checkpoints.importers import load_hf_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m transformer.convert", description=__doc__.splitlines()[0])
    parser.add_argument("hf_dir", help="folder with config.json, model.safetensors (or pytorch_model.bin), tokenizer.json")
    parser.add_argument("out", help="the .safetensors checkpoint to write")
    args = parser.parse_args(argv)
    try:
        ckpt = load_hf_dir(args.hf_dir, device="cpu")
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    path = save_checkpoint(args.out, ckpt.model, ckpt.tokenizer, ckpt.training)
    cfg = ckpt.config
    print(
        f"wrote {path}: {ckpt.training['architecture']} ({cfg.kind}), {cfg.n_layers} layers x {cfg.n_heads} heads, "
        f"d_model={cfg.d_model}, {ckpt.model.n_params():,} parameters; ignored {len(ckpt.training['ignored'])} tensor(s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
