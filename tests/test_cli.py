"""The one error policy of `hf-pretrain` (cli.run_command): a user error is one line on stderr,
`hf-pretrain: error: <message>`, and exit status 2, for every subcommand; a bug keeps its traceback."""

from __future__ import annotations

import argparse
import os
import signal
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers/huggingface_hub are imported

import pytest

from hf_pretrain.cli import build_parser, main, parse_command_line, run_command


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("hf-pretrain: error: ") and err.count("\n") == 1, err
    return err


def test_pretrain_family_user_errors_exit_2_with_one_line(tmp_path, capsys):
    assert main(["pretrain", "mlm-tiny", "train.lerning_rate=1", f"output.dir={tmp_path / 'run'}"]) == 2
    assert "unknown key 'train.lerning_rate'" in one_error_line(capsys)
    assert main(["pretrain", "finetune-classification"]) == 2
    assert "is a fine-tuning recipe" in one_error_line(capsys)
    assert main(["tokenizer", "mlm-tiny", "tokenizer.path=some/tokenizer"]) == 2  # was a bare SystemExit
    assert "tokenizer.path='some/tokenizer' is set" in one_error_line(capsys)
    assert main(["quickstart", "--labeled-examples", "-3", "--out", str(tmp_path / "qs")]) == 2
    assert "--labeled-examples=-3 is not allowed" in one_error_line(capsys)
    assert not (tmp_path / "run").exists() and not (tmp_path / "qs").exists()


def test_transfer_family_user_errors_exit_2_with_one_line(tmp_path, capsys):
    assert main(["finetune", "finetune-classification"]) == 2
    assert "model is not set" in one_error_line(capsys)
    assert main(["embed", "some/model", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "v.npy")]) == 2
    assert "missing.txt' does not exist" in one_error_line(capsys)  # a FileNotFoundError: a user path
    assert main(["export", str(tmp_path)]) == 2
    assert "has no final/config.json" in one_error_line(capsys)
    assert main(["report", str(tmp_path)]) == 2
    assert "has no metrics.jsonl" in one_error_line(capsys)


def test_argument_errors_are_argparses_own_and_exit_2(capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["pretrain"])
    assert stopped.value.code == 2 and "hf-pretrain pretrain: error:" in capsys.readouterr().err


def test_overrides_may_follow_an_option_and_anything_else_left_over_is_refused(capsys):
    args = parse_command_line(build_parser(), ["pretrain", "mlm-tiny", "train.lr=2e-3", "--quiet", "train.seed=3"])
    assert args.quiet and args.overrides == ["train.lr=2e-3", "train.seed=3"]
    assert main(["recipes", "show", "mlm-tiny", "--quiet", "masking.mlm_probability=0.4"]) == 0
    assert "mlm_probability: 0.4  #" in capsys.readouterr().out
    for argv in (["pretrain", "mlm-tiny", "--quiet", "train.lr=2e-3", "--bogus"],
                 ["pretrain", "mlm-tiny", "--quiet", "stray"]):
        with pytest.raises(SystemExit) as exited:
            main(argv)
        assert exited.value.code == 2 and "unrecognized arguments" in capsys.readouterr().err


def test_a_multi_line_message_is_printed_on_one_line_and_a_bug_keeps_its_traceback(capsys):
    def raises(error):
        def handler(args):
            raise error
        return argparse.Namespace(handler=handler)

    assert run_command(raises(ValueError("first line\n  second line"))) == 2
    assert one_error_line(capsys) == "hf-pretrain: error: first line second line\n"
    with pytest.raises(KeyError):  # not a user error: the traceback is what finds the bug
        run_command(raises(KeyError("bug")))


def test_a_training_stopped_by_a_signal_exits_128_plus_the_signal(capsys):
    from hf_pretrain.training.loop import TrainingInterrupted

    def stopped(args):
        raise TrainingInterrupted(signal.SIGTERM, Path("run/checkpoints/step-5"))

    assert run_command(argparse.Namespace(handler=stopped)) == 128 + signal.SIGTERM
    assert "Run the same command again to resume" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------- discoverable recipes
