"""Per-cell checkpoints, written after every generation, so an interrupted run resumes where it stopped.

A generation's checkpoint is the state the next generation needs and nothing else: the metrics so far, the
synthetic pool it sampled, and the snapshots so far. No RNG state is needed: every draw comes from a
generator addressed by (seed, cell, stream, generation) (see rng.py), and the real pool is redrawn from its
address. Models are not needed either: generation g+1 trains on pools, not on model g.

Files, per cell folder::

    gen-000012.npz    plain arrays (np.load(..., allow_pickle=False): never a pickle)
    gen-000012.json   {"generation": 12, "sha256": ..., "fingerprint": ...}, written after the .npz

Both are written atomically (temporary file, fsync, rename). A checkpoint counts only if its manifest exists,
its fingerprint matches the cell (spec and seed) and the .npz hashes to the manifest's sha256; a corrupt or
truncated one is skipped with a :class:`CheckpointWarning` and the cell restarts from its last good generation.
Policies that train on the last pool only keep the last two checkpoints; accumulating policies keep every
generation's pool, each in its own file, each checked.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .pool import Pool


class CheckpointWarning(UserWarning):
    """A checkpoint was unusable (corrupt, truncated, from another spec) and was skipped."""


@dataclass
class CellState:
    generation: int  # the last generation completed
    metrics: dict[str, np.ndarray]  # name -> (generation + 1, R)
    pools: list[Pool]  # the synthetic pools the policy keeps, oldest first
    snapshots: dict[int, np.ndarray]


def fingerprint(resolved_spec: dict, seed: int, cell_index: int) -> str:
    text = json.dumps({"spec": resolved_spec, "seed": seed, "cell": cell_index}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class CellCheckpoints:
    def __init__(self, folder: Path | str, fingerprint: str, keeps_all_pools: bool):
        self.folder = Path(folder)
        self.fingerprint = fingerprint
        self.keeps_all_pools = keeps_all_pools

    def _npz(self, g: int) -> Path:
        return self.folder / f"gen-{g:06d}.npz"

    def _manifest(self, g: int) -> Path:
        return self.folder / f"gen-{g:06d}.json"

    def save(self, g: int, metrics: dict[str, np.ndarray], pool: Pool | None, snapshots: dict[int, np.ndarray]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        arrays = {f"metric:{k}": v for k, v in metrics.items()}
        arrays.update({f"snapshot:{k}": v for k, v in snapshots.items()})
        if pool is not None:
            arrays["pool:x"], arrays["pool:generation"] = pool.x, pool.generation
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        data = buf.getvalue()
        _write_atomic(self._npz(g), data)
        manifest = {"generation": g, "sha256": hashlib.sha256(data).hexdigest(), "fingerprint": self.fingerprint}
        _write_atomic(self._manifest(g), json.dumps(manifest).encode())
        if not self.keeps_all_pools:  # the last two are enough: the latest, and one to fall back on
            for old in range(g - 2, -1, -1):
                if not self._manifest(old).exists() and not self._npz(old).exists():
                    break
                self._manifest(old).unlink(missing_ok=True)
                self._npz(old).unlink(missing_ok=True)

    def _read(self, g: int) -> dict[str, np.ndarray] | None:
        """The arrays of generation g's checkpoint, or None (with a warning) when it cannot be trusted."""
        manifest, npz = self._manifest(g), self._npz(g)
        try:
            meta = json.loads(manifest.read_text())
            data = npz.read_bytes()
        except (OSError, ValueError) as e:
            return self._bad(npz, f"unreadable ({e.__class__.__name__})")
        if meta.get("fingerprint") != self.fingerprint:
            return self._bad(npz, "written for another spec or seed")
        if hashlib.sha256(data).hexdigest() != meta.get("sha256"):
            return self._bad(npz, "checksum mismatch (corrupt or truncated)")
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except (ValueError, OSError, zipfile.BadZipFile) as e:
            return self._bad(npz, f"unreadable ({e})")

    def _bad(self, path: Path, why: str) -> None:
        warnings.warn(f"checkpoint {path} skipped: {why}", CheckpointWarning, stacklevel=3)
        return None

    def generations(self) -> list[int]:
        if not self.folder.is_dir():
            return []
        return sorted(int(p.stem.removeprefix("gen-")) for p in self.folder.glob("gen-*.json"))

    def load(self) -> CellState | None:
        """The state after the last good generation, or None to start from scratch."""
        gens = self.generations()
        if self.keeps_all_pools:
            good: dict[int, dict] = {}
            for g in range(len(gens)):  # every pool up to g must be intact: the longest good prefix
                if g not in gens:
                    break
                arrays = self._read(g)
                if arrays is None:
                    break
                good[g] = arrays
            if not good:
                return None
            last = max(good)
            pools = [_pool(good[g]) for g in range(last + 1) if "pool:x" in good[g]]
            return _state(last, good[last], pools)
        for g in reversed(gens):
            arrays = self._read(g)
            if arrays is not None:
                return _state(g, arrays, [_pool(arrays)] if "pool:x" in arrays else [])
        return None

    def clear(self) -> None:
        if self.folder.is_dir():
            for p in self.folder.iterdir():
                p.unlink()
            self.folder.rmdir()


def _pool(arrays: dict) -> Pool:
    return Pool(arrays["pool:x"], arrays["pool:generation"])


def _state(g: int, arrays: dict, pools: list[Pool]) -> CellState:
    metrics = {k.removeprefix("metric:"): v for k, v in arrays.items() if k.startswith("metric:")}
    snapshots = {int(k.removeprefix("snapshot:")): v for k, v in arrays.items() if k.startswith("snapshot:")}
    return CellState(g, metrics, pools, snapshots)
