"""Fine-tuning runs (hf_pretrain.finetune.run and `hf-pretrain finetune`): training on each task and problem type,
warm start, linear probe, LoRA, the output folder and what it may replace, foreign code, and the model card."""

from __future__ import annotations

import json
import shutil

import pytest
import tiny_models
import torch
from finetune_helpers import QUIET, check_card, files_under, read_metrics, safetensors_state

from hf_pretrain.cli import main
from hf_pretrain.finetune import finetune, finetune_recipe_from_dict, load_finetune_recipe
from hf_pretrain.recipe import RecipeError


# --------------------------------------------------------------------------------------------------- training
def test_cli_pair_classification_with_compare_scratch(encoder_dir, tmp_path):
    """The MRPC recipe's code path on local files of the same format, pretrained vs scratch, names kept."""
    train = tiny_models.write_jsonl(tmp_path / "train.jsonl", tiny_models.pair_rows(160, seed=1))
    dev = tiny_models.write_jsonl(tmp_path / "dev.jsonl", tiny_models.pair_rows(40, seed=2))
    out = tmp_path / "out"
    code = main([
        "finetune", "finetune-mrpc", f"model={encoder_dir}", "data.source=files", f"data.train_files={train}",
        f"data.validation_files={dev}", f"output.dir={out}", "train.epochs=2", "train.batch_size=16", *QUIET,
        "--compare-scratch",
    ])
    assert code == 0
    metrics = read_metrics(out)
    assert set(metrics["runs"]) == {"pretrained", "scratch"}
    for run in metrics["runs"].values():
        assert {"accuracy", "f1", "precision", "recall", "loss"} <= set(run["validation"])
        assert 0.0 <= run["validation"]["accuracy"] <= 1.0
    assert metrics["label_names"] == ["not_equivalent", "equivalent"]
    from transformers import AutoModelForSequenceClassification

    for folder in (out / "model", out / "scratch" / "model"):
        model = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True)
        assert model.config.id2label == {0: "not_equivalent", 1: "equivalent"}
    assert not (out / "checkpoints").exists()  # the best model was kept as out/model; checkpoints cleaned up
    card = check_card(out, "text-classification")  # a local folder: named in the text only
    assert f"| Base model | `{encoder_dir}` (a local folder) |" in card.text
    assert "| 1 | equivalent |" in card.text and "same architecture from scratch |" in card.text
    assert "AutoModelForSequenceClassification.from_pretrained(\"path/to/out\", trust_remote_code=True)" in card.text


def test_single_label_classification_learns_an_easy_task(encoder_dir, sentiment_files, tmp_path):
    """String labels, held-out validation carved from train, a test split scored at the end."""
    train, test = sentiment_files
    out = tmp_path / "out"
    result = finetune("finetune-classification", [
        f"model={encoder_dir}", "data.source=files", f"data.train_files={train}", f"data.test_files={test}",
        f"output.dir={out}", "train.epochs=4", "train.batch_size=16", "train.lr=2e-3", *QUIET,
    ])
    assert result["label_names"] == ["negative", "positive"]
    assert result["problem_type"] == "single_label_classification"
    # One word decides the label: far above the 50% of chance after ~50 steps.
    assert result["runs"]["pretrained"]["test"]["accuracy"] >= 0.8, result["runs"]["pretrained"]
    assert read_metrics(out)["runs"]["pretrained"]["test"] == result["runs"]["pretrained"]["test"]


def test_ner_through_the_cli_reports_entity_level_scores(encoder_dir, tmp_path):
    train = tiny_models.write_jsonl(tmp_path / "train.jsonl", tiny_models.ner_rows(240, seed=1))
    test = tiny_models.write_jsonl(tmp_path / "test.jsonl", tiny_models.ner_rows(60, seed=2))
    out = tmp_path / "out"
    code = main([
        "finetune", "finetune-ner", f"model={encoder_dir}", f"data.train_files={train}", f"data.test_files={test}",
        f"output.dir={out}", "train.epochs=8", "train.batch_size=16", "train.lr=3e-3",
        "train.early_stopping_patience=null", *QUIET,
    ])
    assert code == 0
    metrics = read_metrics(out)
    assert metrics["label_names"] == ["O", "B-LOC", "B-PER", "I-PER"]
    test_scores = metrics["runs"]["pretrained"]["test"]
    assert {"precision", "recall", "f1", "accuracy"} <= set(test_scores)
    # Entities are whole known words: the model learns them from their embeddings.
    assert test_scores["f1"] >= 0.6, test_scores
    from transformers import AutoModelForTokenClassification

    model = AutoModelForTokenClassification.from_pretrained(out / "model", trust_remote_code=True)
    assert model.config.id2label[2] == "B-PER"
    card = check_card(out, "token-classification")
    assert "AutoModelForTokenClassification.from_pretrained(" in card.text and "| 2 | B-PER |" in card.text
    assert "count whole entities" in card.text and "same architecture from scratch" not in card.text


