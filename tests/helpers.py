import numpy as np

import collapselab as cl


def simulate(generations, replicates, source, n, family, source_params=None, family_params=None, seed=0, **policy):
    spec = {
        "generations": generations,
        "replicates": replicates,
        "seed": seed,
        "data": {"source": source, "n": n, "params": source_params or {}},
        "model": {"family": family, "params": family_params or {}},
        "policy": policy or {"kind": "replace"},
    }
    return cl.run(spec, save=False)


def metric(result, name, cell="0"):
    """(mean, se) arrays over generations for one metric of one cell."""
    df = result.summary
    df = df[(df.cell == cell) & (df.metric == name)].sort_values("generation")
    return df["mean"].to_numpy(), df["se"].to_numpy()


def expected(result, name, cell="0"):
    df = result.theory
    df = df[(df.cell == cell) & (df.metric == name)].sort_values("generation")
    return df["expected"].to_numpy()


def assert_within_se(result, name, truth, k=4.0, cell="0"):
    mean, se = metric(result, name, cell)
    truth = np.asarray(truth, dtype=float)
    assert mean.shape == truth.shape, (mean.shape, truth.shape)
    gap = np.abs(mean - truth)
    # where every replicate agrees (se = 0) the simulation must hit the closed form exactly
    z = np.where(se > 0, gap / np.where(se > 0, se, 1), np.where(gap <= 1e-12, 0.0, np.inf))
    worst = int(np.argmax(z))
    assert np.all(z <= k), (
        f"{name}: generation {worst} simulated {mean[worst]:.6g} ± {se[worst]:.2g}, "
        f"closed form {truth[worst]:.6g} ({z[worst]:.1f} SE apart)"
    )
