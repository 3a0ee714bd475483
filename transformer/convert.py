"""Convert a Hugging Face-format model folder, or a nanoGPT checkpoint, into one of our one-file checkpoints.

    python -m transformer.convert HF_DIR OUT.safetensors [--verify]
    python -m transformer.convert NANOGPT_OUT_DIR/ckpt.pt OUT.safetensors   (meta.pkl or tokenizer.json beside it)

`load_checkpoint(OUT)` then gives exactly what `load_any(SOURCE)` gives: same config, tokenizer,
training metadata and bit-identical weights. `--verify` (a Hugging Face folder, with `transformers` installed)
first runs transformers itself on a few texts and records the largest differences of attention weights and
output probabilities in the checkpoint's metadata ("parity"), which the Checkpoint page shows.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from transformer.checkpoints import verify
from transformer.checkpoints.format import CheckpointError, save_checkpoint
from transformer.checkpoints.importers import kind_of, load_any


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m transformer.convert", description=__doc__.splitlines()[0])
    parser.add_argument(
        "source",
        help="a Hugging Face folder (config.json, model.safetensors or its shards or pytorch_model.bin, tokenizer.json), "
        "or a nanoGPT ckpt.pt (or its folder) with meta.pkl or tokenizer.json beside it",
    )
    parser.add_argument("out", help="the .safetensors checkpoint to write")
    parser.add_argument(
        "--verify",
        action="store_true",
        help="compare with transformers' own model on a few texts and record the differences (needs transformers)",
    )
    args = parser.parse_args(argv)
    try:
        if kind_of(args.source) not in ("huggingface", "nanogpt"):
            raise CheckpointError(f"{args.source}: not a Hugging Face folder (config.json) nor a nanoGPT ckpt.pt (or its folder)")
        ckpt = load_any(args.source, device="cpu")
        if args.verify:
            if kind_of(args.source) != "huggingface":
                raise CheckpointError("--verify compares with transformers' own model: only Hugging Face folders have one")
            parity = verify.compare(args.source, ckpt)
            ckpt = dataclasses.replace(ckpt, training={**ckpt.training, "parity": parity})
            print(
                f"checked against transformers {parity['transformers']} on {parity['texts']} texts ({parity['tokens']} tokens): "
                f"attention weights differ by at most {parity['max_attention_diff']:.1e}, "
                f"{parity['output']} by {parity['max_output_diff']:.1e}"
            )
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    path = save_checkpoint(args.out, ckpt.model, ckpt.tokenizer, ckpt.training)
    cfg, facts = ckpt.config, ckpt.training
    what = facts.get("architecture") or f"nanoGPT at iteration {facts.get('iter_num')}"
    ignored = f"; ignored {len(facts['ignored'])} tensor(s)" if "ignored" in facts else ""
    print(
        f"wrote {path}: {what} ({cfg.kind}), {cfg.n_layers} layers x {cfg.n_heads} heads, "
        f"d_model={cfg.d_model}, {ckpt.model.n_params():,} parameters{ignored}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
