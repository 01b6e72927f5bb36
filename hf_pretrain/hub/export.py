"""`hf-pretrain export RUN_DIR`: a Hub-ready folder from a pretraining run, and pushing it to the Hub.

The folder holds: weights (`model.safetensors`), `config.json` with the family's full `auto_map`, the modeling code
(copied by `save_pretrained`), the tokenizer, `generation_config.json` for the denoising autoencoder, the resolved
`recipe.yaml`, `training_summary.json`, `loss_curve.png` (when matplotlib is installed) and the model card
`README.md`. `encoder_only=True` exports a denoising autoencoder's encoder as an encoder-family checkpoint.

The run's model and tokenizer load through the classes hf_pretrain installs, never through the .py files in final/;
the code files in the export are the installed package's. `--out` must be a new or empty folder or an earlier export
(it holds the marker `.hf_pretrain_output.json`, which is not pushed); an earlier export is replaced by building the
new one beside it and swapping the two, so a failure leaves one of them in place.

Pushing uses huggingface_hub's `create_repo` + `upload_folder`; with HF_HUB_OFFLINE set it fails before any request.
"""

from __future__ import annotations

import json
import logging
import secrets
import shutil
from pathlib import Path

from ..folders import (
    OUTPUT_MARKER,
    check_output_dir,
    final_folder,
    is_or_holds,
    save_tokenizer,
    swap_into_place,
    write_output_marker,
)
from ..offline import hub_offline
from .card import write_card
from .report import PlotsUnavailable, plot_loss, read_run

logger = logging.getLogger(__name__)

EXPORT_LOADERS = {  # model_type -> the Auto class that loads the run's final model with its head
    "hf_pretrain_encoder": "AutoModelForMaskedLM",
    "hf_pretrain_decoder": "AutoModelForCausalLM",
    "hf_pretrain_dae": "AutoModelForSeq2SeqLM",
    "hf_pretrain_dae_features": "AutoModel",
}


class ExportError(ValueError):
    """The run folder cannot be exported as asked; the message says why and what to do."""


def model_type_of(folder: Path) -> str:
    model_type = json.loads((folder / "config.json").read_text()).get("model_type")
    if model_type not in EXPORT_LOADERS:
        raise ExportError(f"{folder} holds model_type={model_type!r}; export handles {', '.join(EXPORT_LOADERS)}.")
    return model_type


def export_loader(folder: Path, model_type: str) -> str:
    """The Auto class that loads the folder with the head it was saved with: the `auto_map` entry naming its
    architecture (a replaced-token-detection discriminator is AutoModelForPreTraining, not the family's masked LM,
    whose head it does not have), else the family's default."""
    config = json.loads((folder / "config.json").read_text())
    architecture = (config.get("architectures") or [None])[0]
    for auto_class, reference in (config.get("auto_map") or {}).items():
        if architecture and reference.endswith(f".{architecture}") and auto_class != "AutoConfig":
            return auto_class
    return EXPORT_LOADERS[model_type]


def save_model(final: Path, out: Path, model_type: str) -> None:
    """Re-save through save_pretrained so the code files, the full auto_map and (DAE) the generation config are
    written by the installed package, whatever wrote final/."""
    import transformers

    loader = getattr(transformers, export_loader(final, model_type))
    model = loader.from_pretrained(final, trust_remote_code=False)  # model_type_of admitted only our families
    model.save_pretrained(out)
    if getattr(model, "can_generate", lambda: False)() and not (out / "generation_config.json").is_file():
        model.generation_config.save_pretrained(out)
    if model_type == "hf_pretrain_dae" and getattr(model.config, "bottleneck", None) == "pooled":
        from .retrieval import write_sentence_transformers_config

        # The pooled sentence vector is the point of a TSDAE-style model: make it load in sentence-transformers.
        write_sentence_transformers_config(out)


def copy_tokenizer(final: Path, out: Path) -> None:
    if (final / "tokenizer.json").is_file() or (final / "tokenizer_config.json").is_file():
        from transformers import AutoTokenizer

        save_tokenizer(AutoTokenizer.from_pretrained(final, trust_remote_code=False), out)


def export_dae_encoder(dae_dir: Path, out: Path) -> Path:
    """A denoising autoencoder's encoder (and its tokenizer) as an encoder-family folder, which every fine-tuning
    head loads: `export --encoder-only` and fine-tuning from an autoencoder both write it this way."""
    from transformers import AutoModel, AutoModelForSeq2SeqLM

    config = json.loads((Path(dae_dir) / "config.json").read_text())
    loader = AutoModelForSeq2SeqLM if "PretrainDAEForDenoising" in config.get("architectures", []) else AutoModel
    loader.from_pretrained(dae_dir, trust_remote_code=False).export_encoder(out)  # our family: installed classes
    copy_tokenizer(Path(dae_dir), Path(out))
    return Path(out)


def find_finetune_metrics(run_dir: Path) -> Path | None:
    """A fine-tuning metrics.json inside the run folder (e.g. RUN/finetune-*/metrics.json), newest first."""
    found = [p for p in run_dir.glob("*/metrics.json") if is_finetune_metrics(p)]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def is_finetune_metrics(path: Path) -> bool:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return isinstance(data, dict) and "runs" in data and "task" in data


