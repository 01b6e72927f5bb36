"""What a run reports while it trains: the device peak that MFU is measured against, the metrics log
(metrics.jsonl + Accelerate's trackers) and the progress bar. A step's FLOPs are counted by the model classes
(`training_flops`) and the objectives; a record's numbers by the log window (step_outcomes.py)."""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import os
import time
from pathlib import Path

import torch

from ..console import shows_progress
from ..recipe.resume import flat_items

logger = logging.getLogger(__name__)

# Dense (no sparsity) peak TFLOP/s per device for the precisions we train in, from the vendors' datasheets.
DOCUMENTED_PEAK_TFLOPS = {
    ("H200", "bf16"): 989.0,
    ("H100", "bf16"): 989.0,  # SXM; PCIe is 756
    ("A100", "bf16"): 312.0,
    ("A10G", "bf16"): 125.0,
    ("L4", "bf16"): 121.0,
    ("H100", "fp32"): 67.0,
    ("A100", "fp32"): 19.5,  # 156 with TF32 tensor cores
}

_measured_cpu_peak: dict[int, float] = {}


def measure_cpu_matmul_tflops(size: int = 1024, repeats: int = 5) -> float:
    """Best-of-N fp32 GEMM throughput of this CPU with torch's current thread count (TFLOP/s), measured once."""
    threads = torch.get_num_threads()
    if threads not in _measured_cpu_peak:
        a, b = torch.randn(size, size), torch.randn(size, size)
        torch.mm(a, b)  # warm-up: thread pool and caches
        best = math.inf
        for _ in range(repeats):
            start = time.perf_counter()
            torch.mm(a, b)
            best = min(best, time.perf_counter() - start)
        _measured_cpu_peak[threads] = 2 * size**3 / best / 1e12
    return _measured_cpu_peak[threads]


def peak_tflops(device: torch.device, precision: str, override: float | None = None) -> tuple[float, str]:
    """The peak MFU is measured against, and where it came from."""
    if override:
        return override, "recipe train.peak_tflops"
    if device.type == "cpu":
        return measure_cpu_matmul_tflops(), f"measured fp32 GEMM on {torch.get_num_threads()} CPU threads"
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        key_precision = "bf16" if precision in ("bf16", "fp16") else "fp32"
        for (model_name, documented_precision), value in DOCUMENTED_PEAK_TFLOPS.items():
            if model_name in name and documented_precision == key_precision:
                return value, f"datasheet {model_name} {key_precision}"
    return math.nan, "unknown device: set train.peak_tflops"


# ------------------------------------------------------------------------------------------------ trackers
TRACKER_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow", "comet_ml": "comet_ml"}


def available_trackers(names: list[str]) -> list[str]:
    """The trackers of output.log_with that are installed. Accelerate only warns when a tracker's package is
    missing; say it plainly and go on without it."""
    available = []
    for name in names:
        package = TRACKER_PACKAGES.get(name)
        if package and importlib.util.find_spec(package) is None and not (
            name == "tensorboard" and importlib.util.find_spec("tensorboardX")
        ):
            logger.warning(f"output.log_with: {name!r} is not installed; logging to metrics.jsonl only.")
            continue
        available.append(name)
    return available


def tracker_config(recipe_dict: dict) -> dict:
    """A nested recipe dict as dotted keys with scalar values, for the trackers' hyper-parameter tables."""
    return {key: value if isinstance(value, (int, float, str, bool)) else str(value)
            for key, value in flat_items(recipe_dict).items()}


class MetricsLog:
    """metrics.jsonl (always) plus whatever Accelerate trackers the run set up (TensorBoard, W&B, MLflow)."""

    def __init__(self, run_dir: Path, accelerator=None):
        self.accelerator = accelerator
        self.path = Path(run_dir) / "metrics.jsonl"
        self.is_main = accelerator is None or accelerator.is_main_process

    def log(self, record: dict, step: int) -> None:
        if not self.is_main:
            return
        record = {"step": step, "time": round(time.time(), 3), **record}
        with open(self.path, "a") as handle:
            handle.write(json.dumps(record) + "\n")
        if self.accelerator is not None and self.accelerator.trackers:
            numeric = {k: v for k, v in record.items() if isinstance(v, (int, float)) and k not in ("step", "time")}
            self.accelerator.log(numeric, step=step)


def parse_metrics(text: str) -> tuple[list[dict], int]:
    """The records of a metrics.jsonl text, and how many lines could not be read.

    A kill or a full disk mid-write leaves a torn last line (and the next append glues its record onto it): such
    lines are skipped and counted, never fatal, so they cannot block a resume or a report.
    """
    records, unreadable = [], 0
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            unreadable += 1
            continue
        if not isinstance(record, dict) or not isinstance(record.get("step"), int):
            unreadable += 1
            continue
        records.append(record)
    return records, unreadable


def read_metrics(run_dir: Path) -> list[dict]:
    """Every readable record of RUN/metrics.jsonl ([] when there is none)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    return parse_metrics(path.read_text(encoding="utf-8", errors="replace"))[0]


def truncate_metrics(path: Path, step: int) -> None:
    """Keep the records up to `step` (those after the checkpoint a run resumes from will be logged again; -1 keeps
    none) and drop unreadable lines. Rewritten through a temporary file and a rename: a kill during the rewrite
    leaves the old file or the new one, never half of it."""
    path = Path(path)
    if not path.exists():
        return
    records, unreadable = parse_metrics(path.read_text(encoding="utf-8", errors="replace"))
    temporary = path.with_name(f".{path.name}.tmp")
    with open(temporary, "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(record) + "\n" for record in records if record["step"] <= step)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    if unreadable:
        logger.warning(f"{path}: dropped {unreadable} unreadable line(s) (a write cut short by a kill or a full disk).")


# ------------------------------------------------------------------------------------------------ progress bar
class ProgressBar:
    """The run's progress in thousandths of its budget, with the last record's loss, lr and tokens/s, and the last
    eval's linear-probe accuracy when the run probes (main process, output.progress_bar, not --quiet; otherwise
    every call does nothing)."""

    def __init__(self, enabled: bool, description: str = "pretraining"):
        self.bar = None
        self.probe: str | None = None  # the last eval's probe accuracy, shown until the next eval
        if enabled and shows_progress():
            from tqdm.auto import tqdm

            self.bar = tqdm(total=1000, desc=description, unit="‰",
                            bar_format="{l_bar}{bar}| {elapsed}<{remaining} {postfix}")

    def update(self, record: dict, progress: float) -> None:
        if self.bar is None:
            return
        self.bar.update(min(int(progress * 1000), 1000) - self.bar.n)
        shown = {"loss": f"{record['loss']:.3f}", "lr": f"{record['lr']:.2e}",
                 "tok_s": f"{record['tokens_per_s']:,.0f}"}
        if self.probe is not None:
            shown["probe"] = self.probe
        self.bar.set_postfix(shown)

    def show_eval(self, metrics: dict) -> None:
        """Keep the eval's probe accuracy on the bar."""
        if "probe_accuracy" in metrics:
            self.probe = f"{100 * metrics['probe_accuracy']:.1f}%"

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
