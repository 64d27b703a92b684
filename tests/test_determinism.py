"""One root seed: the same spec gives byte-identical results, whatever runs it."""

import collapselab as cl

SPEC = {
    "name": "det",
    "generations": 6,
    "replicates": 120,
    "seed": 11,
    "data": {"source": "blobs", "n": 40, "params": {"means": [[0, 0], [3, 3]], "stds": [1.0, 0.5]}},
    "model": {"family": "gmm"},
    "sweep": {"policy.kind": ["replace", "accumulate-subsample"], "data.n": [40, 60]},
}


def test_same_spec_same_bytes_in_process_and_on_workers(tmp_path):
    cl.run(SPEC, tmp_path / "a", report=False)
    cl.run(SPEC, tmp_path / "b", report=False)
    cl.run(SPEC, tmp_path / "c", workers=2, report=False)
    a = (tmp_path / "a" / "summary.csv").read_bytes()
    assert a == (tmp_path / "b" / "summary.csv").read_bytes()
    assert a == (tmp_path / "c" / "summary.csv").read_bytes()


def test_another_seed_gives_other_numbers_and_cells_do_not_share_draws(tmp_path):
    base = cl.run(SPEC, save=False).summary
    other = cl.run({**SPEC, "seed": 12}, save=False).summary
    assert not base["mean"].equals(other["mean"])
    # a cell's numbers depend on its own address only: running it alone gives the same values
    alone = cl.run({**SPEC, "sweep": {"policy.kind": ["replace"], "data.n": [40]}}, save=False).summary
    cell0 = base[base.cell == "0"].reset_index(drop=True)
    assert cell0["mean"].equals(alone["mean"])


def test_more_generations_leave_earlier_generations_unchanged():
    short = cl.run({**SPEC, "sweep": {}, "generations": 3}, save=False).summary
    long = cl.run({**SPEC, "sweep": {}, "generations": 6}, save=False).summary
    head = long[long.generation < 3].reset_index(drop=True)
    assert head.equals(short)


def test_every_family_is_bit_identical_on_freshly_spawned_dask_workers(tmp_path):
    """Spawned workers allocate memory differently from this process: results must not notice."""
    from distributed import LocalCluster
    from test_families import FAMILY_CASES

    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=40
    ) as cluster:
        for family, (source, sparams, fparams) in FAMILY_CASES.items():
            spec = {
                "generations": 4,
                "replicates": 40,
                "seed": 9,
                "data": {"source": source, "n": 40, "params": sparams},
                "model": {"family": family, "params": fparams},
                "sweep": {
                    "policy": [{"kind": "replace"}, {"kind": "accumulate"}, {"kind": "fresh", "real_fraction": 0.5}]
                },
            }
            here = cl.run(spec, tmp_path / f"{family}-inline", report=False)
            there = cl.run(spec, tmp_path / f"{family}-dask", scheduler=cluster.scheduler_address, report=False)
            assert (here.path / "summary.csv").read_bytes() == (there.path / "summary.csv").read_bytes(), family


def test_shared_data_pairs_the_cells_of_a_sweep():
    """With shared_data every cell trains generation 0 on the same real records and measures on the same
    held-out ones, so cells differing only in policy agree exactly at generation 0; by default they do not."""
    spec = {
        "generations": 3,
        "replicates": 50,
        "seed": 5,
        "data": {"source": "gaussian", "n": 20, "params": {"std": 1.0}},
        "model": {"family": "gaussian"},
        "sweep": {"policy": [{"kind": "replace"}, {"kind": "accumulate"}]},
    }
    for shared in (True, False):
        s = cl.run({**spec, "shared_data": shared}, save=False).summary
        first = s[(s.generation == 0) & (s.metric == "nll_real")].set_index("cell")["mean"]
        assert bool(first["0"] == first["1"]) is shared
        last = s[(s.generation == 2) & (s.metric == "var_ratio")].set_index("cell")["mean"]
        assert last["0"] != last["1"]  # the policies still differ after generation 0