def test_multi_label_and_regression_problem_types(encoder_dir, tmp_path):
    rows = tiny_models.sentiment_rows(80, seed=3)
    multi = [{"text": r["text"], "label": [r["label"]] + (["long"] if len(r["text"].split()) > 6 else [])} for r in rows]
    regression = [{"text": r["text"], "label": len(r["text"].split()) / 10} for r in rows]
    expectations = {
        "multi": (multi, "multi_label_classification", {"accuracy", "f1"}),
        "regression": (regression, "regression", {"mse", "mae", "pearson", "spearman"}),
    }
    for name, (data, problem_type, keys) in expectations.items():
        path = tiny_models.write_jsonl(tmp_path / f"{name}.jsonl", data)
        result = finetune("finetune-classification", [
            f"model={encoder_dir}", "data.source=files", f"data.train_files={path}", f"output.dir={tmp_path / name}",
            "train.epochs=1", "train.batch_size=16", *QUIET,
        ])
        assert result["problem_type"] == problem_type
        assert keys <= set(result["runs"]["pretrained"]["validation"])
        card = check_card(tmp_path / name, "text-classification")
        assert ("One output: the predicted value of `label`" in card.text) == (name == "regression")
    assert result["main_metric"] == "mse"  # regression: lower is better, chosen automatically


def test_freeze_encoder_trains_only_the_head(encoder_dir, sentiment_files, tmp_path):
    train, _ = sentiment_files
    out = tmp_path / "out"
    result = finetune("finetune-classification", [
        f"model={encoder_dir}", "data.source=files", f"data.train_files={train}", f"output.dir={out}",
        "freeze_encoder=true", "train.epochs=1", "train.batch_size=32", *QUIET,
    ])
    run = result["runs"]["pretrained"]
    assert run["trainable_parameters"] < run["parameters"]
    before, after = safetensors_state(encoder_dir), safetensors_state(out / "model")
    shared = [k for k in after if k.startswith("model.")]
    assert shared and all(torch.equal(before[k], after[k]) for k in shared)
    assert not torch.equal(after["classifier.weight"], torch.zeros_like(after["classifier.weight"]))


def test_linear_probe_first_fits_the_head_on_the_frozen_encoder_for_both_runs(encoder_dir, sentiment_files, tmp_path):
    train, _ = sentiment_files  # 240 rows, 24 of them held out for validation: 216 train
    # The full fine-tuning stage takes one step at lr 1e-9, so what the weights show is the probe stage's work.
    common = [f"model={encoder_dir}", "data.source=files", f"data.train_files={train}", "compare_scratch=true",
              "train.max_steps=1", "train.lr=1e-9", "train.warmup=0", "train.batch_size=32", *QUIET]
    plain, probed = tmp_path / "plain", tmp_path / "probed"
    finetune("finetune-classification", [*common, f"output.dir={plain}"])
    result = finetune("finetune-classification",
                      [*common, f"output.dir={probed}", "linear_probe.epochs=2", "linear_probe.lr=0.05"])
    assert read_metrics(probed)["linear_probe"] == {"epochs": 2.0, "lr": 0.05}
    for run, folder in (("pretrained", ""), ("scratch", "scratch")):
        stage = result["runs"][run]["linear_probe"]
        assert stage["steps"] == 2 * 7 and stage["train_loss"] > 0  # ceil(216 / 32) steps per epoch
        before, after = safetensors_state(plain / folder / "model"), safetensors_state(probed / folder / "model")
        # The same seed gave both runs the same head init; only the probe stage moved it, and only the head.
        assert (after["classifier.weight"] - before["classifier.weight"]).abs().max() > 1e-2
        encoder = [k for k in after if k.startswith("model.")]
        assert encoder and all(torch.allclose(before[k], after[k], atol=1e-6) for k in encoder)
    assert "linear_probe" not in read_metrics(plain)["runs"]["pretrained"]


