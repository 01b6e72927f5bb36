"""The device peak that MFU is measured against, and the metrics log (metrics.jsonl + Accelerate trackers).
A step's FLOPs are counted by the model classes (`training_flops`) and the objectives."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import torch

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


def truncate_metrics(path: Path, step: int, announce=print) -> None:
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
        announce(f"{path}: dropped {unreadable} unreadable line(s) (a write cut short by a kill or a full disk).")
