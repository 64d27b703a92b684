"""Reading what an audit compares: tables (CSV, TSV, Parquet), text (TXT, JSONL) and images (NPY).

Every bad input is a one-line InputError (exit status 2): missing or empty files, files over the size limit,
unknown formats, mismatched columns, non-numeric values where the reference has numbers, missing values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..datasets import jsonl_objects
from ..errors import InputError
from ..io import check_input_file
from ..synthesize import column_kinds, read_table
from ..text import Vocabulary, blocks, tokenize

KINDS = {".csv": "table", ".tsv": "table", ".parquet": "table", ".txt": "text", ".jsonl": "text", ".npy": "image"}
BLOCK = 64  # words per text record, as in the loop


@dataclass
class Records:
    kind: str  # table | text | image
    x: object  # DataFrame (table), (N, L) word ids (text), (N, 28, 28) floats in [0, 1] (image)
    origins: list | None = None  # the provenance column, where there is one
    info: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.x)


MIN_RECORDS = 10  # fewer records in the reference or the candidate measure nothing (MMD, tails, a verdict)


def kind_of(path: str | Path, what: str) -> str:
    p = check_input_file(path, what)
    if p.stat().st_size == 0:
        raise InputError(f"{what} {path}: the file is empty")
    kind = KINDS.get(p.suffix.lower())
    if kind is None:
        raise InputError(f"{what} {path}: unknown format {p.suffix!r}; allowed: {', '.join(KINDS)}")
    return kind


def read_pair(reference, candidate, provenance: str = "origin", examples=None):
    """(reference, candidate, synthetic examples or None) as Records of one kind, encoded alike."""
    kinds = {kind_of(reference, "--reference"), kind_of(candidate, "--candidate")}
    if examples is not None:
        kinds.add(kind_of(examples, "--synthetic-examples"))
    if len(kinds) > 1:
        raise InputError(
            f"--reference and --candidate must be the same kind of data, got {' and '.join(sorted(kinds))}"
        )
    kind = kinds.pop()
    if kind == "table":
        ref, cand, ex = _tables(reference, candidate, provenance, examples)
    elif kind == "text":
        ref, cand, ex = _texts(reference, candidate, provenance, examples)
    else:
        ref, cand, ex = (
            None if p is None else _image(p, w)
            for p, w in ((reference, "--reference"), (candidate, "--candidate"), (examples, "--synthetic-examples"))
        )
    for records, path, what in ((ref, reference, "--reference"), (cand, candidate, "--candidate")):
        if len(records) < MIN_RECORDS:
            raise InputError(
                f"{what} {path}: {len(records)} records are too few to audit (need at least {MIN_RECORDS})"
            )
    return ref, cand, ex


def _tables(reference, candidate, provenance, examples):
    ref = read_table(reference, "--reference").drop(columns=[provenance], errors="ignore")
    out = []
    for path, what in ((candidate, "--candidate"), (examples, "--synthetic-examples")):
        if path is None:
            out.append(None)
            continue
        df = read_table(path, what)
        origins = df.pop(provenance).tolist() if provenance in df.columns else None
        if set(df.columns) != set(ref.columns):
            extra = sorted(set(df.columns) - set(ref.columns))
            missing = sorted(set(ref.columns) - set(df.columns))
            raise InputError(
                f"{what} {path}: columns do not match the reference (extra: {extra or 'none'}; "
                f"missing: {missing or 'none'})"
            )
        df = df[list(ref.columns)]
        for col, k in column_kinds(ref).items():
            if k == "numeric" and not pd.api.types.is_numeric_dtype(df[col]):
                bad = next(v for v in df[col] if pd.isna(pd.to_numeric(pd.Series([v]), errors="coerce")[0]))
                raise InputError(f"{what} {path}: column {col!r} holds {bad!r} where the reference has numbers")
        out.append(Records("table", df, origins))
    return Records("table", ref), out[0], out[1]


def _read_text(path, provenance) -> tuple[list[str], list | None]:
    p = Path(path)
    if p.suffix.lower() == ".txt":
        try:
            return [p.read_text(encoding="utf-8")], None
        except UnicodeDecodeError as e:
            raise InputError(f"{path}: not UTF-8 text (byte {e.start})") from None

    texts, origins = [], []
    for i, row in jsonl_objects(p, str(path)):
        if not isinstance(row.get("text"), str):
            raise InputError(f"{path}: line {i} needs a string field 'text'")
        texts.append(row["text"])
        origins.append(row.get(provenance))
    if not texts:
        raise InputError(f"{path}: no records")
    return texts, (origins if all(o is not None for o in origins) else None)


def _texts(reference, candidate, provenance, examples):
    ref_docs, _ = _read_text(reference, provenance)
    tokens = [t for d in ref_docs for t in tokenize(d)]
    if len(tokens) < 2 * BLOCK:
        raise InputError(f"--reference {reference}: {len(tokens)} words are too few (need at least {2 * BLOCK})")
    read = {path: _read_text(path, provenance) for path in (candidate, examples) if path is not None}
    # one vocabulary over every input: a candidate's words the reference lacks stay distinct words, not one <unk>
    # (that would read as lost diversity)
    vocab = Vocabulary.build(tokens + [t for docs, _ in read.values() for d in docs for t in tokenize(d)])

    def encode(docs, path):
        """(records, their texts): a TXT file is cut into blocks, a JSONL line is one record cut to a block."""
        if Path(path).suffix.lower() == ".txt":
            out = blocks(vocab.ids(tokenize(docs[0])), BLOCK)
            texts = [vocab.decode(r) for r in out]
        else:  # one record per JSONL line, cut or padded to a block
            out = np.stack([vocab.encode(d, BLOCK) for d in docs])
            texts = list(docs)
        if len(out) == 0:
            raise InputError(f"{path}: fewer than {BLOCK} words")
        return out, texts

    x, texts = encode(ref_docs, reference)
    ref = Records("text", x, info={"vocab": vocab, "texts": texts})
    out = []
    for path in (candidate, examples):
        if path is None:
            out.append(None)
            continue
        docs, origins = read[path]
        x, texts = encode(docs, path)
        out.append(Records("text", x, origins, {"vocab": vocab, "texts": texts}))
    return ref, out[0], out[1]


def _image(path, what) -> Records:
    try:
        x = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise InputError(f"{what} {path}: not a plain .npy array ({e})") from None
    if x.ndim == 2 and x.shape[1] == 784:
        x = x.reshape(-1, 28, 28)
    if x.ndim != 3 or x.shape[0] == 0:
        raise InputError(f"{what} {path}: expected images (N, 28, 28) or (N, 784), got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise InputError(f"{what} {path}: non-numeric pixels ({x.dtype})")
    x = x.astype(float)
    if not np.isfinite(x).all():
        raise InputError(f"{what} {path}: NaN or infinite pixels")
    if x.max() > 1.0:
        x = x / 255.0
    return Records("image", x)
