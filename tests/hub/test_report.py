"""`hf-pretrain report`: curves as PNG and a markdown summary; without matplotlib the markdown still comes."""

from __future__ import annotations

import sys

import pytest

from hf_pretrain.cli import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_report_writes_pngs_and_markdown(mlm_run, tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "report"
    assert main(["report", str(mlm_run), "--out", str(out)]) == 0
    for name in ("loss.png", "lr.png", "throughput.png"):
        assert (out / name).read_bytes()[:8] == PNG_MAGIC
    markdown = (out / "report.md").read_text()
    assert "| steps | 20 |" in markdown and "| tokens seen | 81,920 |" in markdown
    assert "| perplexity | 148.4000 | 24.5000 |" in markdown
    assert "![loss](loss.png)" in markdown


def test_report_without_matplotlib_says_how_to_get_plots(mlm_run, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now raises ImportError
    out = tmp_path / "report"
    assert main(["report", str(mlm_run), "--out", str(out)]) == 0
    assert not list(out.glob("*.png"))
    assert "pip install matplotlib" in (out / "report.md").read_text()
    assert "pip install matplotlib" in capsys.readouterr().err


def test_report_on_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "has no metrics.jsonl" in capsys.readouterr().err
