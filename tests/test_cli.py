"""The one error policy of `hf-pretrain` (cli.run_command): a user error is one line on stderr,
`hf-pretrain: error: <message>`, and exit status 2, for every subcommand; a bug keeps its traceback."""

from __future__ import annotations

import argparse
import os
import signal
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers/huggingface_hub are imported

import pytest

from hf_pretrain.cli import main, run_command


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
