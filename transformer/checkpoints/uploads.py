"""What a set of uploaded files is, judged before anything is written or a tensor read (pure Python, no Streamlit).

A browser upload is one of
- one of this project's `.safetensors` checkpoints (with its `.snapshots.safetensors` beside it, if any: the
  Training page replays them);
- a Hugging Face folder's files: config.json, tokenizer.json (a Marian folder: its source.spm and vocab.json
  instead) and the weights (model.safetensors, or its shards with model.safetensors.index.json, or
  pytorch_model.bin or its shards), and the two settings files the loader reads when they are there
  (generation_config.json: how a translator starts and stops; tokenizer_config.json: whether a BOS starts
  every text), with the files such a folder also holds (special_tokens_map.json, a vocab.json beside
  tokenizer.json, Marian's target.spm, ...), which are left out;
- a nanoGPT `ckpt.pt` with its `meta.pkl` (or a tokenizer.json);
- one `.zip` of any of those: its members are judged from the zip's directory before one is extracted
  (no absolute paths, no "..", no links, at most MAX_MEMBERS, each member and all together within the
  upload limit, none expanding more than MAX_RATIO times); one top-level folder in it is flattened.

`prepare` returns the files the loader reads, under fixed names (a user's name is only ever reduced to
its base name, checked against those allowed, and quoted in messages), and `write` puts them into a
folder the caller chose (the server: a private folder named by the files' digest). Every refusal
says what is wrong and what would work.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import re
import struct
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from transformer.checkpoints.format import MAX_HEADER_BYTES, CheckpointError
from transformer.checkpoints.importers.nanogpt import CKPT, META
from transformer.checkpoints.importers.parts import CONFIG, PICKLE, SAFETENSORS, TOKENIZER
from transformer.checkpoints.importers.weights import INDEX, parse_index
from transformer.checkpoints.snapshots import FORMAT as SNAPSHOTS_FORMAT
from transformer.checkpoints.spm import M2M_SPM, SOURCE_SPM, TARGET_SPM, VOCAB
from transformer.train.state import FORMAT as STATE_FORMAT

MAX_MEMBERS = 64  # files in one zip: a sharded folder has a few dozen at most
MAX_RATIO = 100  # uncompressed / compressed size of one member: weights compress ~1.1×, JSON ~5×, a zip bomb 1000×
RATIO_FROM = 1_000_000  # members smaller than this (uncompressed) are too small to be a bomb, whatever their ratio
# Settings files the loader reads when a folder has them (importers: GENERATION_CONFIG, TOKENIZER_CONFIG)
SETTINGS = ("generation_config.json", "tokenizer_config.json")
# Files a Hugging Face folder holds beside the ones read: accepted and left out.
LEFT_OUT = frozenset(
    {
        "special_tokens_map.json", "added_tokens.json",
        "vocab.json", "vocab.txt", "merges.txt", "README.md", "preprocessor_config.json",
        TARGET_SPM, SOURCE_SPM, M2M_SPM,  # beside a tokenizer.json, which is read; Marian's target.spm never is
    }
)  # fmt: skip
WHAT_WORKS = (
    "one of this project's .safetensors checkpoints; or a Hugging Face folder's config.json, tokenizer.json (a Marian "
    "folder's: source.spm and vocab.json) and model.safetensors (or its shards with model.safetensors.index.json, or "
    "pytorch_model.bin); or a nanoGPT ckpt.pt with its meta.pkl; or one .zip of such a folder"
)


class UploadError(CheckpointError):
    """An upload that cannot be opened; the message says what is wrong and what would work."""


@dataclass(frozen=True)
class Upload:
    """Files to write into a private folder and load from there."""

    kind: str  # "ours" | "huggingface" | "nanogpt"
    files: dict[str, bytes]  # file name (fixed by us, or a user's reduced to a safe base name) -> contents
    open: str  # what to load, inside the folder: a file name, or "" for the folder itself
    name: str  # what the loaded model is called in messages: the user's file (or zip) name
    snapshots: bytes | None = None  # one of our checkpoints' training snapshots, uploaded beside it (the Training page's)


def base_name(name: str) -> str:
    """A user's file name reduced to its last component (browsers may send "folder/file", some "folder\\\\file")."""
    return re.split(r"[/\\]", name.strip())[-1].strip()