def test_warm_start_applies_to_both_runs(encoder_dir, sentiment_files, tmp_path):
    train, _ = sentiment_files
    common = [f"model={encoder_dir}", "data.source=files", f"data.train_files={train}", "compare_scratch=true",
              "train.max_steps=1", "train.lr=1e-9", "train.warmup=0", *QUIET]
    plain, warm = tmp_path / "plain", tmp_path / "warm"
    finetune("finetune-classification", [*common, f"output.dir={plain}", "warm_start.shrink=1", "warm_start.perturb=0"])
    result = finetune("finetune-classification",
                      [*common, f"output.dir={warm}", "warm_start.shrink=0.5", "warm_start.perturb=0.5"])
    assert read_metrics(warm)["warm_start"] == {"shrink": 0.5, "perturb": 0.5}
    loaded = safetensors_state(encoder_dir)
    tuned = safetensors_state(warm / "model")
    embeddings = "model.embeddings.tok_embeddings.weight"
    # One step at lr 1e-9 leaves the warm start visible: half the pretrained matrix plus half a fresh draw that is
    # unrelated to it.
    added = tuned[embeddings] - 0.5 * loaded[embeddings]
    correlation = torch.corrcoef(torch.stack([added.flatten(), loaded[embeddings].flatten()]))[0, 1]
    assert abs(float(correlation)) < 0.1 and added.abs().mean() > 0.1 * loaded[embeddings].abs().mean()
    assert torch.allclose(safetensors_state(plain / "model")[embeddings], loaded[embeddings], atol=1e-6)
    # Same settings for the from-scratch baseline: its random matrices get the same transform (a smaller init).
    plain_scratch = safetensors_state(plain / "scratch" / "model")[embeddings]
    warm_scratch = safetensors_state(warm / "scratch" / "model")[embeddings]
    assert not torch.equal(plain_scratch, warm_scratch)
    assert 0.6 < float(warm_scratch.std() / plain_scratch.std()) < 0.8  # sqrt(0.5^2 + 0.5^2) = 0.71 of the init scale
    assert result["runs"]["scratch"]["trainable_parameters"] == result["runs"]["pretrained"]["trainable_parameters"]
    assert "| Warm start | shrink and perturb: every encoder matrix W started as 0.5 * W + 0.5 * W_init" in (
        warm / "model" / "README.md").read_text()


def test_lora_trains_adapters_and_saves_a_merged_model(encoder_dir, sentiment_files, tmp_path):
    pytest.importorskip("peft")
    train, _ = sentiment_files
    out = tmp_path / "out"
    code = main([
        "finetune", "finetune-classification", f"model={encoder_dir}", "data.source=files",
        f"data.train_files={train}", f"output.dir={out}", "train.max_steps=6", "train.eval_every=3",
        "train.batch_size=16", "train.lr=1e-2", "lora.r=4", *QUIET,
    ])
    assert code == 0
    run = read_metrics(out)["runs"]["pretrained"]
    assert run["trainable_parameters"] < run["parameters"] / 2  # adapters + head, not the whole encoder
    before, after = safetensors_state(encoder_dir), safetensors_state(out / "model")
    assert not any("lora" in key for key in after)  # merged: a plain checkpoint, loadable without peft
    name = "model.layers.0.attn.qkv_proj.weight"
    assert name in after, sorted(after)[:8]
    assert not torch.equal(before[name], after[name])  # the adapters' update was merged into the weight
    assert torch.equal(before["model.embeddings.tok_embeddings.weight"], after["model.embeddings.tok_embeddings.weight"])
    card = check_card(out, "text-classification")
    assert "| Method | LoRA (r 4, alpha 16.0, dropout 0.05, on qkv_proj, o_proj, up_proj, down_proj)" in card.text


def test_denoising_autoencoder_is_fine_tuned_through_its_encoder(tmp_path, sentiment_files):
    dae_dir = tiny_models.save_dae(tmp_path / "dae")
    train, _ = sentiment_files
    out = tmp_path / "out"
    finetune("finetune-classification", [
        f"model={dae_dir}", "data.source=files", f"data.train_files={train}", f"output.dir={out}",
        "train.max_steps=2", "train.eval_every=2", *QUIET,
    ])
    assert json.loads((out / "encoder" / "config.json").read_text())["model_type"] == "hf_pretrain_encoder"
    assert json.loads((out / "model" / "config.json").read_text())["architectures"] == [
        "PretrainEncoderForSequenceClassification"
    ]
    card = check_card(out, "text-classification")
    assert f"| Base model | `{dae_dir}` (a local folder; weights read from `{out / 'encoder'}`) |" in card.text


