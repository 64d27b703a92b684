"""Every registered plug-in passes the contract checks of collapselab.testing, and so do plug-ins a user writes
in a folder of their own (a family, a policy and a curation stage, one file each), run from a spec."""

import textwrap

import numpy as np
import pytest

import collapselab as cl
from collapselab.plugins import CURATION_STAGES, FAMILIES, POLICIES, SOURCES
from collapselab.testing import check_family, check_policy, check_source, check_stage

# networks are checked on 2 chains and 2 generations: each check fits every chain 3 times over (two runs and
# a resume), and a pretrained LM at the default 6 x 3 took over 20 minutes
NETWORK_SIZE = {"generations": 2, "replicates": 2}

# what each built-in needs beyond the defaults of collapselab.testing; families that train networks are slow
FAMILY_CASES = {
    "gaussian": {},
    "gmm": {"params": {"components": 2, "max_iter": 20}},
    "kde": {"params": {"bandwidth": 0.3}},
    "categorical": {},
    "bernoulli": {},
    "poisson": {},
    "linear": {},
    "logistic": {},
    "poisson-regression": {},
    "symmetric-mixture": {"data": {"source": "blobs", "n": 40, "params": {"means": [[-1.5], [1.5]]}}},
    "ngram": {"marks": [pytest.mark.data("shakespeare")]},
    "transformer": {
        "params": {"layers": 1, "width": 32, "heads": 2, "bpe_vocab": 300, "epochs": 1},
        "size": NETWORK_SIZE,
        "marks": [pytest.mark.neural, pytest.mark.slow],
    },
    "pretrained": {
        "data": {"source": "shakespeare", "n": 8, "heldout": 8, "params": {"max_tokens": 20_000}},
        "params": {"block": 32, "sample_batch": 8},
        "size": NETWORK_SIZE,
        "marks": [pytest.mark.neural, pytest.mark.data("smollm2"), pytest.mark.slow],
    },
    "vae": {
        "params": {"latent": 4, "hidden": 32, "epochs": 1},
        "size": NETWORK_SIZE,
        "marks": [pytest.mark.neural, pytest.mark.slow],
    },
}
SOURCE_CASES = {
    "shakespeare": {"params": {"max_tokens": 20_000}, "marks": [pytest.mark.data("shakespeare")]},
    "austen": {"params": {"max_tokens": 20_000}, "marks": [pytest.mark.data("austen")]},
    "kjv": {"params": {"max_tokens": 20_000}, "marks": [pytest.mark.data("kjv")]},
    "text-file": {"file": "corpus.txt"},
    "mnist": {"marks": [pytest.mark.data("mnist")]},
    "fashion-mnist": {"marks": [pytest.mark.data("fashion-mnist")]},
    "digits": {},
    "image-file": {"file": "images.npy"},
    "mixture": {"params": {"weights": [0.5, 0.5], "means": [[0.0], [3.0]], "covs": [[[1.0]], [[1.0]]]}},
    "blobs": {"params": {"means": [[0.0, 0.0], [4.0, 4.0]]}},
    "categorical": {"params": {"probs": [0.5, 0.3, 0.2]}},
    "zipf": {"params": {"categories": 8}},
    "bernoulli": {"params": {"p": 0.3}},
    "poisson": {"params": {"rate": 2.0}},
    "linear": {"params": {"dim": 2}},
    "logistic": {"params": {"dim": 2}},
    "poisson-regression": {"params": {"dim": 3, "scale": 0.5}},
    "moons": {"params": {"noise": 0.1}},
    "circles": {"params": {"noise": 0.05, "factor": 0.5}},
    "swiss-roll": {},
}
STAGE_CASES = {
    "likelihood": {},
    "discriminator": {},
    "verifier": {"params": {"function": "collapselab.curation.examples:random_scores"}},
    "llm-judge": {
        "marks": [pytest.mark.neural, pytest.mark.data("smollm2"), pytest.mark.slow],
        "text": True,
        "size": NETWORK_SIZE,
    },
}


def _cases(registry, cases):
    names = registry.names()
    assert set(cases) <= set(names), f"cases for plug-ins that are not registered: {set(cases) - set(names)}"
    return [pytest.param(n, marks=cases.get(n, {}).get("marks", [])) for n in names]


def test_every_builtin_kind_has_a_contract_case():
    """A plug-in added to collapselab is checked as soon as it is registered (the parameter lists below are
    read from the registries, not written out)."""
    assert set(FAMILY_CASES) == set(FAMILIES.names())
    assert set(STAGE_CASES) == set(CURATION_STAGES.names())


@pytest.mark.parametrize("name", _cases(FAMILIES, FAMILY_CASES))
def test_family_contract(name):
    case = FAMILY_CASES.get(name, {})
    check_family(FAMILIES[name], data=case.get("data"), params=case.get("params"), size=case.get("size"))


@pytest.mark.parametrize("name", _cases(SOURCES, SOURCE_CASES))
def test_source_contract(name, tmp_path):
    case = SOURCE_CASES.get(name, {})
    params = dict(case.get("params", {}))
    if case.get("file") == "corpus.txt":
        words = [f"w{int(i)}" for i in np.random.default_rng(0).zipf(1.5, 4000) % 200]
        (tmp_path / "corpus.txt").write_text(" ".join(words) + "\n", encoding="utf-8")
        params["path"] = str(tmp_path / "corpus.txt")
    elif case.get("file") == "images.npy":
        np.save(tmp_path / "images.npy", np.random.default_rng(0).random((80, 28, 28)))
        params["path"] = str(tmp_path / "images.npy")
    check_source(SOURCES[name], params)


