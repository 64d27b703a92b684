"""Real text sources, the word n-gram family and the text metrics, each against an independent computation."""

import json
from collections import Counter

import numpy as np
import pytest
from helpers import metric

import collapselab as cl
from collapselab.errors import SpecError
from collapselab.families import Reference
from collapselab.families.ngram import EVAL_FLOOR, NGramFamily
from collapselab.metrics.text import distinct_n, rare_words, repetition, text_metrics
from collapselab.sources import get_source
from collapselab.text import Vocabulary, detokenize, tokenize


@pytest.mark.parametrize(
    "corpus", [pytest.param(c, marks=pytest.mark.data(c)) for c in ("shakespeare", "austen", "kjv")]
)
def test_corpus_split_is_fixed_disjoint_and_real(corpus):
    truth = get_source(corpus, {"block": 32}).truth(10, None)
    again = get_source(corpus, {"block": 32, "split_seed": 0}).truth(99, np.random.default_rng(5))
    assert truth.train.shape[1] == 32 and len(truth.train) > 10_000  # at least 320k words of real text
    np.testing.assert_array_equal(truth.heldout_records, again.heldout_records)  # the run seed plays no part
    assert 0.09 < len(truth.heldout_records) / (len(truth.train) + len(truth.heldout_records)) < 0.11
    train = {r.tobytes() for r in truth.train[:5000]}
    assert not any(r.tobytes() in train for r in truth.heldout_records[:2000])
    text = truth.vocab.decode(truth.train[0])
    assert len(text.split()) >= 20 and (truth.train > 0).all()  # every word of the corpus is in its vocabulary
    other = get_source(corpus, {"block": 32, "split_seed": 1}).truth(10, None)
    assert not np.array_equal(other.heldout_records[:50], truth.heldout_records[:50])


@pytest.mark.data("kjv")
def test_real_pool_draws_distinct_records_per_replicate():
    truth = get_source("kjv", {"max_tokens": 6400, "block": 16}).truth(10, None)
    x = truth.sample((5, 40), np.random.default_rng(0))
    assert x.shape == (5, 40, 16)
    for r in range(5):
        assert len({row.tobytes() for row in x[r]}) == 40
    assert not np.array_equal(x[0], x[1])


def test_tokenize_decode_encode_round_trip():
    words = tokenize("Hath not a Jew eyes? If you prick us, do we not bleed — o'er the sea-side.")
    assert words[:5] == ["Hath", "not", "a", "Jew", "eyes"] and "o'er" in words and "sea-side" in words
    assert detokenize(words).startswith("Hath not a Jew eyes? If you prick us, do")
    vocab = Vocabulary.build(words)
    rec = vocab.ids(words)
    assert (vocab.encode(vocab.decode(rec), len(rec)) == rec).all()
    assert vocab.encode("utterly unknown words", 4).tolist() == [0, 0, 0, 0]


def _python_distinct(x, n):
    grams = [tuple(rec[i : i + n]) for rec in x for i in range(len(rec) - n + 1)]
    return len(set(grams)) / len(grams)


def test_text_metrics_against_plain_python():
    rng = np.random.default_rng(3)
    x = rng.integers(1, 12, size=(3, 20, 9))
    x[2] = x[2] % 3 + 1  # a collapsed replicate
    for n in (1, 2, 3):
        np.testing.assert_allclose(distinct_n(x, n), [_python_distinct(x[r], n) for r in range(3)])
    rep = [np.mean([1 - _python_distinct(rec[None], 4) for rec in x[r]]) for r in range(3)]
    np.testing.assert_allclose(repetition(x), rep)
    real = rng.integers(1, 30, size=(3, 4, 9))
    rare = rare_words(real, 30, 1)
    m = text_metrics(x, 30, rare)
    for r in range(3):
        counts = Counter(real[r].ravel().tolist())
        once = {w for w, c in counts.items() if c == 1}
        seen = set(x[r].ravel().tolist())
        assert m["vocab"][r] == len(seen)
        assert m["rare_word_survival"][r] == pytest.approx(len(once & seen) / len(once))
    assert m["distinct_2"][2] < m["distinct_2"][0]


def _family(records, order, **params):
    vocab_size = int(records.max()) + 1
    truth = type("T", (), {"vocab": range(vocab_size)})()
    fam = NGramFamily(NGramFamily.Params(order=order, **params), Reference(truth, records[0], records.shape[1]))
    return fam


def test_ngram_probabilities_match_counted_trigrams():
    rng = np.random.default_rng(0)
    x = rng.integers(1, 6, size=(2, 30, 12))
    fam = _family(x, 3)
    model = fam.fit(x, None)
    V = fam.V
    for r in range(2):
        tri, bi = Counter(), Counter()
        for rec in x[r]:
            padded = [V, V, *rec.tolist()]
            for i in range(2, len(padded)):
                tri[tuple(padded[i - 2 : i + 1])] += 1
                bi[tuple(padded[i - 2 : i])] += 1
        held = x[1 - r, :5]  # the other replicate's records: some trigrams unseen
        nll = []
        for rec in held:
            padded = [V, V, *rec.tolist()]
            for i in range(2, len(padded)):
                ctx, w = tuple(padded[i - 2 : i]), padded[i]
                if bi[ctx]:
                    p = tri[(*ctx, w)] / bi[ctx]
                else:  # back off to the bigram, then the unigram
                    uni = Counter(x[r].ravel().tolist())
                    big = Counter()
                    bctx = Counter()
                    for rr in x[r]:
                        pp = [V, *rr.tolist()]
                        for j in range(1, len(pp)):
                            big[(pp[j - 1], pp[j])] += 1
                            bctx[pp[j - 1]] += 1
                    p = big[(ctx[1], w)] / bctx[ctx[1]] if bctx[ctx[1]] else uni[w] / x[r].size
                nll.append(-np.log((1 - EVAL_FLOOR) * p + EVAL_FLOOR / (V - 1)))
        np.testing.assert_allclose(model.nll(np.broadcast_to(held, (2, *held.shape)))[r], np.mean(nll), rtol=1e-10)