def check_auto_map(out: Path) -> None:
    """Every class the auto_map names must have its code file in the folder, or remote loading fails later."""
    config = json.loads((out / "config.json").read_text())
    auto_map = config.get("auto_map") or {}
    missing = sorted({ref.split(".")[0] + ".py" for ref in auto_map.values() if not (out / (ref.split(".")[0] + ".py")).is_file()})
    if not auto_map or missing:
        raise ExportError(f"the exported config's auto_map is incomplete (missing code files: {missing or 'all'}).")


def export_run(run_dir: str | Path, out: str | Path | None = None, encoder_only: bool = False,
               finetune_metrics: str | Path | None = None, repo_id: str | None = None,
               license: str | None = None) -> Path:
    """Write the Hub-ready folder (default RUN/export, or RUN/export-encoder with encoder_only) and return it."""
    run_dir = Path(run_dir)
    final = final_folder(run_dir, error=ExportError)
    model_type = model_type_of(final)
    default = run_dir / ("export-encoder" if encoder_only else "export")
    out = Path(out) if out else default
    if is_or_holds(out, final):  # final/ itself, the run folder, or a folder above it
        raise ExportError(f"--out {out} would overwrite the run itself ({run_dir}); allowed: a new or empty folder, "
                          f"or an earlier export (the default is {default}).")
    check_output_dir(out, "export", "--out", error=ExportError)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Built aside under a name no one else uses (so nothing but our own staging is ever removed), then swapped in.
    staging = out.with_name(f".{out.name}.export-{secrets.token_hex(4)}")
    staging.mkdir()
    try:
        fill_export_folder(run_dir, final, staging, model_type, encoder_only, finetune_metrics, repo_id, license,
                           model_name=repo_id.split("/")[-1] if repo_id else out.name)
        write_output_marker(staging, "export", (p.name for p in staging.iterdir()))
        swap_into_place(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def fill_export_folder(run_dir: Path, final: Path, staging: Path, model_type: str, encoder_only: bool,
                       finetune_metrics, repo_id, license, model_name: str) -> None:
    if encoder_only:
        if model_type != "hf_pretrain_dae":
            raise ExportError(f"--encoder-only is for denoising-autoencoder runs; this run's model_type is {model_type!r}.")
        export_dae_encoder(final, staging)
    else:
        save_model(final, staging, model_type)
        copy_tokenizer(final, staging)
    for name, target in (("recipe.yaml", "recipe.yaml"), ("summary.json", "training_summary.json")):
        if (run_dir / name).is_file():
            shutil.copy2(run_dir / name, staging / target)
    run = read_run(run_dir) if (run_dir / "metrics.jsonl").is_file() else {"records": [], "summary": {}, "recipe": {}}
    write_card(staging, run, finetune_metrics=load_finetune_metrics(run_dir, finetune_metrics),
               repo_id=repo_id, loss_curve=draw_loss_curve(run, staging), license=license,
               model_name=model_name)
    check_auto_map(staging)


def draw_loss_curve(run: dict, folder: Path) -> str | None:
    if not run["records"]:
        return None
    try:
        return plot_loss(run["records"], folder / "loss_curve.png").name
    except PlotsUnavailable as missing:
        logger.warning(f"no loss-curve picture in the card: {missing}")
        return None


def load_finetune_metrics(run_dir: Path, given: str | Path | None) -> dict | None:
    """The given fine-tuning metrics.json, else one found inside the run folder, else None."""
    path = Path(given) if given else find_finetune_metrics(run_dir)
    if path is None:
        return None
    if not is_finetune_metrics(path):
        raise ExportError(f"--finetune-metrics {path} is not a metrics.json written by hf-pretrain finetune.")
    logger.info(f"fine-tuning results from {path} go into the card")
    return json.loads(path.read_text())


# --------------------------------------------------------------------------------------------------- push
def push_folder(folder: str | Path, repo_id: str, private: bool = False, token: str | None = None,
                commit_message: str = "Upload model exported with hf_pretrain") -> str:
    """create_repo (exist_ok) + upload_folder; returns the commit URL. Fails fast and clearly when offline."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    if "/" not in repo_id or repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise ExportError(f"--push-to-hub {repo_id!r} is not allowed; write it as user/name or org/name.")
    if hub_offline():
        raise ExportError(
            f"cannot push to {repo_id!r}: HF_HUB_OFFLINE is set. The exported folder {folder} is complete; push it "
            "later with network access (unset HF_HUB_OFFLINE) or with `hf upload`."
        )
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        # The output marker is local bookkeeping (what a re-export may replace), not part of the model.
        commit = api.upload_folder(repo_id=repo_id, folder_path=str(folder), commit_message=commit_message,
                                   ignore_patterns=[OUTPUT_MARKER])
    except (HfHubHTTPError, OSError) as error:  # OSError covers connection failures
        raise ExportError(
            f"pushing {folder} to {repo_id!r} at {api.endpoint} failed: {type(error).__name__}: {error}. "
            "Check the network, that you are logged in (`hf auth login` or HF_TOKEN) and may write to that namespace."
        ) from error
    return str(getattr(commit, "commit_url", commit))


__all__ = ["export_run", "push_folder", "find_finetune_metrics", "ExportError"]