@pytest.mark.parametrize("name", _cases(POLICIES, {}))
def test_policy_contract(name):
    check_policy(POLICIES[name])


@pytest.mark.parametrize("name", _cases(CURATION_STAGES, STAGE_CASES))
def test_curation_stage_contract(name):
    case = STAGE_CASES[name]
    if case.get("text"):
        data = {"source": "shakespeare", "n": 40, "heldout": 40, "params": {"max_tokens": 20_000}}
        check_stage(CURATION_STAGES[name], data=data, family="ngram", size=case.get("size"))
    else:
        check_stage(CURATION_STAGES[name], params=case.get("params"))


PLUGIN_FAMILY = '''
    """A family in one file: the mean of the training records, with unit-variance Gaussian noise around it."""
    import numpy as np
    from pydantic import Field

    import collapselab as cl


    class MeanModel:
        def __init__(self, mean):
            self.mean = mean  # (R, d)

        def sample(self, m, rng):
            R, d = self.mean.shape
            return self.mean[:, None, :] + self.scale * rng.standard_normal((R, m, d))


    @cl.register_family
    class ShiftedMean(cl.Family):
        name = "user-shifted-mean"
        tags = cl.FamilyTags(accepts=("continuous",))
        spread_metrics = ("spread",)

        class Params(cl.Params):
            scale: float = Field(default=1.0, gt=0)

        def fit(self, x, rng):
            model = MeanModel(x.mean(axis=1))
            model.scale = self.params.scale
            return model

        def metrics(self, model):
            return {"mean_norm": np.linalg.norm(model.mean, axis=1), "spread": np.full(model.mean.shape[0], model.scale)}
'''

PLUGIN_POLICY = '''
    """A policy in one file: the real pool in even generations, the last synthetic pool in odd ones."""
    from collapselab.plugins import POLICIES
    from collapselab.policies import Policy


    @POLICIES.register
    class Alternate(Policy):
        kind = "user-alternate"

        def _build(self, g, real, synthetic, draw_real, rng):
            return real if g % 2 == 0 else synthetic[-1]
'''

PLUGIN_STAGE = '''
    """A curation stage in one file: keep the records nearest the real mean."""
    import numpy as np

    from collapselab.curation.judges import Stage
    from collapselab.plugins import CURATION_STAGES


    @CURATION_STAGES.register
    class NearMean(Stage):
        kind = "user-near-mean"
        kinds = ("continuous",)

        def score(self, records):
            centre = self.ctx.real.mean(axis=1, keepdims=True)  # (R, 1, d)
            return -np.linalg.norm(records - centre, axis=-1)
'''


@pytest.fixture
def user_plugins(tmp_path):
    """A user's plug-in package in a folder of its own, one file per plug-in; unregistered afterwards."""
    package = tmp_path / "userplug"
    package.mkdir()
    (package / "__init__.py").write_text("")
    for module, text in (("family", PLUGIN_FAMILY), ("policy", PLUGIN_POLICY), ("stage", PLUGIN_STAGE)):
        (package / f"{module}.py").write_text(textwrap.dedent(text))
    yield tmp_path
    FAMILIES.unregister("user-shifted-mean")
    POLICIES.unregister("user-alternate")
    CURATION_STAGES.unregister("user-near-mean")
    import sys

    for m in [m for m in sys.modules if m == "userplug" or m.startswith("userplug.")]:
        del sys.modules[m]
    sys.path[:] = [p for p in sys.path if p != str(tmp_path)]


def test_a_users_family_policy_and_stage_run_from_a_spec_and_pass_the_contracts(user_plugins):
    spec = user_plugins / "spec.toml"
    spec.write_text(
        textwrap.dedent(
            """
            name = "user-plugins"
            generations = 4
            replicates = 8
            plugins = ["userplug.family", "userplug.policy", "userplug.stage"]

            [data]
            source = "gaussian"
            n = 30

            [model]
            family = "user-shifted-mean"
            params = { scale = 0.5 }

            [policy]
            kind = "user-alternate"

            [[curation]]
            kind = "user-near-mean"
            keep = 0.5
            measure = 20
            """
        )
    )
    with pytest.raises(cl.SpecError, match="--allow-plugins"):  # a spec that imports code runs it: opt in
        cl.run(spec, save=False)
    result = cl.run(spec, user_plugins / "out", allow_plugins=True, report=False)
    table = result.table()
    assert {"mean_norm", "spread", "user-near-mean_auc", "synthetic_share"} <= set(table.columns)
    share = table["synthetic_share"].to_numpy()
    assert list(share) == [0.0, 1.0, 0.0, 1.0]  # the user's policy: real, synthetic, real, synthetic
    auc = table["user-near-mean_auc"].to_numpy()  # measured where the stage ran: not in the last generation
    assert np.all((auc[:-1] >= 0) & (auc[:-1] <= 1)) and np.isnan(auc[-1])
    again = cl.run(spec, save=False, allow_plugins=True).summary
    assert again.equals(result.summary)
    check_family(FAMILIES["user-shifted-mean"])
    check_policy(POLICIES["user-alternate"])
    check_stage(CURATION_STAGES["user-near-mean"])
