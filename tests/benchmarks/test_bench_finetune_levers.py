"""benchmarks/bench_finetune_levers.py: variants are paired by model and seed, and bad arguments are refused."""

from __future__ import annotations

from pathlib import Path

import pytest


def test_rows_pair_each_variant_with_the_first_and_each_model_with_the_reference(load_benchmark, tmp_path, monkeypatch):
    bench = load_benchmark("bench_finetune_levers")
    import hf_pretrain.finetune as finetune_module

    calls = []
    # accuracy = model base + variant bonus + seed noise: the paired differences cancel the noise exactly
    base = {"a": 0.70, "b": 0.74}
    bonus = {"": 0.0, "linear_probe.epochs=3": 0.02}

    def fake_finetune(recipe, overrides):
        options = dict(o.split("=", 1) for o in overrides)
        calls.append(overrides)
        model = Path(options["model"]).name
        extra = ",".join(o for o in overrides if o.startswith("linear_probe"))
        accuracy = base[model] + bonus[extra] + 0.01 * (int(options["train.seed"]) - 42)
        return {"runs": {"pretrained": {"test": {"accuracy": accuracy, "f1": accuracy}}}}

    monkeypatch.setattr(finetune_module, "finetune", fake_finetune)
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    argv = ["--model", f"a={tmp_path / 'a'}", f"b={tmp_path / 'b'}", "--variant", "default=",
            "lpft=linear_probe.epochs=3", "--reference", "a", "--work-dir", str(tmp_path / "work")]
    rows = bench.main(argv)
    assert len(calls) == 12
    assert all("compare_scratch=false" in c and "data.max_train_examples=256" in c for c in calls)
    by = {(row["model"], row["variant"]): row for row in rows}
    assert by["a", "lpft"]["vs_first"][0] == pytest.approx(2.0) and by["a", "lpft"]["vs_first"][1] == pytest.approx(0)
    assert by["b", "default"]["vs_reference"][0] == pytest.approx(4.0)
    assert by["b", "lpft"]["accuracy"][0] == pytest.approx(77.0)
    bench.main(argv)  # all cached: nothing runs again
    assert len(calls) == 12


def test_bad_arguments_are_refused_naming_them(load_benchmark, tmp_path):
    bench = load_benchmark("bench_finetune_levers")
    (tmp_path / "a").mkdir()
    with pytest.raises(SystemExit, match="not NAME=VALUE"):
        bench.parse_args(["--model", str(tmp_path / "a")])
    with pytest.raises(SystemExit):
        bench.parse_args(["--model", f"a={tmp_path / 'missing'}"])
    with pytest.raises(SystemExit):
        bench.parse_args(["--model", f"a={tmp_path / 'a'}", "--reference", "b"])