def test_recipes_lists_every_shipped_recipe_with_what_it_trains(capsys):
    from hf_pretrain.recipe import shipped_recipe_names

    assert main(["recipes"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == shipped_recipe_names()
    assert all(len(line.split()) > 3 for line in lines)  # a description after each name


def test_recipes_show_prints_the_resolved_recipe_with_each_keys_doc_and_it_reads_back(capsys):
    import yaml

    from hf_pretrain.recipe import load_recipe, recipe_from_dict

    assert main(["recipes", "show", "mlm-tiny", "masking.mlm_probability=0.4", "train.max_minutes=7"]) == 0
    out = capsys.readouterr().out
    assert "mlm_probability: 0.4  # share of tokens selected for prediction" in out
    assert "max_minutes: 7.0  # budget in wall-clock minutes" in out
    assert "\nnoise:" not in out and "\nfeatures:" not in out  # sections objective mlm does not read
    shown = recipe_from_dict(yaml.safe_load(out))
    assert shown == load_recipe("mlm-tiny", ["masking.mlm_probability=0.4", "train.max_minutes=7"])
    assert main(["recipes", "show", "finetune-ner"]) == 0
    assert "task: token-classification  # classification" in capsys.readouterr().out
    assert main(["recipes", "show", "mlm-tiny", "masking.mlm_probabilty=0.4"]) == 2
    assert "did you mean 'masking.mlm_probability'" in one_error_line(capsys)


def test_pretrain_dry_run_validates_and_prints_without_touching_the_run_folder(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["pretrain", "clm-tiny", f"output.dir={run}", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# objective clm: causal language model") and f"dir: {run}" in out
    assert not run.exists()
    assert main(["pretrain", "clm-tiny", f"output.dir={run}", "model.config.hiden_size=64", "--dry-run"]) == 2
    assert "unknown key 'model.config.hiden_size'; did you mean 'model.config.hidden_size'?" in one_error_line(capsys)
    assert not run.exists()


def test_every_recipe_key_has_a_doc_and_pretrain_help_lists_them(capsys):
    from hf_pretrain.finetune.recipe import FinetuneRecipe
    from hf_pretrain.recipe import Recipe, documented_keys

    for recipe_class in (Recipe, FinetuneRecipe):
        undocumented = [key for key, _, doc in documented_keys(recipe_class) if not doc.strip()]
        assert not undocumented, undocumented
    with pytest.raises(SystemExit):
        main(["pretrain", "--help"])
    help_text = capsys.readouterr().out
    for key, _, _ in documented_keys(Recipe):
        assert f"  {key} = " in help_text, key


# ----------------------------------------------------------------------------------------------- tokenizer
@pytest.mark.parametrize("recipe, overrides, special", [
    ("rtd-tiny", [], "[MASK]"),  # its layout comes from the registry (the tokenizer code keeps no list of its own)
    ("mlm-tiny", ["data.streaming=true"], "[MASK]"),
    ("clm-tiny", ["data.streaming=true"], "[BOS]"),
])
def test_tokenizer_trains_for_every_text_objective_and_on_a_streamed_corpus(tmp_path, capsys, recipe, overrides,
                                                                            special):
    from transformers import AutoTokenizer

    out = tmp_path / "tokenizer"
    assert main(["tokenizer", recipe, *overrides, "data.max_documents=300", "tokenizer.vocab_size=320",
                 "--out", str(out)]) == 0
    assert f"tokenizer with 320 tokens -> {out}" in capsys.readouterr().out
    assert special in AutoTokenizer.from_pretrained(out).all_special_tokens
    assert main(["tokenizer", "dae-features"]) == 2
    assert "objective='dae-features' reads float vectors, not text" in one_error_line(capsys)


# ----------------------------------------------------------------------------------------------- what is shown
def test_reports_go_to_stderr_at_the_default_level_quiet_keeps_warnings_only(tmp_path, capsys):
    arguments = ["tokenizer", "mlm-tiny", "data.max_documents=200", "tokenizer.vocab_size=320"]
    assert main([*arguments, "--out", str(tmp_path / "a")]) == 0
    captured = capsys.readouterr()
    assert "text: train: 200 documents in" in captured.err  # the cleaning report
    assert "trained a bpe tokenizer of 320 tokens on 19" in captured.err  # mlm-tiny: byte-level BPE
    assert "text:" not in captured.out  # stdout holds the result only
    assert main([*arguments, "--out", str(tmp_path / "b"), "--quiet"]) == 0
    captured = capsys.readouterr()
    assert captured.err == "" and "tokenizer with 320 tokens" in captured.out
    with pytest.raises(SystemExit):
        main([*arguments, "--quiet", "--verbose"])
    assert "not allowed with argument" in capsys.readouterr().err
