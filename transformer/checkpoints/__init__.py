"""Checkpoints and formats: reading a model from a file or folder, judged against a memory budget first.

- `format.py`: our one-file format (weights in `.safetensors`, config, tokenizer and training facts in its metadata)
- `budget.py`: the memory arithmetic that judges a config and a text before anything is allocated
- `tokenizer.py`: subword tokenizers (the `tokenizers` library), saved inside our checkpoints
- `snapshots.py`: the same model's weights at fixed training steps, in one file
- `catalog.py`: the checkpoints the app offers by name
- `sources.py`: the server owner's models: models folders ($ATTNVIZ_MODELS) and the Hugging Face cache
- `uploads.py`: what a set of uploaded files (or a .zip) is, judged before anything is written
- `importers/`: other libraries' checkpoints (Hugging Face folders, one file per family; nanoGPT's ckpt.pt)
"""