def test_builtin_task_is_the_default_data(encoder_dir, tmp_path):
    result = finetune("finetune-classification", [
        f"model={encoder_dir}", f"output.dir={tmp_path / 'out'}", "data.max_train_examples=64",
        "data.max_eval_examples=32", "train.max_steps=2", "train.eval_every=2", *QUIET,
    ])
    assert len(result["label_names"]) == 8 and "asyncio" in result["label_names"]
    assert "test" in result["runs"]["pretrained"]


# --------------------------------------------------------------------------------------------- what it touches

def test_output_dir_refuses_a_pretraining_run_and_keeps_its_checkpoints(tmp_path, capsys):
    """Issue 15's probe: `finetune RECIPE model=RUN output.dir=RUN` deleted RUN/checkpoints."""
    run = tiny_models.make_run_dir(tmp_path / "run")
    (run / "checkpoints" / "step-20").mkdir(parents=True)
    (run / "checkpoints" / "step-20" / "COMPLETE").write_text("{}")
    before = files_under(run)
    assert main(["finetune", "finetune-classification", f"model={run}", f"output.dir={run}", *QUIET]) == 2
    error = capsys.readouterr().err
    assert f"output.dir={str(run)!r} holds checkpoints" in error and "allowed: a new or empty folder" in error
    assert files_under(run) == before  # refused before any work: not even recipe.yaml was rewritten


def test_output_dir_of_an_earlier_finetune_is_reused_but_not_a_users_file(encoder_dir, sentiment_files, tmp_path,
                                                                          capsys):
    train, _ = sentiment_files
    out = tmp_path / "out"
    args = ["finetune", "finetune-classification", f"model={encoder_dir}", "data.source=files",
            f"data.train_files={train}", f"output.dir={out}", "train.max_steps=1", "train.eval_every=1", *QUIET]
    assert main(args) == 0
    assert main(args) == 0  # its own earlier output (the marker says so): replaced
    assert json.loads((out / ".hf_pretrain_output.json").read_text())["command"] == "finetune"
    # Its own earlier output, but also the model this run would read: replacing it would lose the model.
    assert main([*args, f"model={out / 'model'}"]) == 2
    assert f"holds {out / 'model'}, which this run fine-tunes from" in capsys.readouterr().err
    assert (out / "model" / "model.safetensors").is_file()
    (out / "notes.md").write_text("kept")
    assert main(args) == 2
    assert f"output.dir={str(out)!r} holds notes.md" in capsys.readouterr().err
    assert (out / "notes.md").read_text() == "kept"


def test_finetune_never_runs_code_files_of_our_own_folder(encoder_dir, sentiment_files, tmp_path):
    """Our families load through the installed classes: a folder of ours whose code files (and a tokenizer
    auto_map) raise when run fine-tunes all the same, pretrained and from scratch."""
    folder = tiny_models.tamper_code_files(shutil.copytree(encoder_dir, tmp_path / "tampered"))
    train, _ = sentiment_files
    out = tmp_path / "out"
    assert main([
        "finetune", "finetune-classification", f"model={folder}", "data.source=files", f"data.train_files={train}",
        f"output.dir={out}", "train.max_steps=1", "train.eval_every=1", *QUIET, "--compare-scratch",
    ]) == 0
    # The saved tokenizer names no code: the built-in class that loaded it is what loads it again.
    assert "auto_map" not in json.loads((out / "model" / "tokenizer_config.json").read_text())


def test_finetune_runs_a_foreign_models_code_only_with_trust_remote_code(sentiment_files, tmp_path, capsys):
    folder = tiny_models.save_foreign_code_folder(tmp_path / "foreign")
    train, _ = sentiment_files
    out = tmp_path / "out"
    args = ["finetune", "finetune-classification", f"model={folder}", "data.source=files",
            f"data.train_files={train}", f"output.dir={out}", *QUIET]
    assert main(args) == 2
    error = capsys.readouterr().err
    assert "trust_remote_code=true" in error and "modeling_foreign.py" in error and str(folder) in error
    assert not out.exists()  # refused before any work
    with pytest.raises(RecipeError, match=r"trust_remote_code='maybe' is not allowed; it must be true/false"):
        finetune_recipe_from_dict({"trust_remote_code": "maybe"})
    with pytest.raises(RuntimeError, match=tiny_models.FOREIGN):  # asked for: its code runs (and here raises)
        main([*args, "--trust-remote-code"])


