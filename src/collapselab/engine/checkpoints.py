"""Per-cell checkpoints, written after every generation, so an interrupted run resumes where it stopped.

A generation's checkpoint is what the next generations need and nothing else: its metrics, its snapshot,
and the synthetic pool it sampled. No RNG state is needed: every draw comes from a generator addressed by
(seed, cell, stream, generation) (see rng.py), and the real pool is redrawn from its address. Models are not
needed either: generation g+1 trains on pools, not on model g.

Files, per cell folder (plain arrays, read with ``allow_pickle=False``: never a pickle)::

    gen-000012.npz    generation 12's metrics (one value per replicate) and snapshot: small, always kept
    pool-000012.npz   the synthetic pool generation 12 sampled: kept as long as the policy needs it
    manifest-000012.json  {"generation": 12, "sha256": {...both files...}, "fingerprint": ...}, written last

Files are written atomically (io.write_atomic: temporary name, then rename), so a killed process leaves
either the old file or the new one; there is no fsync, and the checksums catch what a lost disk write would
leave behind. A generation counts only if its manifest exists, its fingerprint matches the cell (spec
and seed) and every file hashes to the manifest's sha256; a corrupt or truncated one is skipped with a
:class:`CheckpointWarning`, and the cell restarts from its last good generation. Policies that train on the
last pool keep the last two pools; accumulating policies keep every pool.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import warnings
import zipfile
from pathlib import Path

import numpy as np

from ..errors import CheckpointWarning
from ..io import is_regular_file, remove_stale_tmp, write_atomic
from ..pool import Pool, StatsPool, pool_from_arrays
from .state import CellState, GenerationRecord

MAX_CHECKPOINT_BYTES = 8 << 30


FORMAT_VERSION = 2  # the layout of checkpoint files; bump it when it changes


@functools.cache
def code_version() -> str:
    """A digest of collapselab's own source files: a checkpoint written by other code is never reused, since
    the same spec can give other numbers there."""
    root = Path(__file__).resolve().parent.parent  # the package, not this folder
    h = hashlib.sha256()
    for f in sorted(root.rglob("*.py")):
        h.update(f.relative_to(root).as_posix().encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def fingerprint(resolved_spec: dict, seed: int, cell_index: int) -> str:
    text = json.dumps(
        {"spec": resolved_spec, "seed": seed, "cell": cell_index, "format": FORMAT_VERSION, "code": code_version()},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(text.encode()).hexdigest()


class CellCheckpoints:
    def __init__(self, folder: Path | str, fingerprint: str, keeps_all_pools: bool, family=None):
        self.folder = Path(folder)
        self.fingerprint = fingerprint
        self.keeps_all_pools = keeps_all_pools
        self.family = family  # decodes stats pools of the exact path

    def _path(self, kind: str, g: int) -> Path:
        return self.folder / f"{kind}-{g:06d}.{'json' if kind == 'manifest' else 'npz'}"

    def save(self, record: GenerationRecord) -> None:
        """Checkpoint one generation: its metrics (name -> (R,)), the pool it sampled, its snapshot and
        distributions."""
        g, pool = record.generation, record.pool
        self.folder.mkdir(parents=True, exist_ok=True)
        arrays = {f"metric:{k}": v for k, v in record.values.items()}
        arrays.update({f"dist:{k}": v for k, v in (record.distribution or {}).items()})
        if record.snapshot is not None:
            arrays["snapshot"] = record.snapshot
        digests = {"gen": _write_npz(self._path("gen", g), arrays)}
        if pool is not None:
            digests["pool"] = _write_npz(self._path("pool", g), pool.to_arrays())
        manifest = {"generation": g, "sha256": digests, "fingerprint": self.fingerprint}
        write_atomic(self._path("manifest", g), json.dumps(manifest).encode())
        if not self.keeps_all_pools:  # the pool of g is needed, and g-1's to fall back on
            self._path("pool", g - 2).unlink(missing_ok=True)

    def _read(self, g: int, kind: str) -> dict[str, np.ndarray] | None:
        """The arrays of one checkpoint file, or None (with a warning) when it cannot be trusted."""
        path = self._path(kind, g)
        manifest = self._path("manifest", g)
        for f in (manifest, path):  # a FIFO or a link to a device would block or never end
            if not is_regular_file(f):
                return self._bad(f, "missing, or not a regular file")
            if f.stat().st_size > MAX_CHECKPOINT_BYTES:
                return self._bad(f, "larger than any checkpoint")
        try:
            meta = json.loads(manifest.read_text())
            data = path.read_bytes()
        except (OSError, ValueError) as e:
            return self._bad(path, f"unreadable ({e.__class__.__name__})")
        if not isinstance(meta, dict) or not isinstance(meta.get("sha256"), dict):
            return self._bad(manifest, "not a checkpoint manifest")
        if meta.get("fingerprint") != self.fingerprint:
            return self._bad(path, "written for another spec, seed or collapselab version")
        if hashlib.sha256(data).hexdigest() != meta.get("sha256", {}).get(kind):
            return self._bad(path, "checksum mismatch (corrupt or truncated)")
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile) as e:
            return self._bad(path, f"unreadable ({e})")

    def _bad(self, path: Path, why: str) -> dict[str, np.ndarray] | None:
        warnings.warn(f"checkpoint {path} skipped: {why}", CheckpointWarning, stacklevel=3)
        return None

    def load(self, last_generation: int) -> CellState | None:
        """The state after the last good generation, or None to start from scratch."""
        if not self.folder.is_dir() or self.folder.is_symlink():
            return None
        remove_stale_tmp(self.folder)  # what a killed writer left behind
        gens = []
        for g in range(last_generation + 1):  # metrics of every generation so far: the longest good prefix
            if not self._path("manifest", g).exists():
                break
            arrays = self._read(g, "gen")
            if arrays is None:
                break
            gens.append(arrays)
        if not gens:
            return None
        last = len(gens) - 1
        if last == last_generation:  # the cell had finished: no pool needed
            return _state(gens, [])
        if self.keeps_all_pools:
            pools = []
            for k in range(last + 1):
                p = self._read(k, "pool")
                if p is None:
                    break
                pools.append(pool_from_arrays(p, self.family))
            return _state(gens[: len(pools)], pools) if pools else None
        for g in (last, last - 1):  # only the last two pools are kept
            if g < 0:
                break
            p = self._read(g, "pool")
            if p is not None:
                return _state(gens[: g + 1], [pool_from_arrays(p, self.family)])
        return None


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> str:
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]  # numpy's stub types the first keyword as allow_pickle
    data = buf.getvalue()
    write_atomic(path, data)
    return hashlib.sha256(data).hexdigest()


def _state(gens: list[dict], pools: list[Pool | StatsPool]) -> CellState:
    """The state after the checkpointed generations (``generation``: the next one to run)."""
    names = [k for k in gens[0] if k.startswith("metric:")]
    metrics = {k.removeprefix("metric:"): np.stack([a[k] for a in gens]) for k in names}
    snapshots = {g: a["snapshot"] for g, a in enumerate(gens) if "snapshot" in a}
    distributions = {g: {k[5:]: a[k] for k in a if k.startswith("dist:")} for g, a in enumerate(gens)}
    return CellState(
        len(gens), metrics, pools, snapshots=snapshots, distributions={g: d for g, d in distributions.items() if d}
    )
