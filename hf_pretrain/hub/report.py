"""`hf-pretrain report RUN_DIR`: training curves as PNG files and a markdown summary of a pretraining run.

Reads RUN/metrics.jsonl (one JSON record per line: train records carry `loss`, `lr`, `tokens_per_s`, `mfu`;
eval records carry `eval/loss`, ...), RUN/summary.json and RUN/recipe.yaml. Writes into RUN/report/ (or --out):
`loss.png` (train and eval loss against step), `lr.png`, `throughput.png` (tokens/s and MFU) and `report.md`.
The PNGs need matplotlib (an optional dependency); without it the markdown is still written and says so.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from ..training.metrics import read_metrics

PLOTS_HINT = "plots need matplotlib: pip install matplotlib (or pip install 'hf_pretrain[plots]')"


class PlotsUnavailable(RuntimeError):
    """matplotlib is not installed; the message says how to install it."""


def read_run(run_dir: str | Path) -> dict:
    """metrics records, summary and recipe of a run folder (missing pieces are empty)."""
    run_dir = Path(run_dir)
    metrics_file = run_dir / "metrics.jsonl"
    if not metrics_file.is_file():
        raise FileNotFoundError(f"{run_dir} has no metrics.jsonl; is it a pretraining run folder (output.dir)?")
    records = read_metrics(run_dir)
    summary_file, recipe_file = run_dir / "summary.json", run_dir / "recipe.yaml"
    return {
        "records": records,
        "summary": json.loads(summary_file.read_text()) if summary_file.is_file() else {},
        "recipe": yaml.safe_load(recipe_file.read_text()) if recipe_file.is_file() else {},
    }


def series(records: list[dict], key: str) -> tuple[list[int], list[float]]:
    points = [(r["step"], r[key]) for r in records if isinstance(r.get(key), (int, float))]
    return [s for s, _ in points], [v for _, v in points]


def pyplot():
    try:
        import matplotlib
    except ImportError:
        raise PlotsUnavailable(PLOTS_HINT) from None
    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    return plt


def plot_loss(records: list[dict], path: Path) -> Path:
    """The train and eval loss; with a second panel of the linear probe's accuracy and macro F1 when the run
    probed (the model's usefulness for a task next to its loss)."""
    plt = pyplot()
    probe_steps, probe_accuracy = series(records, "eval/probe_accuracy")
    if probe_steps:
        figure, (axis, probe_axis) = plt.subplots(2, 1, figsize=(7, 6.5), sharex=True,
                                                  gridspec_kw={"height_ratios": [3, 2]})
    else:
        figure, axis = plt.subplots(figsize=(7, 4))
    steps, values = series(records, "loss")
    axis.plot(steps, values, label="train loss", linewidth=1, alpha=0.8)
    eval_steps, eval_values = series(records, "eval/loss")
    if eval_steps:
        axis.plot(eval_steps, eval_values, "o-", label="eval loss", linewidth=2)
    axis.set_ylabel("loss")
    axis.grid(alpha=0.3)
    axis.legend()
    if probe_steps:
        f1_steps, f1_values = series(records, "eval/probe_macro_f1")
        probe_axis.plot(probe_steps, [100 * v for v in probe_accuracy], "o-", label="probe accuracy")
        probe_axis.plot(f1_steps, [100 * v for v in f1_values], "s--", label="probe macro F1", alpha=0.8)
        probe_axis.set_ylabel("linear probe (%)")
        probe_axis.grid(alpha=0.3)
        probe_axis.legend()
        probe_axis.set_xlabel("step")
    else:
        axis.set_xlabel("step")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def plot_lr(records: list[dict], path: Path) -> Path:
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(7, 3))
    axis.plot(*series(records, "lr"))
    axis.set_xlabel("step")
    axis.set_ylabel("learning rate")
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def plot_throughput(records: list[dict], path: Path) -> Path:
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(7, 3.5))
    axis.plot(*series(records, "tokens_per_s"), color="tab:blue")
    axis.set_xlabel("step")
    axis.set_ylabel("tokens / s", color="tab:blue")
    steps, mfu = series(records, "mfu")
    if steps:
        twin = axis.twinx()  # MFU shares the x axis; its own scale on the right
        twin.plot(steps, [100 * m for m in mfu], color="tab:orange", alpha=0.7)
        twin.set_ylabel("MFU (%)", color="tab:orange")
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def markdown_summary(run: dict, images: list[str], note: str | None = None) -> str:
    summary, recipe, records = run["summary"], run["recipe"], run["records"]
    train = recipe.get("train", {})
    _, speeds = series(records, "tokens_per_s")
    _, mfu = series(records, "mfu")
    rows = [
        ("objective", summary.get("objective", recipe.get("objective"))),
        ("steps", summary.get("steps")),
        ("tokens seen", f"{summary['tokens']:,}" if "tokens" in summary else None),
        ("wall time (min)", f"{summary['minutes']:.1f}" if "minutes" in summary else None),
        ("peak lr / schedule", f"{train.get('lr')} / {train.get('schedule')}" if train else None),
        ("batch size x grad accum", f"{train.get('batch_size')} x {train.get('grad_accum')}" if train else None),
        ("mean tokens/s", f"{mean(speeds):,.0f}" if speeds else None),
        ("mean MFU", f"{100 * mean(mfu):.1f}% of {summary.get('mfu_peak', '?')}" if mfu else None),
        ("skipped (non-finite) steps", summary.get("skipped_steps")),
    ]
    lines = ["# Training report", "", "| | |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in rows if value is not None]
    before, after = summary.get("initial_eval") or {}, summary.get("final_eval") or {}
    if after:
        lines += ["", "## Evaluation (held-out validation)", "", "| metric | before training | after training |",
                  "|---|---|---|"]
        for key in ("loss", "perplexity", "accuracy", "exact_match", "clean_mse", "baseline_mse", "r2",
                    "probe_accuracy", "probe_macro_f1"):
            if key in after:
                lines.append(f"| {key} | {format_number(before.get(key))} | {format_number(after[key])} |")
    if images:
        lines += ["", "## Curves", ""] + [f"![{Path(i).stem}]({i})" for i in images]
    if note:
        lines += ["", f"_{note}_"]
    return "\n".join(lines) + "\n"


def format_number(value) -> str:
    if value is None:
        return "-"
    return f"{value:.4f}" if abs(value) < 1000 else f"{value:,.1f}"


def write_report(run_dir: str | Path, out: str | Path | None = None) -> dict:
    """Write the PNGs (when matplotlib is installed) and report.md; returns {"markdown": path, "images": [...],
    "note": why plots are missing or None}."""
    run = read_run(run_dir)
    out = Path(out) if out else Path(run_dir) / "report"
    out.mkdir(parents=True, exist_ok=True)
    images, note = [], None
    try:
        for name, plot in (("loss.png", plot_loss), ("lr.png", plot_lr), ("throughput.png", plot_throughput)):
            images.append(plot(run["records"], out / name).name)
    except PlotsUnavailable as missing:
        note = str(missing)
    markdown = out / "report.md"
    markdown.write_text(markdown_summary(run, images, note))
    return {"markdown": markdown, "images": [out / i for i in images], "note": note}


__all__ = ["write_report", "read_run", "plot_loss", "plot_lr", "plot_throughput", "PlotsUnavailable", "PLOTS_HINT"]
