"""benchmarks/bench_transfer_budget.py's cache: a result measured with a recipe that has since changed is kept out
of the table and out of the way (under key@fingerprint), never silently mixed with results of the recipe as it is."""

from __future__ import annotations

import json


def test_fingerprints_follow_what_a_recipe_computes_not_its_budget_or_comments(load_benchmark, monkeypatch, tmp_path):
    bench = load_benchmark("bench_transfer_budget")
    mlm, rtd = bench.recipe_fingerprint("mlm-tiny"), bench.recipe_fingerprint("rtd-tiny")
    assert mlm != rtd and len(mlm) == 10
    assert bench.recipe_fingerprint("spectral") == bench.recipe_fingerprint("scratch") == mlm

    original = bench.load_recipe
    for overrides, same in ((["train.max_minutes=30", "train.eval_every=7"], True), (["train.lr=2e-3"], False)):
        monkeypatch.setattr(bench, "load_recipe", lambda name, extra=(), o=overrides: original(name, [*o, *extra]))
        assert (bench.recipe_fingerprint("mlm-tiny") == mlm) is same, overrides


def test_a_result_of_a_changed_recipe_is_kept_aside_and_left_out_of_the_table(load_benchmark, tmp_path, capsys):
    bench = load_benchmark("bench_transfer_budget")
    mlm, scratch = bench.recipe_fingerprint("mlm-tiny"), bench.recipe_fingerprint("scratch")
    cache = bench.Cache(tmp_path / "results.json")
    for seed in (42, 43):
        cache.put(f"finetune/scratch/256/seed{seed}", {"accuracy": 0.60, "recipe": scratch})
        cache.put(f"finetune/mlm-tiny/3min/256/seed{seed}", {"accuracy": 0.70, "recipe": mlm})
        cache.put(f"finetune/rtd-tiny/3min/256/seed{seed}", {"accuracy": 0.90, "recipe": "0123456789"})
    cache.put("pretrain/rtd-tiny/3min", {"steps": 5, "recipe": "0123456789"})

    args = bench.parse_args(["--labels", "256", "--seeds", "42", "43", "--work-dir", str(tmp_path)])
    rows = bench.collect(cache, args)
    assert {row["start"] for row in rows} == {"scratch", "mlm-tiny"}
    mlm_row = next(row for row in rows if row["start"] == "mlm-tiny")
    assert mlm_row["seeds"] == 2 and abs(mlm_row["gain"][0] - 10.0) < 1e-9

    assert cache.current("finetune/mlm-tiny/3min/256/seed42", mlm)["accuracy"] == 0.70
    assert cache.current("pretrain/rtd-tiny/3min", bench.recipe_fingerprint("rtd-tiny")) is None
    stored = json.loads((tmp_path / "results.json").read_text())
    assert "pretrain/rtd-tiny/3min" not in stored
    assert stored["pretrain/rtd-tiny/3min@0123456789"] == {"steps": 5, "recipe": "0123456789"}
    assert "measured with another recipe" in capsys.readouterr().out


def test_two_invocations_sharing_a_work_dir_keep_each_others_results(load_benchmark, tmp_path):
    """One invocation per core on one cache: each write merges into the file, so neither loses the other's."""
    bench = load_benchmark("bench_transfer_budget")
    first, second = bench.Cache(tmp_path / "results.json"), bench.Cache(tmp_path / "results.json")
    first.put("pretrain/mlm-tiny/10min", {"steps": 1, "recipe": "a"})
    second.put("pretrain/mlm-tiny:data.block_size=64/10min", {"steps": 2, "recipe": "b"})
    first.put("finetune/mlm-tiny/10min/256/seed42", {"accuracy": 0.7, "recipe": "a"})
    stored = json.loads((tmp_path / "results.json").read_text())
    assert set(stored) == {"pretrain/mlm-tiny/10min", "pretrain/mlm-tiny:data.block_size=64/10min",
                           "finetune/mlm-tiny/10min/256/seed42"}
    second.reload()
    assert second.get("finetune/mlm-tiny/10min/256/seed42") == {"accuracy": 0.7, "recipe": "a"}
    # a result retired by one invocation stays retired in the file, though the other wrote after it
    second.put("pretrain/mlm-tiny/10min@a", {"steps": 1, "recipe": "a"}, replaces="pretrain/mlm-tiny/10min")
    first.put("pretrain/x/3min", {"steps": 3, "recipe": "c"})
    assert "pretrain/mlm-tiny/10min" not in json.loads((tmp_path / "results.json").read_text())