def prepare(files: Sequence[tuple[str, bytes]], limit: int) -> Upload:
    """Judge uploaded (name, contents) pairs; `limit`: the most bytes one upload may hold, all files together."""
    if not files:
        raise UploadError(f"nothing was uploaded: choose {WHAT_WORKS}")
    total = sum(len(data) for _, data in files)
    if total > limit:
        raise UploadError(f"the files hold {_mb(total)} together, more than this server takes in one upload ({_mb(limit)})")
    named = [(base_name(name), data) for name, data in files]
    # The user's own name (shown in messages, literally) when there is one file; roles go by base names.
    own = files[0][0].removesuffix(".zip").removesuffix(".safetensors") if len(files) == 1 else ""
    zips = [n for n, _ in named if n.lower().endswith(".zip")]
    if zips:
        if len(named) > 1:
            raise UploadError(f"{zips[0]} came with other files: upload either one .zip of the model's folder, or its files")
        return _classify(unzip(named[0][1], named[0][0], limit), own)
    return _classify(named, own)


def _classify(files: list[tuple[str, bytes]], name: str) -> Upload:
    by_name: dict[str, bytes] = {}
    for n, data in files:
        if n in by_name:
            raise UploadError(f"two files are named {n}: upload one model's files at a time")
        by_name[n] = data
    if CONFIG in by_name:
        return _huggingface(by_name, name or "uploaded Hugging Face folder")
    pickled = [n for n in by_name if n.endswith((".pt", ".pth"))]
    if pickled:
        return _nanogpt(by_name, pickled, name or pickled[0])
    weights = [n for n in by_name if n.endswith(".safetensors")]
    rest = sorted(set(by_name) - set(weights) - LEFT_OUT - set(SETTINGS))
    if rest and all(n.endswith((".bin", INDEX)) for n in rest):  # pytorch_model.bin (or shards) without their folder
        raise UploadError(
            f"{_names(rest)}: Hugging Face weights: upload them together with their config.json and tokenizer.json (or a "
            "`.zip` of the folder), or convert the folder with `python -m transformer.convert FOLDER OUT.safetensors`"
        )
    if len(weights) == 1 and not rest:
        return _ours(weights[0], by_name[weights[0]], name or weights[0].removesuffix(".safetensors"))
    snapshots = [n for n in weights if safetensors_format(by_name[n]) == SNAPSHOTS_FORMAT]
    if len(weights) == 2 and len(snapshots) == 1 and not rest:  # a checkpoint and its training snapshots
        (model,) = set(weights) - set(snapshots)
        ours = _ours(model, by_name[model], model.removesuffix(".safetensors"))
        return dataclasses.replace(ours, snapshots=by_name[snapshots[0]])
    if weights and not rest and not any(n.endswith(INDEX) for n in by_name):
        raise UploadError(
            f"{len(weights)} .safetensors files without a config.json: upload one of this project's checkpoints at a "
            "time, or a Hugging Face folder's files with its config.json and tokenizer.json"
        )
    raise UploadError(f"{_names(by_name)}: not a model this app opens without more. Upload {WHAT_WORKS}")


def _ours(file: str, data: bytes, name: str) -> Upload:
    """One .safetensors: ours, or one of our other files, or a Hugging Face weights file on its own."""
    stem = file.removesuffix(".safetensors")
    fmt = safetensors_format(data)
    if fmt == STATE_FORMAT:
        own = stem.removesuffix(".state")
        raise UploadError(
            f"{file} is a training-state file (the optimizer's state, to resume training), not a model: upload "
            f"{own + '.safetensors' if own else 'the checkpoint it was saved with'}, the checkpoint itself"
        )
    if fmt == SNAPSHOTS_FORMAT:
        own = stem.removesuffix(".snapshots")
        raise UploadError(
            f"{file} holds training snapshots (the weights at several steps, for the Training page), not a model: "
            f"upload {own + '.safetensors' if own else 'the checkpoint they belong to'}, the checkpoint itself"
        )
    if fmt is None or (fmt and not fmt.startswith("attnviz-")):  # a plain weights file (Hugging Face's: {"format": "pt"})
        raise UploadError(
            f"{file} is a Hugging Face weights file (no attnviz metadata): upload it together with its config.json and "
            "tokenizer.json (or a .zip of the folder), or convert it with `python -m transformer.convert FOLDER "
            "OUT.safetensors`"
        )
    # Ours, an unknown format tag, or not a safetensors file at all: the loader says which, naming the file.
    safe = f"{re.sub(r'[^A-Za-z0-9._-]', '_', name)[:80] or 'upload'}.safetensors"  # no "/": never a path
    return Upload("ours", {safe: data}, safe, name)


def safetensors_format(data: bytes) -> str | None:
    """The "format" metadata of safetensors bytes; None for a header without one; "" when it is not a safetensors header."""
    if len(data) < 10:
        return ""
    (n,) = struct.unpack("<Q", data[:8])
    if n > min(len(data) - 8, MAX_HEADER_BYTES) or data[8:9] != b"{":
        return ""
    try:
        header = json.loads(data[8 : 8 + n])
    except (json.JSONDecodeError, UnicodeDecodeError):
        return ""
    metadata = header.get("__metadata__") if isinstance(header, dict) else None
    fmt = metadata.get("format") if isinstance(metadata, dict) else None
    return fmt if isinstance(fmt, str) else None


