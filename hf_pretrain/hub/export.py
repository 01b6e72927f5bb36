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
from .stock_export import TARGETS, check_parity, stock_problems, to_stock
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
    """The folder's model_type: one of our families, or a stock architecture a recipe trained (model.architecture)."""
    import transformers

    config = json.loads((folder / "config.json").read_text())
    model_type, architecture = config.get("model_type"), (config.get("architectures") or [""])[0]
    if model_type not in EXPORT_LOADERS and not (is_stock(config) and hasattr(transformers, architecture)):
        raise ExportError(f"{folder} holds model_type={model_type!r} ({architecture}); export handles "
                          f"{', '.join(EXPORT_LOADERS)} and the stock architectures hf_pretrain trains.")
    return model_type


def is_stock(config: dict) -> bool:
    """A stock transformers architecture: no model code of ours (no auto_map), not one of our families."""
    return config.get("model_type") not in EXPORT_LOADERS and not config.get("auto_map")


# `--as` values: our own family (with its code), the stock class the family converts to, or the automatic choice.
EXPORT_AS = ("hf_pretrain", "stock", *dict.fromkeys(TARGETS.values()))


def stock_target(final: Path, model_type: str, as_class: str | None) -> str | None:
    """The stock architecture to convert final/ to (None: export it as it is), refused before anything is written
    when it cannot be exact."""
    from transformers import AutoConfig

    if as_class in (None, "hf_pretrain"):
        if as_class == "hf_pretrain" and model_type not in EXPORT_LOADERS:
            raise ExportError(f"--as hf_pretrain: {final} holds a stock {model_type} model, not one of our families; "
                              "export it without --as.")
        return None
    if as_class not in EXPORT_AS:
        raise ExportError(f"--as {as_class!r} is not allowed; choose one of {', '.join(EXPORT_AS)}.")
    if model_type not in EXPORT_LOADERS:  # trained as a stock architecture: it is one already
        if as_class in ("stock", model_type):
            return None
        raise ExportError(f"--as {as_class}: {final} holds a stock {model_type} model; it exports as {model_type}.")
    target = TARGETS.get(model_type)
    if target is None or as_class not in ("stock", target):
        fits = f"it converts to {target} (--as {target})" if target else "no stock class fits it"
        raise ExportError(f"--as {as_class}: a {model_type} model does not convert to {as_class}; {fits}.")
    problems = stock_problems(AutoConfig.from_pretrained(final, trust_remote_code=False), target)
    if problems:
        raise ExportError(f"--as {as_class}: this run's model is not exactly {target}: {'; '.join(problems)}. "
                          "Export it without --as (our family, with its code), or train with those settings.")
    return target


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


def save_model(final: Path, out: Path, model_type: str, target: str | None = None) -> dict | None:
    """Re-save through save_pretrained so the code files, the full auto_map and (DAE) the generation config are
    written by the installed package, whatever wrote final/. With a stock `target`, the converted model is saved
    instead, after its parity check; returns that check's report (None without a conversion)."""
    import transformers

    config = json.loads((final / "config.json").read_text())
    if is_stock(config):  # a stock architecture trained here: its own class, no code of ours
        loader = getattr(transformers, config["architectures"][0])
    else:
        loader = getattr(transformers, export_loader(final, model_type))
    model = loader.from_pretrained(final, trust_remote_code=False)  # model_type_of admitted ours and stock ones
    parity = None
    if target is not None:
        tokenizer = transformers.AutoTokenizer.from_pretrained(final) if (final / "tokenizer.json").is_file() else None
        stock = to_stock(model.float(), target, tokenizer)
        pad_id = tokenizer.pad_token_id if tokenizer is not None else model.config.pad_token_id
        parity = check_parity(model, stock, pad_id)
        if stock.can_generate():
            stock.generation_config.pad_token_id = pad_id
        model = stock
    model.save_pretrained(out)
    if getattr(model, "can_generate", lambda: False)() and not (out / "generation_config.json").is_file():
        model.generation_config.save_pretrained(out)
    if model_type == "hf_pretrain_dae" and getattr(model.config, "bottleneck", None) == "pooled":
        from .retrieval import write_sentence_transformers_config

        # The pooled sentence vector is the point of a TSDAE-style model: make it load in sentence-transformers.
        write_sentence_transformers_config(out)
    return parity


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
               license: str | None = None, as_class: str | None = None) -> Path:
    """Write the Hub-ready folder (default RUN/export, RUN/export-encoder with encoder_only, RUN/export-<stock>
    converted) and return it. `as_class`: None or "hf_pretrain" (as trained), "llama" / "modernbert" (our family
    converted to that stock class, exactly or not at all), "stock" (the stock class that fits)."""
    run_dir = Path(run_dir)
    final = final_folder(run_dir, error=ExportError)
    model_type = model_type_of(final)
    if encoder_only and as_class not in (None, "hf_pretrain"):
        raise ExportError(f"--encoder-only with --as {as_class}: export the encoder as our family, or the whole run.")
    target = stock_target(final, model_type, as_class)  # refused here, before anything is written
    default = run_dir / ("export-encoder" if encoder_only else f"export-{target}" if target else "export")
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
                           model_name=repo_id.split("/")[-1] if repo_id else out.name, target=target)
        write_output_marker(staging, "export", (p.name for p in staging.iterdir()))
        swap_into_place(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def fill_export_folder(run_dir: Path, final: Path, staging: Path, model_type: str, encoder_only: bool,
                       finetune_metrics, repo_id, license, model_name: str, target: str | None = None) -> None:
    conversion = None
    if encoder_only:
        if model_type != "hf_pretrain_dae":
            raise ExportError(f"--encoder-only is for denoising-autoencoder runs; this run's model_type is {model_type!r}.")
        export_dae_encoder(final, staging)
    else:
        parity = save_model(final, staging, model_type, target)
        if parity is not None:
            architecture = json.loads((final / "config.json").read_text())["architectures"][0]
            conversion = {"from": f"`{architecture}` (hf_pretrain's {model_type.removeprefix('hf_pretrain_')} "
                                  "family)", "parity": parity}
            stock_class = json.loads((staging / "config.json").read_text())["architectures"][0]
            logger.info(f"converted {architecture} to {stock_class}: fp32 logits within "
                        f"{parity['max_abs_logit_difference']:.1e}"
                        + (", the same greedy tokens" if parity.get("greedy_tokens_equal") else ""))
        copy_tokenizer(final, staging)
    for name, target in (("recipe.yaml", "recipe.yaml"), ("summary.json", "training_summary.json")):
        if (run_dir / name).is_file():
            shutil.copy2(run_dir / name, staging / target)
    run = read_run(run_dir) if (run_dir / "metrics.jsonl").is_file() else {"records": [], "summary": {}, "recipe": {}}
    write_card(staging, run, finetune_metrics=load_finetune_metrics(run_dir, finetune_metrics),
               repo_id=repo_id, loss_curve=draw_loss_curve(run, staging), license=license,
               model_name=model_name, conversion=conversion)
    if not is_stock(json.loads((staging / "config.json").read_text())):
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