def test_any_transformers_checkpoint_fine_tunes_with_its_own_inputs(tmp_path, sentiment_files):
    """A built-in transformers architecture (BERT) goes through the same path; its token_type_ids are kept
    because its forward takes them, and LoRA names that do not exist in it are refused clearly."""
    from transformers import BertConfig, BertForMaskedLM

    tokenizer = tiny_models.make_tokenizer()
    folder = tmp_path / "bert"
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64, pad_token_id=tokenizer.pad_token_id)
    BertForMaskedLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    train, _ = sentiment_files
    common = [f"model={folder}", "data.source=files", f"data.train_files={train}", "train.max_steps=2",
              "train.eval_every=2", *QUIET]
    result = finetune("finetune-classification", [*common, f"output.dir={tmp_path / 'out'}"])
    assert json.loads((tmp_path / "out" / "model" / "config.json").read_text())["model_type"] == "bert"
    assert result["runs"]["pretrained"]["steps"] == 2
    from transformers import AutoModelForSequenceClassification

    from hf_pretrain.finetune import model_input_names

    bert = AutoModelForSequenceClassification.from_pretrained(tmp_path / "out" / "model")
    ours = AutoModelForSequenceClassification.from_config(tiny_models.encoder_config(tokenizer))
    assert "token_type_ids" in model_input_names(bert) and "token_type_ids" not in model_input_names(ours)
    card = check_card(tmp_path / "out", "text-classification")
    assert "(transformers `bert`)" in card.text and "trust_remote_code" not in card.text  # built-in: no code to run
    pytest.importorskip("peft")
    with pytest.raises(RecipeError, match="lora.target_modules names 'qkv_proj', which this model does not have"):
        finetune("finetune-classification", [*common, f"output.dir={tmp_path / 'lora'}", "lora={}"])


def test_card_names_a_hub_base_model_and_hub_dataset_in_its_metadata(tmp_path):
    """What a run from a Hub model on a Hub dataset records (metrics.json as finetune writes it) becomes base_model
    and datasets; no training needed for that, so a tiny RoBERTa token classifier is saved as is."""
    import yaml
    from transformers import RobertaConfig, RobertaForTokenClassification

    from hf_pretrain.hub.finetuned_card import write_finetuned_card

    tags = ["O", "B-LOC", "I-LOC"]
    out = tmp_path / "ner-run"
    config = RobertaConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                           intermediate_size=32, max_position_embeddings=40, num_labels=3,
                           id2label=dict(enumerate(tags)), label2id={t: i for i, t in enumerate(tags)})
    RobertaForTokenClassification(config).save_pretrained(out / "model")
    scores = {"test": {"precision": 0.5, "recall": 0.25, "f1": 0.3333333, "accuracy": 0.9, "loss": 0.3},
              "validation": {"f1": 0.4}, "train_minutes": 2.5, "trainable_parameters": 100, "parameters": 1000,
              "steps": 7}
    metrics = {"task": "token-classification", "problem_type": "single_label_classification",
               "model": "someone/tiny-roberta", "model_path": "someone/tiny-roberta",
               "dataset": {"source": "hub", "name": "eriktks/conll2003", "config": None}, "train_examples": 1200,
               "label_names": tags, "main_metric": "f1", "freeze_encoder": True,
               "warm_start": {"shrink": 1.0, "perturb": 0.0}, "linear_probe": {"epochs": 0.0, "lr": 0.003},
               "lora": None, "runs": {"pretrained": scores}, "model_dir": str(out / "model")}
    (out / "metrics.json").write_text(json.dumps(metrics))
    recipe = load_finetune_recipe("finetune-ner", ["model=someone/tiny-roberta", "data.source=hub",
                                                   "data.hub_dataset=eriktks/conll2003", "train.lr=5e-5"])
    write_finetuned_card(out / "model", metrics, recipe.to_dict())
    card = check_card(out, "token-classification", base_model="someone/tiny-roberta")
    assert card.data.datasets == ["eriktks/conll2003"]
    assert {r.dataset_type for r in card.data.eval_results} == {"eriktks/conll2003"}
    assert "[someone/tiny-roberta](https://huggingface.co/someone/tiny-roberta)" in card.text
    assert "linear probe: the encoder frozen" in card.text and "AdamW, lr 5e-05" in card.text
    assert "trust_remote_code" not in card.text and "| 0.3333 |" in card.text  # the test split, not validation
    assert yaml.safe_load(card.content.split("---")[1])["base_model"] == "someone/tiny-roberta"