def _huggingface(files: dict[str, bytes], name: str) -> Upload:
    keep = {CONFIG: files[CONFIG], **{n: files[n] for n in _tokenizer_files(files)}}
    keep.update({n: files[n] for n in SETTINGS if n in files})
    for single in (SAFETENSORS, PICKLE):  # Hugging Face's own preference, as the loader's
        index = single + INDEX
        if single in files:
            keep[single] = files[single]
            break
        if index in files:
            try:
                shards = parse_index(files[index].decode("utf-8"), index)
            except UnicodeDecodeError as e:
                raise UploadError(f"{index} is not UTF-8 text: {e}") from e
            except CheckpointError as e:  # a shard outside the folder, an index that is not one
                raise UploadError(str(e)) from e
            missing = [s for s in shards if s not in files]
            if missing:
                tensors = shards[missing[0]]
                raise UploadError(
                    f"{index} names the shard {missing[0]} ({len(tensors)} tensor(s): {', '.join(tensors[:3])}"
                    f"{' …' if len(tensors) > 3 else ''}), which was not uploaded: upload it too"
                    + (f" ({len(missing)} shards are missing)" if len(missing) > 1 else "")
                )
            keep[index] = files[index]
            keep.update({s: files[s] for s in shards})
            break
    else:
        raise UploadError(
            f"no weights among the uploaded files: upload {SAFETENSORS} (or its shards with {SAFETENSORS}{INDEX}, or "
            f"{PICKLE}) with {CONFIG} and {TOKENIZER}"
        )
    _only_known(files, set(keep) | _weight_files(files), "a Hugging Face folder")
    return Upload("huggingface", keep, "", name)


def _tokenizer_files(files: dict[str, bytes]) -> tuple[str, ...]:
    """The tokenizer files the loader reads, as `importers._tokenizer_files` picks them: tokenizer.json, else Marian's."""
    if TOKENIZER in files:
        return (TOKENIZER,)
    if SOURCE_SPM in files and VOCAB in files:
        return (SOURCE_SPM, VOCAB)
    if M2M_SPM in files:
        raise UploadError(
            f"M2M-100's {M2M_SPM} is not converted; a folder with {TOKENIZER} opens: upload that with {CONFIG} and the weights"
        )
    raise UploadError(
        f"a Hugging Face folder needs its {TOKENIZER} too (the fast-tokenizer file; a Marian folder's {SOURCE_SPM} and "
        f"{VOCAB} do instead): upload it with {CONFIG} and the weights"
    )


def _weight_files(files: dict[str, bytes]) -> set[str]:
    """Every weight file of a Hugging Face folder among `files` (the loader reads one set; the others are left out)."""
    out = {n for n in files if n in (SAFETENSORS, PICKLE, SAFETENSORS + INDEX, PICKLE + INDEX)}
    for index in (SAFETENSORS + INDEX, PICKLE + INDEX):
        if index in files:
            try:
                out |= set(parse_index(files[index].decode("utf-8", "replace"), index))
            except CheckpointError:
                pass
    return out


def _nanogpt(files: dict[str, bytes], pickled: list[str], name: str) -> Upload:
    if len(pickled) > 1:
        raise UploadError(f"{', '.join(pickled)}: upload one nanoGPT checkpoint (ckpt.pt) at a time")
    if META not in files and TOKENIZER not in files:
        raise UploadError(
            f"{pickled[0]} needs its vocabulary: upload the {META} of its dataset (nanoGPT's data/DATASET/{META}) with it, "
            f"or a {TOKENIZER} (GPT-2's, for models trained on GPT-2's BPE)"
        )
    _only_known(files, {pickled[0], META, TOKENIZER}, "a nanoGPT checkpoint")
    keep = {CKPT: files[pickled[0]], **{n: files[n] for n in (META, TOKENIZER) if n in files}}
    return Upload("nanogpt", keep, "", name)


def _only_known(files: dict[str, bytes], known: set[str], what: str) -> None:
    unknown = sorted(set(files) - known - LEFT_OUT - set(SETTINGS))
    if unknown:
        raise UploadError(
            f"{_names(unknown)}: not among the files of {what} this app reads or knowingly leaves out; upload {WHAT_WORKS}"
        )


# ---------------------------------------------------------------------------------------------
# Zips: judged from their directory, then extracted into memory within the limits.
# ---------------------------------------------------------------------------------------------


