"""`hf-pretrain export`: the Hub-ready folder, its model card, loading it without hf_pretrain, pushing it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import tiny_models
from fake_hub import FakeHub

from hf_pretrain.cli import main
from hf_pretrain.folders import OUTPUT_MARKER

REPO_ROOT = Path(__file__).resolve().parents[2]


def finetune_metrics(path: Path) -> Path:
    """A metrics.json as hf_pretrain.finetune writes it (shape only; the numbers are made up)."""
    data = {
        "task": "classification", "problem_type": "single_label_classification", "model": "x",
        "dataset": {"source": "hub", "name": "nyu-mll/glue", "config": "sst2"}, "label_names": ["neg", "pos"],
        "main_metric": "f1",
        "runs": {"pretrained": {"validation": {"f1": 0.81, "accuracy": 0.82, "loss": 0.4}, "train_minutes": 1.0,
                                "trainable_parameters": 10, "parameters": 10},
                 "scratch": {"validation": {"f1": 0.62, "accuracy": 0.64, "loss": 0.7}, "train_minutes": 1.0,
                             "trainable_parameters": 10, "parameters": 10}},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


@pytest.fixture(scope="module")
def mlm_export(mlm_run):
    finetune_metrics(mlm_run / "finetune-sst2" / "metrics.json")  # found inside the run folder
    assert main(["export", str(mlm_run)]) == 0
    return mlm_run / "export"


def test_export_folder_holds_weights_code_tokenizer_recipe_and_card(mlm_export):
    names = {p.name for p in mlm_export.iterdir()}
    expected = {"model.safetensors", "config.json", "configuration_pretrain_encoder.py", "modeling_pretrain_encoder.py",
                "layers.py", "tokenizer.json", "tokenizer_config.json", "recipe.yaml", "training_summary.json",
                "README.md"}
    assert expected <= names, expected - names
    auto_map = json.loads((mlm_export / "config.json").read_text())["auto_map"]
    assert set(auto_map) == {"AutoConfig", "AutoModel", "AutoModelForMaskedLM", "AutoModelForSequenceClassification",
                             "AutoModelForTokenClassification", "AutoModelForPreTraining"}
    pytest.importorskip("matplotlib")
    assert (mlm_export / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_card_parses_with_metadata_and_results(mlm_export):
    from huggingface_hub import ModelCard
    from huggingface_hub.repocard_data import model_index_to_eval_results

    card = ModelCard.load(mlm_export / "README.md")
    data = card.data
    assert data.library_name == "transformers"
    assert data.pipeline_tag == "fill-mask"
    assert {"custom_code", "hf_pretrain"} <= set(data.tags)
    results = {(r.task_type, r.metric_type): r.metric_value for r in data.eval_results}
    assert results[("fill-mask", "perplexity")] == pytest.approx(24.5)
    assert results[("text-classification", "f1")] == pytest.approx(0.81)
    assert data.datasets is None  # the built-in corpus is not a Hub dataset; no made-up id in the metadata
    model_name, parsed = model_index_to_eval_results(data.to_dict()["model-index"])  # the Hub's own parser
    assert model_name == "export" and len(parsed) == len(data.eval_results)
    text = card.text
    assert "trust_remote_code=True" in text and "[MASK]" in text
    assert "| perplexity | 148.4000 | 24.5000 |" in text  # before/after pretraining
    assert "| f1 | 0.8100 | 0.6200 |" in text  # fine-tuned vs from scratch
    assert "81,920" in text  # tokens seen
    assert "| Precision | auto (ran in fp32) |" in text  # the recipe's `auto`, resolved on the training machine
    assert "qkv_proj" in text  # LoRA target names documented
    assert "| Optimizer | AdamW, peak lr " in text
    assert data.base_model is None and "pretrained from scratch" in text


def test_card_names_the_optimizer_the_run_used(mlm_run, tmp_path):
    import yaml

    run = shutil.copytree(mlm_run, tmp_path / "muon-run", ignore=shutil.ignore_patterns("export"))
    recipe = yaml.safe_load((run / "recipe.yaml").read_text())
    recipe["train"]["optimizer"] = "muon"  # as a run of train.optimizer=muon records it
    (run / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    assert main(["export", str(run)]) == 0
    text = (run / "export" / "README.md").read_text()
    assert "| Optimizer | Muon for the hidden weight matrices, AdamW for embeddings, output layers, norms and biases, " \
           "peak lr " in text


@pytest.mark.parametrize("init_from, in_metadata", [("someone/domain-encoder", True), ("LOCAL", False)])
def test_a_continued_run_names_its_starting_checkpoint(tmp_path, init_from, in_metadata):
    """base_model in the metadata for a Hub id (a local path is not something the Hub can link to: text only)."""
    import yaml
    from huggingface_hub import ModelCard

    run = tiny_models.make_run_dir(tmp_path / "run")
    if init_from == "LOCAL":
        init_from = str(tiny_models.save_encoder(tmp_path / "start"))
    recipe = yaml.safe_load((run / "recipe.yaml").read_text())
    recipe["model"]["init_from"] = init_from
    (run / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    assert main(["export", str(run)]) == 0
    card = ModelCard.load(run / "export" / "README.md")
    assert card.data.base_model == (init_from if in_metadata else None)
    assert f"It was continued from `{init_from}`" in card.text and "from scratch" not in card.text


FRESH_PROCESS = textwrap.dedent(
    """
    import sys
    sys.modules["hf_pretrain"] = None  # `import hf_pretrain` raises ImportError: the folder must stand alone
    import torch
    torch.set_num_threads(1)
    from datasets import Dataset
    from transformers import (AutoModelForMaskedLM, AutoModelForSequenceClassification, AutoTokenizer, Trainer,
                              TrainingArguments, DataCollatorWithPadding, pipeline)

    folder, out = sys.argv[1], sys.argv[2]
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
    masked = AutoModelForMaskedLM.from_pretrained(folder, trust_remote_code=True)
    assert type(masked).__module__.startswith("transformers_modules"), type(masked).__module__
    fill = pipeline("fill-mask", model=masked, tokenizer=tokenizer)
    assert len(fill("the report was " + tokenizer.mask_token)) == 5
    model = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True, num_labels=2)
    data = Dataset.from_dict({"text": ["good film", "bad plot"] * 4, "label": [1, 0] * 4})
    data = data.map(lambda b: tokenizer(b["text"]), batched=True, remove_columns=["text"])
    args = TrainingArguments(output_dir=out, max_steps=1, per_device_train_batch_size=4, report_to="none",
                             save_strategy="no", disable_tqdm=True)
    before = model.classifier.weight.detach().clone()
    result = Trainer(model=model, args=args, train_dataset=data,
                     data_collator=DataCollatorWithPadding(tokenizer)).train()
    assert result.global_step == 1 and not torch.equal(before, model.classifier.weight)
    print("FRESH-PROCESS-OK", result.training_loss)
    """
)


def test_export_loads_and_fine_tunes_in_a_process_without_hf_pretrain(mlm_export, tmp_path):
    script = tmp_path / "fresh.py"
    script.write_text(FRESH_PROCESS)
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"))
    result = subprocess.run([sys.executable, str(script), str(mlm_export), str(tmp_path / "trainer")], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=180)
    assert "FRESH-PROCESS-OK" in result.stdout, result.stderr[-3000:]


def test_dae_export_has_generation_config_and_encoder_only_export(dae_run):
    from huggingface_hub import ModelCard

    assert main(["export", str(dae_run)]) == 0
    full = dae_run / "export"
    assert (full / "generation_config.json").is_file()
    card = ModelCard.load(full / "README.md")
    assert card.data.pipeline_tag == "feature-extraction"
    assert "model.generate(" in card.text  # reconstruction is shown with generate(), not a removed pipeline
    # The tag is a pipeline this transformers has, and it runs on the exported folder.
    from transformers import pipeline
    from transformers.pipelines import SUPPORTED_TASKS

    assert card.data.pipeline_tag in SUPPORTED_TASKS
    states = pipeline(card.data.pipeline_tag, model=str(full), trust_remote_code=True)("A sentence to embed.")
    assert len(states[0]) > 1 and len(states[0][0]) == json.loads((full / "config.json").read_text())["hidden_size"]
    assert main(["export", str(dae_run), "--encoder-only"]) == 0
    encoder = dae_run / "export-encoder"
    assert json.loads((encoder / "config.json").read_text())["model_type"] == "hf_pretrain_encoder"
    card = ModelCard.load(encoder / "README.md")
    assert card.data.pipeline_tag == "feature-extraction"
    results = {r.metric_type: r.metric_value for r in card.data.eval_results}
    assert results["exact_match"] == pytest.approx(0.05)


def test_export_errors_are_clear(tmp_path, mlm_run, capsys):
    assert main(["export", str(tmp_path)]) == 2
    assert "has no final/config.json" in capsys.readouterr().err
    assert main(["export", str(mlm_run), "--encoder-only", "--out", str(tmp_path / "x")]) == 2
    assert "--encoder-only is for denoising-autoencoder runs" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not (tmp_path / ".x.tmp").exists()  # no half-written folder left
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".x")]  # nor its staging, whatever its name


def copy_run(run: Path, to: Path) -> Path:
    """A run folder of one's own to change (the session's fixture is shared), without its exports."""
    shutil.copytree(run, to, ignore=shutil.ignore_patterns("export", "export-encoder"))
    return to


def test_export_out_refuses_folders_it_did_not_write_and_replaces_its_own(mlm_run, tmp_path, capsys):
    """Issue 15's probe: `export RUN --out PARENT_OF_RUN` deleted the run and the user's file beside it."""
    parent = tmp_path / "parent"
    run = copy_run(mlm_run, parent / "run")
    (parent / "notes.txt").write_text("mine")
    assert main(["export", str(run), "--out", str(parent)]) == 2
    error = capsys.readouterr().err
    assert f"--out {parent}" in error and "allowed: a new or empty folder" in error
    assert sorted(p.name for p in parent.iterdir()) == ["notes.txt", "run"]  # nothing removed, nothing staged
    assert (parent / "notes.txt").read_text() == "mine" and (run / "final" / "model.safetensors").is_file()

    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "data.csv").write_text("1,2\n")
    assert main(["export", str(run), "--out", str(theirs)]) == 2
    error = capsys.readouterr().err
    assert f"--out {theirs} holds data.csv" in error and OUTPUT_MARKER in error
    assert [p.name for p in theirs.iterdir()] == ["data.csv"]

    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["export", str(run), "--out", str(empty)]) == 0
    assert (empty / "model.safetensors").is_file()
    out = tmp_path / "export"
    assert main(["export", str(run), "--out", str(out)]) == 0
    assert main(["export", str(run), "--out", str(out)]) == 0  # its own earlier export: replaced
    assert json.loads((out / OUTPUT_MARKER).read_text())["command"] == "export"
    (out / "my-notes.md").write_text("kept")
    capsys.readouterr()
    assert main(["export", str(run), "--out", str(out)]) == 2
    assert f"--out {out} holds my-notes.md" in capsys.readouterr().err
    assert (out / "my-notes.md").read_text() == "kept" and (out / "model.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "export", "parent", "theirs"]


def test_a_failed_rewrite_of_an_export_keeps_the_earlier_copy(mlm_run, tmp_path, monkeypatch):
    """The new export is built aside and swapped in; when moving it into place fails (a full disk, say), the
    earlier export is still there, whole."""
    out = tmp_path / "export"
    assert main(["export", str(mlm_run), "--out", str(out)]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    from hf_pretrain import folders

    replace, failed = folders.os.replace, []

    def rename_failing_once_onto_out(source, target):
        if Path(target) == out and not failed:
            failed.append(source)
            raise OSError(28, "No space left on device")
        return replace(source, target)

    monkeypatch.setattr(folders.os, "replace", rename_failing_once_onto_out)
    assert main(["export", str(mlm_run), "--out", str(out)]) == 2
    assert failed  # the new copy was complete and about to take the old one's place
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["export"]  # no staging or set-aside copy left


def test_export_never_runs_code_files_of_the_run_folder(mlm_run, tmp_path, capsys):
    """Our families load through the installed classes: code files in final/ that raise when run (and a tokenizer
    auto_map naming one more) do not stop the export, and the export holds the package's own code."""
    import hf_pretrain.models

    from hf_pretrain.folders import write_complete_marker

    run = copy_run(mlm_run, tmp_path / "run")
    tiny_models.tamper_code_files(run / "final")
    # Edited after the run finished: final/'s COMPLETE marker no longer matches, and export refuses it.
    assert main(["export", str(run)]) == 2
    assert "does not match its recorded sha256" in capsys.readouterr().err and not (run / "export").exists()
    # Even edited by someone who also rewrote the marker, the folder's code never runs.
    (run / "final" / "COMPLETE").unlink()
    write_complete_marker(run / "final")
    assert main(["export", str(run)]) == 0
    export, installed = run / "export", Path(hf_pretrain.models.__file__).parent
    for name in ("configuration_pretrain_encoder.py", "modeling_pretrain_encoder.py", "layers.py"):
        assert (export / name).read_text() == (installed / name).read_text(), name
    assert not (export / "tokenization_tampered.py").exists()
    # The built-in tokenizer class loaded it, so the export names no tokenizer code it does not hold.
    assert "auto_map" not in json.loads((export / "tokenizer_config.json").read_text())