def test_trainer_fields_reach_the_training_arguments(tmp_path):
    from hf_pretrain.finetune import training_arguments

    recipe = load_finetune_recipe("finetune-classification", [
        "model=some/model", "train.report_to=tensorboard", "train.activation_checkpointing=true",
        "train.push_to_hub=true", "train.hub_model_id=me/tiny-classifier"])
    arguments = training_arguments(recipe, tmp_path / "checkpoints", "f1")
    assert arguments.report_to == ["tensorboard"] and arguments.activation_checkpointing
    # Trainer pushes nothing (it would push its checkpoints with a card of its own): `finetune` pushes OUTPUT/model.
    assert not arguments.push_to_hub
    defaults = training_arguments(load_finetune_recipe("finetune-classification", ["model=m"]), tmp_path, "f1")
    assert (defaults.report_to, defaults.activation_checkpointing, defaults.push_to_hub) == ([], False, False)


def test_what_trainer_fields_need_from_the_machine_is_checked_before_any_work(tmp_path, monkeypatch):
    from transformers.integrations import get_available_reporting_integrations

    out = tmp_path / "out"
    common = ["model=some/model", f"output.dir={out}"]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RecipeError, match="train.push_to_hub=true cannot push to 'me/tiny': HF_HUB_OFFLINE is set"):
        finetune("finetune-classification", [*common, "train.push_to_hub=true", "train.hub_model_id=me/tiny"])
    missing = next(name for name in ("wandb", "mlflow", "comet_ml", "neptune")
                   if name not in get_available_reporting_integrations())
    with pytest.raises(RecipeError, match=f"train.report_to names '{missing}', which is not installed here"):
        finetune("finetune-classification", [*common, f"train.report_to={missing}"])
    assert not out.exists()


def test_a_causal_lm_checkpoint_fine_tunes_for_classification(sentiment_files, tmp_path):
    """A decoder (objective clm) gets the last-token sequence-classification head and learns the easy task."""
    decoder_dir = tiny_models.save_decoder(tmp_path / "decoder")
    train, test = sentiment_files
    out = tmp_path / "out"
    result = finetune("finetune-classification", [
        f"model={decoder_dir}", "data.source=files", f"data.train_files={train}", f"data.test_files={test}",
        f"output.dir={out}", "train.epochs=4", "train.batch_size=16", "train.lr=2e-3", *QUIET,
    ])
    assert result["runs"]["pretrained"]["test"]["accuracy"] >= 0.8, result["runs"]["pretrained"]
    config = json.loads((out / "model" / "config.json").read_text())
    assert config["architectures"] == ["PretrainDecoderForSequenceClassification"]


FINETUNE_PUSH_SCRIPT = """
import sys
from hf_pretrain.cli import main
sys.exit(main(["finetune", "finetune-classification", f"model={sys.argv[1]}", "data.source=files",
               f"data.train_files={sys.argv[2]}", f"output.dir={sys.argv[3]}", "train.epochs=1",
               "train.push_to_hub=true", "train.hub_model_id=me/tiny-classifier", "--quiet"]))
"""


def test_push_to_hub_uploads_the_model_folder_with_our_card(encoder_dir, sentiment_files, tmp_path):
    """train.push_to_hub: what arrives at the Hub (a loopback stand-in, HF_ENDPOINT) is OUTPUT/model as a user loads
    it, with our card naming the repository; no Trainer checkpoint and no card of Trainer's."""
    import os
    import subprocess
    import sys

    from fake_hub import FakeHub

    out = tmp_path / "out"
    with FakeHub() as hub:
        env = dict(os.environ, HF_ENDPOINT=hub.endpoint, HF_TOKEN="hf_test_token", HF_HUB_OFFLINE="0",
                   HF_HUB_DISABLE_TELEMETRY="1", OMP_NUM_THREADS="1")
        result = subprocess.run([sys.executable, "-c", FINETUNE_PUSH_SCRIPT, str(encoder_dir), str(sentiment_files[0]),
                                 str(out)], env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
        files = hub.committed_files()
        requests = list(hub.requests)
    assert result.returncode == 0, result.stderr[-3000:]
    assert any(r["path"] == "/api/models/me/tiny-classifier/commit/main" for r in requests)
    assert files.keys() == {str(p.relative_to(out / "model")) for p in (out / "model").rglob("*") if p.is_file()}
    assert files["model.safetensors"] == (out / "model" / "model.safetensors").read_bytes()
    card = files["README.md"].decode()
    assert "hf_pretrain" in card and "me/tiny-classifier" in card and "path/to/" not in card
    assert read_metrics(out)["pushed"]
