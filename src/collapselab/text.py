"""Text as records: word-level token ids in fixed-length blocks, one shared vocabulary per corpus.

Every text family trains on and samples the same records, int32 arrays of shape (R, N, L): L word ids per
record (a block of running text, 64 tokens as in Shumailov et al.). Word-level ids make the text metrics
(vocabulary, distinct-n, rare-word survival) mean the same thing for every family; families with their
own tokenizer (BPE, a pretrained LM's) turn records into strings with :meth:`Vocabulary.decode` and their
generations back into records with :meth:`Vocabulary.encode`. Words a model invents that are not in the
corpus map to ``<unk>`` (id 0).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

import numpy as np

UNK = 0
_WORD = re.compile(r"\w+(?:['’\-]\w+)*|[^\w\s]")
_NO_SPACE_BEFORE = re.compile(r" ([.,;:!?)\]}'’])")
_NO_SPACE_AFTER = re.compile(r"([(\[{]) ")


def tokenize(text: str, lowercase: bool = False) -> list[str]:
    return _WORD.findall(text.lower() if lowercase else text)


def detokenize(words: list[str]) -> str:
    s = " ".join(words)
    return _NO_SPACE_AFTER.sub(r"\1", _NO_SPACE_BEFORE.sub(r"\1", s))


@dataclass(frozen=True, eq=False)
class Vocabulary:
    words: tuple[str, ...]  # id -> word; id 0 is <unk>

    @classmethod
    def build(cls, tokens: list[str]) -> Vocabulary:
        counts = Counter(tokens)
        # most frequent first (ties alphabetical): ids are stable for a corpus and small ids are common words
        return cls(("<unk>", *sorted(counts, key=lambda w: (-counts[w], w))))

    def __len__(self) -> int:
        return len(self.words)

    @property
    def index(self) -> dict[str, int]:
        if "_index" not in self.__dict__:  # built once, on first use
            object.__setattr__(self, "_index", {w: i for i, w in enumerate(self.words)})
        return self.__dict__["_index"]

    def ids(self, tokens: list[str]) -> np.ndarray:
        index = self.index
        return np.fromiter((index.get(t, UNK) for t in tokens), dtype=np.int32, count=len(tokens))

    def decode(self, record: np.ndarray) -> str:
        return detokenize([self.words[i] for i in np.asarray(record).ravel()])

    def encode(self, text: str, length: int, lowercase: bool = False) -> np.ndarray:
        """A record of exactly ``length`` ids: the text's first words, padded with <unk> when it is shorter."""
        ids = self.ids(tokenize(text, lowercase))[:length]
        return np.concatenate([ids, np.full(length - ids.size, UNK, dtype=np.int32)])


def blocks(ids: np.ndarray, length: int) -> np.ndarray:
    """Contiguous, non-overlapping blocks of ``length`` ids: shape (len(ids) // length, length)."""
    B = ids.size // length
    return ids[: B * length].reshape(B, length)
