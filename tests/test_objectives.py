"""The objective registry (hf_pretrain/objectives.py): every entry names a class that implements it, and outside
the registry and the objective classes no code branches on an objective's name."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from hf_pretrain.objectives import OBJECTIVES, objective_class, readers_of
from hf_pretrain.recipe import Recipe, documented_keys, recipe_from_dict

PACKAGE = Path(__file__).resolve().parents[1] / "hf_pretrain"


@pytest.mark.parametrize("name", list(OBJECTIVES))
def test_each_entry_names_its_class_and_the_recipe_sections_it_reads_exist(name):
    from hf_pretrain.training.objectives import Objective

    spec = OBJECTIVES[name]
    assert issubclass(objective_class(name), Objective)
    sections = {key.split(".")[0] for key, _, _ in documented_keys(Recipe)}
    assert set(spec.all_sections) <= sections
    assert spec.eval_metrics and spec.describe(recipe_from_dict({"objective": name, "train": {"max_steps": 1}}
                                                                ).to_dict())
    if spec.reads_text:
        from hf_pretrain.data.tokenizer import TOKENIZER_LAYOUTS

        assert spec.tokenizer_layout in TOKENIZER_LAYOUTS


def test_a_section_is_read_by_the_objectives_whose_entry_names_it():
    assert readers_of("masking") == ["mlm", "rtd"] and readers_of("noise") == ["dae"]
    assert readers_of("train") == list(OBJECTIVES)


# `objective == "mlm"`, `objective in ("dae", ...)`, `OBJECTIVES["clm"]`, ... with any registered name.
NAMES = "|".join(re.escape(name) for name in sorted(OBJECTIVES, key=len, reverse=True))
BRANCH = re.compile(rf"""objective\W{{0,3}}\s*(==|!=|\bin\b|\bnot in\b)|OBJECTIVES\[["'](?:{NAMES})["']\]"""
                    rf"""|["'](?:{NAMES})["']\s*(==|!=|\bin\b)""")


def test_no_code_outside_the_registry_and_the_objective_classes_branches_on_an_objective_name():
    allowed = {PACKAGE / "objectives.py", *(PACKAGE / "training" / "objectives").glob("*.py")}
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path in allowed or "models" in path.parts:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if BRANCH.search(code):
                offenders.append(f"{path.relative_to(PACKAGE)}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)
