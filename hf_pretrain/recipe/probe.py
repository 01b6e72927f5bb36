"""The `probe` section: a small labeled set on which every eval fits a linear probe of the frozen model's features.

Without it a user watches the pretraining loss fall and cannot tell whether the model gets more useful for their
task. With it, at step 0 and at every eval, the run pools the model's features of the probe's texts (as `embed`
does), fits a linear classifier on a fixed part of them and reports accuracy and macro F1 on the rest
(hf_pretrain/training/probe.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from .fields import RecipeError, choice, listing, ranged, setting

PROBE_FORMATS = ("auto", "jsonl", "csv", "parquet")


@dataclass
class ProbeSection:
    """A labeled set probed at every eval (a linear classifier on the frozen model's pooled features)."""

    source: str = choice(
        "auto", "auto", "none", "builtin", "files",
        doc="auto: the built-in task when the data (every source of data.sources) is the built-in corpus, no probe "
            "otherwise; builtin: the built-in task's training split (which standard-library package a docstring is "
            "from; its test split is never used); files: probe.files; none: no probe")
    files: list = listing("source=files: labeled files (jsonl, csv or parquet) with text_column and label_column")
    format: str = choice("auto", *PROBE_FORMATS, doc="file format of probe.files (auto: by extension)")
    text_column: str = setting("text", "the column holding the text")
    label_column: str = setting("label", "the column holding the label (a class name or number)")
    max_examples: int = ranged(
        2000, low=8, doc="labeled examples the probe reads (a fixed subset by a hash of each text, when there are more)")
    test_fraction: float = ranged(
        0.25, low=0.05, high=0.75, doc="share of the probe's examples held out to score it (a fixed split)")
    l2: float = ranged(1e-3, low=0.0, doc="L2 penalty of the linear probe (on standardized features)")
    pooling: str = choice(
        "auto", "auto", "mean", "cls", "pooler",
        doc="how token states become one vector, as `hf-pretrain embed` does (auto: the autoencoder's pooler, "
            "else the mean over real tokens)")


def check_probe(probe: ProbeSection, data_source: str) -> None:
    """A files probe names its files; any other source must not name them (they would be ignored)."""
    if probe.source == "files" and not probe.files:
        raise RecipeError("probe.source='files' needs probe.files (labeled jsonl, csv or parquet files).")
    if probe.files and probe.source != "files":
        raise RecipeError(
            f"probe.files is set but probe.source={probe.source!r} would ignore it; set probe.source=files.")


def probe_source(probe: ProbeSection, data) -> str:
    """The probe a run uses: none, builtin or files. auto is the built-in task when every source of the data section
    (`data`: a DataSection; each of data.sources in a mixture) is the built-in corpus, and no probe otherwise: a
    user's own corpus has none unless the recipe names one."""
    from .data import source_sections

    if probe.source == "auto":
        return "builtin" if all(section.source == "builtin" for section in source_sections(data)) else "none"
    return probe.source