def unzip(data: bytes, name: str, limit: int) -> list[tuple[str, bytes]]:
    """The files of a zip as (base name, contents), every member judged before any is extracted."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        infos = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError) as e:
        raise UploadError(f"{name} is not a valid zip file ({e})") from e
    members = [i for i in infos if not i.is_dir() and not _junk(i.filename)]
    if len(infos) > MAX_MEMBERS * 4 or len(members) > MAX_MEMBERS:
        raise UploadError(f"{name} holds {len(members)} files: a model folder has at most {MAX_MEMBERS}")
    if not members:
        raise UploadError(f"{name} holds no files: zip the model's folder")
    for info in infos:
        _judge_member(info, name, limit)
    total = sum(i.file_size for i in members)
    if total > limit:
        raise UploadError(f"{name} expands to {_mb(total)}, more than this server takes in one upload ({_mb(limit)})")
    paths = [_parts(i.filename) for i in members]
    if len(paths) > 0 and all(len(p) > 1 for p in paths) and len({p[0] for p in paths}) == 1:
        paths = [p[1:] for p in paths]  # one folder at the top: its files
    nested = [p for p in paths if len(p) > 1]
    if nested:
        raise UploadError(
            f"{name} holds files in sub-folders ({'/'.join(nested[0])}): zip the model's folder itself, whose files lie "
            "side by side"
        )
    return [(p[0], _extract(archive, i, name)) for p, i in zip(paths, members, strict=True)]


def _junk(path: str) -> bool:
    """What macOS adds to a zip of a folder (resource forks under __MACOSX/, .DS_Store): not the user's files."""
    parts = _parts(path)
    return bool(parts) and (parts[0] == "__MACOSX" or parts[-1] == ".DS_Store")


def _parts(path: str) -> tuple[str, ...]:
    return tuple(p for p in re.split(r"[/\\]", path) if p not in ("", "."))


def _judge_member(info: zipfile.ZipInfo, name: str, limit: int) -> None:
    """Refuse a member by its directory entry alone: its path, its kind, its size and its compression ratio."""
    path = info.filename
    shown = repr(path[:200])
    if path.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", path) or PurePosixPath(path).is_absolute():
        raise UploadError(f"{name}: member {shown} has an absolute path: refused (zip the folder's files by relative name)")
    if ".." in re.split(r"[/\\]", path):
        raise UploadError(f"{name}: member {shown} points outside the zip ('..'): refused")
    if (info.external_attr >> 16) & 0o170000 == 0o120000:
        raise UploadError(f"{name}: member {shown} is a symbolic link: refused (zip the files themselves)")
    if info.flag_bits & 0x1:
        raise UploadError(f"{name}: member {shown} is encrypted: zip the folder without a password")
    if info.is_dir():
        return
    if info.file_size > limit:
        raise UploadError(f"{name}: {shown} expands to {_mb(info.file_size)}, more than one upload may hold ({_mb(limit)})")
    ratio = info.file_size / max(info.compress_size, 1)
    if info.file_size >= RATIO_FROM and ratio > MAX_RATIO:
        raise UploadError(
            f"{name}: {shown} expands {ratio:,.0f}× ({_mb(info.compress_size)} to {_mb(info.file_size)}): refused as a "
            f"likely zip bomb (at most {MAX_RATIO}×); upload the files themselves, or zip them with ordinary compression"
        )


def _extract(archive: zipfile.ZipFile, info: zipfile.ZipInfo, name: str) -> bytes:
    """One member's bytes, never more than its directory entry declared (a lying entry is refused mid-way)."""
    out = bytearray()
    try:
        with archive.open(info) as f:
            while chunk := f.read(1 << 20):
                out += chunk
                if len(out) > info.file_size:
                    raise UploadError(f"{name}: {info.filename[:200]!r} is larger than its zip entry says: refused")
    except (zipfile.BadZipFile, NotImplementedError, EOFError, OSError, RuntimeError) as e:
        raise UploadError(f"{name}: {info.filename[:200]!r} cannot be extracted ({e})") from e
    return bytes(out)


# ---------------------------------------------------------------------------------------------


def write(upload: Upload, folder: Path) -> Path:
    """Write the upload's files into `folder` (each atomically: a temp file, then a rename); returns what to load."""
    for file, data in upload.files.items():
        fd, tmp = tempfile.mkstemp(suffix=".tmp", dir=folder)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, folder / file)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return folder / upload.open if upload.open else folder


def _names(names) -> str:
    names = sorted(names)
    return ", ".join(n[:80] for n in names[:5]) + (" …" if len(names) > 5 else "")


def _mb(n: int) -> str:
    return f"{n / 2**20:,.1f} MB"
