"""Handing a model to the ecosystem: Hub-ready export and push, model cards, run reports, sentence vectors.

* `export_run(run_dir, out=None, encoder_only=False, finetune_metrics=None, repo_id=None)` -> export folder
* `push_folder(folder, repo_id, private=False)` -> commit URL
* `build_card(folder, run, ...)` / `write_card(...)` -> model card (README.md) from templates/model_card.md
* `write_report(run_dir, out=None)` -> loss/lr/throughput PNGs + report.md
* `embed_file(model, file, out, ...)`, `embed_texts(model, tokenizer, texts, pooling=...)` -> sentence vectors
"""

from .card import build_card, template_path, write_card
from .embed import embed_file, embed_texts, load_feature_model
from .export import ExportError, export_run, find_finetune_metrics, push_folder
from .report import write_report

__all__ = [
    "export_run",
    "push_folder",
    "find_finetune_metrics",
    "ExportError",
    "build_card",
    "write_card",
    "template_path",
    "write_report",
    "embed_file",
    "embed_texts",
    "load_feature_model",
]
