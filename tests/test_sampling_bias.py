"""Sampling bias (Alemohammad et al. 2024): playing safe when sampling speeds up the loss of tails.

Gaussian ``truncation`` ψ draws synthetic records at ψ times the fitted spread; categorical ``temperature`` T
draws from p^(1/T). Under replace the Gaussian chain keeps a closed form: E[σ²_g]/σ² = ((n-1)/n) (ψ² (m-1)/m)^g.
"""

import numpy as np
import pytest
from helpers import assert_within_se, expected, metric, simulate


@pytest.mark.parametrize("exact", [True, False])
@pytest.mark.parametrize("psi, d", [(0.9, 1), (0.95, 2)])
def test_truncated_gaussian_chain_follows_its_closed_form(psi, d, exact):
    r = simulate(15, 3000, "gaussian", 20, "gaussian", {"std": [1.0] * d}, {"truncation": psi, "exact": exact})
    g = np.arange(15)
    var = (19 / 20) * (psi**2 * 19 / 20) ** g
    np.testing.assert_allclose(expected(r, "trace_ratio"), var, rtol=1e-12)  # the formula, written out here
    for name in ("trace_ratio", "mean_sq_drift", "det_ratio", *(("log_det_ratio",) if d > 1 else ())):
        assert_within_se(r, name, expected(r, name))


def test_playing_safe_speeds_up_the_loss_of_tails():
    safe = simulate(20, 2000, "gaussian", 50, "gaussian", {"std": 1.0}, {"truncation": 0.9})
    plain = simulate(20, 2000, "gaussian", 50, "gaussian", {"std": 1.0}, {})
    tail_safe, _ = metric(safe, "tail_mass")
    tail_plain, _ = metric(plain, "tail_mass")
    assert tail_safe[0] == pytest.approx(tail_plain[0], rel=0.05)  # generation 0 fits real data either way
    assert tail_safe[10] < 0.5 * tail_plain[10]


def test_categorical_temperature_below_one_loses_rare_categories_faster_and_above_one_slower():
    runs = {
        T: simulate(15, 1000, "zipf", 200, "categorical", {"categories": 50}, {"temperature": T})
        for T in (0.7, 1.0, 1.5)
    }
    rare = {T: metric(r, "rare_mass")[0] for T, r in runs.items()}
    support = {T: metric(r, "support")[0] for T, r in runs.items()}
    assert rare[0.7][-1] < rare[1.0][-1] < rare[1.5][-1]
    assert support[0.7][-1] < support[1.0][-1] < support[1.5][-1]
    assert runs[0.7].theory.empty  # the Wright–Fisher closed forms do not hold for a tempered sampler