def test_push_offline_fails_fast(mlm_run, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["export", str(mlm_run), "--out", str(mlm_run / "unused"), "--push-to-hub", "me/tiny"]) == 2
    assert "HF_HUB_OFFLINE is set" in capsys.readouterr().err
    assert not (mlm_run / "unused").exists()  # it failed before doing the export work


PUSH_SCRIPT = textwrap.dedent(
    """
    import sys
    from hf_pretrain.cli import main
    sys.exit(main(["export", sys.argv[1], "--out", sys.argv[2], "--push-to-hub", "me/tiny-mlm", "--private"]))
    """
)


def test_push_sends_repo_creation_and_a_commit_with_the_files(mlm_run, tmp_path):
    """HF_ENDPOINT points at a loopback stand-in for the Hub; it must be set before huggingface_hub is imported,
    hence the subprocess."""
    out = tmp_path / "export"
    with FakeHub() as hub:
        env = dict(os.environ, HF_ENDPOINT=hub.endpoint, HF_TOKEN="hf_test_token", HF_HUB_OFFLINE="0",
                   HF_HUB_DISABLE_TELEMETRY="1", HF_MODULES_CACHE=str(tmp_path / "modules"))
        result = subprocess.run([sys.executable, "-c", PUSH_SCRIPT, str(mlm_run), str(out)], env=env,
                                capture_output=True, text=True, timeout=120, cwd=tmp_path)
        requests = list(hub.requests)
        files = hub.committed_files()
    assert result.returncode == 0, result.stderr[-3000:]
    assert "pushed to me/tiny-mlm" in result.stdout
    create = [r for r in requests if r["path"] == "/api/repos/create"]
    assert create and create[0]["body"]["name"] == "tiny-mlm" and create[0]["body"]["visibility"] == "private"
    assert create[0]["authorization"] == "Bearer hf_test_token"
    assert any(r["path"] == "/api/models/me/tiny-mlm/commit/main" for r in requests)
    expected = {p.name for p in out.iterdir()} - {OUTPUT_MARKER}  # the marker is local bookkeeping, not pushed
    assert OUTPUT_MARKER in {p.name for p in out.iterdir()} and OUTPUT_MARKER not in files
    assert {"README.md", "model.safetensors", "config.json", "modeling_pretrain_encoder.py"} <= set(files)
    assert set(files) == expected
    assert files["model.safetensors"] == (out / "model.safetensors").read_bytes()
    card = files["README.md"].decode()
    assert 'from_pretrained("me/tiny-mlm", trust_remote_code=True)' in card and "path/to/" not in card
