"""Entity-level precision, recall and F1 for BIO-tagged sequences (hf_pretrain's offline module, no seqeval).

An entity is a maximal run `B-X I-X ... I-X`. As in conlleval (and seqeval's default mode), an `I-X` that does not
continue an entity of type X (after `O`, or after another type) starts a new entity instead of being dropped.
A predicted entity counts only if its type, start and end all match a reference entity. Output keys follow the
Hub's seqeval metric: `overall_precision`, `overall_recall`, `overall_f1`, `overall_accuracy` (token level),
and for each entity type a dict with `precision`, `recall`, `f1` and `number` (reference entities of that type).
"""

import datasets
import evaluate

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of list of str): predicted tags per sentence, e.g. [["B-PER", "I-PER", "O"]].
    references (list of list of str): true tags, same lengths.
Returns:
    overall_precision, overall_recall, overall_f1, overall_accuracy, and {TYPE: {precision, recall, f1, number}}.
"""


def split_tag(tag: str) -> tuple[str, str]:
    """"B-PER" -> ("B", "PER"); "O" -> ("O", ""). Anything but B-/I-/O is refused, naming the tag."""
    if tag == "O":
        return "O", ""
    prefix, _, kind = tag.partition("-")
    if prefix not in ("B", "I") or not kind:
        raise ValueError(f"tag {tag!r} is not a BIO tag; allowed: 'O', 'B-<TYPE>', 'I-<TYPE>'.")
    return prefix, kind


def entities(tags) -> set[tuple[str, int, int]]:
    """{(type, first index, last index)} of one sentence."""
    found, kind, start = set(), None, 0
    for index, tag in enumerate(list(tags) + ["O"]):  # a trailing O closes the last entity
        prefix, tag_kind = split_tag(tag)
        continues = prefix == "I" and tag_kind == kind
        if kind is not None and not continues:
            found.add((kind, start, index - 1))
            kind = None
        if prefix == "B" or (prefix == "I" and not continues):
            kind, start = tag_kind, index
    return found


def prf(hits: int, predicted: int, actual: int) -> dict:
    precision = hits / predicted if predicted else 0.0
    recall = hits / actual if actual else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


class Seqeval(evaluate.Metric):
    def _info(self):
        tags = datasets.Sequence(datasets.Value("string"))
        return evaluate.MetricInfo(
            description="Entity-level precision/recall/F1 of BIO tag sequences (conlleval conventions).",
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": tags, "references": tags}),
        )

    def _compute(self, predictions, references):
        per_type: dict[str, list[int]] = {}  # type -> [hits, predicted, actual]
        correct_tokens = total_tokens = 0
        for sentence, (predicted_tags, true_tags) in enumerate(zip(predictions, references)):
            if len(predicted_tags) != len(true_tags):
                raise ValueError(
                    f"sentence {sentence}: {len(predicted_tags)} predicted tags but {len(true_tags)} reference tags."
                )
            correct_tokens += sum(p == t for p, t in zip(predicted_tags, true_tags))
            total_tokens += len(true_tags)
            predicted, actual = entities(predicted_tags), entities(true_tags)
            for kind, *_ in predicted | actual:
                per_type.setdefault(kind, [0, 0, 0])
            for entity in predicted:
                per_type[entity[0]][1] += 1
                per_type[entity[0]][0] += entity in actual
            for entity in actual:
                per_type[entity[0]][2] += 1
        result = {kind: {**prf(*counts), "number": counts[2]} for kind, counts in sorted(per_type.items())}
        overall = prf(*(sum(c[i] for c in per_type.values()) for i in range(3)))
        result.update({f"overall_{key}": value for key, value in overall.items()})
        result["overall_accuracy"] = correct_tokens / total_tokens if total_tokens else 0.0
        return result
