"""One root seed, spawned deterministically per cell, stream and generation.

Every random draw of a run comes from a generator addressed by ``(seed, cell, stream, generation, block)``:
a cell's chains are split into replicate blocks of the spec's ``replicate_block`` chains (engine/loop.py), each drawing
from its own generators, so a block is a unit of work whose numbers do not depend on the others. Block 0's
address is the one without a block, ``(seed, cell, stream, generation)``: a cell of at most one block's chains
draws what it drew before blocks existed.
An address, not a position in a shared sequence: the numbers a cell draws never depend on the order
cells run in, on the executor, or on what other streams drew, and a generation's generators can be
rebuilt without replaying earlier ones.

All replicate chains of a block draw from one generator per address, in one vectorised call: a
generator per replicate would force a Python loop over replicates, which is exactly what the
replicate axis exists to avoid.
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np


class Stream(IntEnum):
    DATA = 0  # the real pool, the held-out set, the ground truth's random parts
    POLICY = 1  # subsampling of pools and fresh real draws when building a training set
    FIT = 2  # randomness inside fitting (EM initialisation, ...)
    SAMPLE = 3  # synthetic data drawn from a fitted model
    CURATE = 4  # curation stages (random features of a discriminator, ...)
    SNAPSHOT = 5  # samples drawn only for the report's distribution snapshots
    SYNTHESIS = 6  # cluster-mirrored synthesis (clustering the real pool, sampling per cluster)
    POISON = 7  # records an attack injects
    SCREEN = 8  # randomness of poisoning screens (isolation forests) and the refill of removed records


def replicate_blocks(replicates: int, block: int) -> list[int]:
    """The chain counts of a cell's replicate blocks of ``block`` chains, in order (the last one may be smaller)."""
    full, rest = divmod(replicates, block)
    return [block] * full + ([rest] if rest else [])


def data_generator(spec, seed: int, cell: int, block: int = 0) -> np.random.Generator:
    """The DATA stream of a cell's block: its own, or cell 0's for every cell when the spec shares real data
    (``shared_data = true``: cells that differ only in policy or model then compare on the same records)."""
    return generator(seed, 0 if spec.shared_data else cell, Stream.DATA, 0, block)


def generator(seed: int, cell: int, stream: Stream, generation: int = 0, block: int = 0) -> np.random.Generator:
    key = (cell, int(stream), generation) + ((block,) if block else ())
    ss = np.random.SeedSequence(entropy=seed, spawn_key=key)
    return np.random.Generator(np.random.PCG64(ss))