def test_ngram_samples_follow_the_counts():
    rng = np.random.default_rng(1)
    x = rng.integers(1, 5, size=(1, 200, 6))
    x[0, :, 1] = np.where(x[0, :, 0] == 1, 2, x[0, :, 1])  # after word 1 in position 0 always comes 2
    model = _family(x, 2).fit(x, None)
    s = model.sample(4000, np.random.default_rng(2))
    first = Counter(s[0, :, 0].tolist())
    expected = Counter(x[0, :, 0].tolist())
    from scipy import stats

    f_obs = np.array([first[w] for w in range(1, 5)])
    f_exp = np.array([expected[w] for w in range(1, 5)]) / 200 * 4000
    assert stats.chisquare(f_obs, f_exp).pvalue > 1e-3
    # every sampled bigram was seen in training (maximum likelihood, contexts always seen here)
    seen = {(a, b) for rec in x[0] for a, b in zip(rec[:-1], rec[1:])}
    assert all((a, b) in seen for rec in s[0] for a, b in zip(rec[:-1], rec[1:]))


TAILS = {
    "generations": 8,
    "replicates": 6,
    "seed": 3,
    "data": {"source": "shakespeare", "n": 300, "heldout": 100, "params": {"max_tokens": 200_000}},
    "model": {"family": "ngram", "params": {"order": 3}},
    "sweep": {"policy": [{"kind": "replace"}, {"kind": "mix", "real_fraction": 0.5}]},
}


@pytest.mark.data("shakespeare")
def test_rare_words_vanish_under_replace_and_survive_with_real_data():
    r = cl.run(TAILS, save=False)
    replace, se = metric(r, "rare_word_survival", "0")
    mixed, _ = metric(r, "rare_word_survival", "1")
    assert np.all(np.diff(replace) < 0), replace  # falls generation after generation
    assert replace[-1] < 0.5 * replace[0]
    assert mixed[-1] > 0.6 * mixed[0] and mixed[-1] > 2 * replace[-1]
    assert np.all(np.abs(np.diff(mixed[2:])) < 0.05)  # holds: a plateau, not a decline
    ppl_gen0, _ = metric(r, "ppl_gen0", "0")
    assert ppl_gen0[-1] > ppl_gen0[0]  # later text is less and less like what generation 0 wrote


def test_user_text_sources(tmp_path):
    (tmp_path / "a.txt").write_text("the cat sat on the mat . " * 50)
    (tmp_path / "b.txt").write_text("a dog ran in the park ! " * 50)
    (tmp_path / "docs.jsonl").write_text(
        "\n".join(json.dumps({"body": "one two three four five six " * 10}) for _ in range(8))
    )
    folder = get_source("text-file", {"path": str(tmp_path), "block": 8}).truth(4, None)
    assert {"cat", "dog"} <= set(folder.vocab.words)
    jsonl = get_source("text-file", {"path": str(tmp_path / "docs.jsonl"), "field": "body", "block": 6}).truth(4, None)
    assert len(jsonl.train) + len(jsonl.heldout_records) == 8 * 10
    with pytest.raises(SpecError, match="line 1 has no text field 'text'"):
        get_source("text-file", {"path": str(tmp_path / "docs.jsonl")}).truth(4, None)
    with pytest.raises(SpecError, match="no such file"):
        get_source("text-file", {"path": str(tmp_path / "missing.txt")}).truth(4, None)


@pytest.mark.data("kjv")
def test_too_large_n_for_a_corpus_is_a_spec_error():
    spec = {**TAILS, "data": {"source": "kjv", "n": 10_000, "params": {"max_tokens": 64_000}}, "sweep": {}}
    with pytest.raises(SpecError, match=r"data.n = 10000: data.source 'kjv' has only \d+ records"):
        cl.run(spec, save=False)


def test_missing_corpus_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setenv("COLLAPSELAB_DATA", str(tmp_path))
    with pytest.raises(SpecError, match=r"austen is not prepared; apt-get download r-cran-janeaustenr .*make data"):
        get_source("austen", {"split_seed": 7}).truth(10, None)


@pytest.mark.neural
@pytest.mark.data("minilm")
def test_embedding_diversity_sees_meaning_with_the_packaged_minilm():
    from collapselab.metrics.text import embedding_diversity

    varied = ["The king is dead.", "Bake the bread at dawn.", "Rain fell on the harbour.", "She paid the debt."]
    alike = ["The king is dead.", "The king has died.", "Our king is dead.", "The monarch is dead."]
    d = embedding_diversity([varied, alike])
    assert 0 < d[1] < d[0] < 1.5
