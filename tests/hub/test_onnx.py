"""The stock folders of `hf-pretrain export RUN --as llama|modernbert` go to ONNX with plain `torch.onnx.export`
(torch 2.13's default dynamo exporter, which needs onnxscript; input_ids and attention_mask with dynamic batch and
sequence axes) and run in onnxruntime on the CPU: logits within 1e-4 of torch's on the real tokens of a padded batch
of varied lengths, padded on either side, of another shape than the one traced. Needs the `onnx` extra, which
`make test` installs (`.[test]` includes it)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime
import pytest
import tiny_models
import torch

from hf_pretrain.cli import main

TOLERANCE = 1e-4  # max abs difference of fp32 logits, onnxruntime vs torch, on non-padding tokens
TEXTS = ["Alice sent the report", "the parser module returns a good value to Chen in Oslo and then late in spring",
         "dull film", "Bruno read the plot by Hana in Lima"]


class Logits(torch.nn.Module):
    """The stock model with one tensor out (logits), as an ONNX graph of two inputs and one output wants."""

    def __init__(self, model, **extra):
        super().__init__()
        self.model, self.extra = model, extra

    def forward(self, input_ids, attention_mask):
        return self.model(input_ids=input_ids, attention_mask=attention_mask, **self.extra).logits


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    folder = tmp_path_factory.mktemp("onnx")
    clm = tiny_models.make_run_dir(folder / "clm", "clm")
    mlm = tiny_models.make_run_dir(folder / "mlm", "mlm", first_layer_attn_norm=False)
    assert main(["export", str(clm), "--as", "llama"]) == 0
    assert main(["export", str(mlm), "--as", "modernbert"]) == 0
    return {"llama": clm / "export-llama", "modernbert": mlm / "export-modernbert"}


@pytest.mark.parametrize("target, auto_class, stock_class, extra", [
    ("llama", "AutoModelForCausalLM", "LlamaForCausalLM", {"use_cache": False}),  # logits only, no cache out
    ("modernbert", "AutoModelForMaskedLM", "ModernBertForMaskedLM", {}),
])
def test_a_stock_folder_exports_to_onnx_and_onnxruntime_gives_torchs_logits(folders, tmp_path, target, auto_class,
                                                                             stock_class, extra):
    import transformers

    model = getattr(transformers, auto_class).from_pretrained(folders[target]).eval()
    assert type(model).__name__ == stock_class
    tokenizer = transformers.AutoTokenizer.from_pretrained(folders[target])
    wrapped = Logits(model, **extra).eval()

    path = tmp_path / f"{target}.onnx"
    # Traced on a shape the test batch does not have. Two tensors, not one passed twice: given one tensor twice, the
    # exporter keeps both graph inputs but reads the last (attention_mask) wherever either is used.
    traced = (torch.ones(2, 5, dtype=torch.long), torch.ones(2, 5, dtype=torch.long))
    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")
    torch.onnx.export(wrapped, traced, str(path), input_names=["input_ids", "attention_mask"],
                      output_names=["logits"], dynamo=True, verbose=False,
                      dynamic_shapes={"input_ids": {0: batch, 1: sequence},
                                      "attention_mask": {0: batch, 1: sequence}})
    onnx.checker.check_model(str(path), full_check=True)

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    inputs = {i.name: i.shape for i in session.get_inputs()}
    assert list(inputs) == ["input_ids", "attention_mask"]
    assert all(isinstance(dim, str) for shape in inputs.values() for dim in shape)  # both axes symbolic

    for side in ("right", "left"):
        tokenizer.padding_side = side
        encoded = tokenizer(TEXTS, padding=True, return_tensors="pt")
        mask = encoded["attention_mask"]
        lengths = mask.sum(dim=1)
        assert len(set(lengths.tolist())) == len(TEXTS) and (lengths < mask.shape[1]).sum() == len(TEXTS) - 1
        with torch.no_grad():
            expected = wrapped(encoded["input_ids"], mask).numpy()
        (logits,) = session.run(["logits"], {"input_ids": encoded["input_ids"].numpy(), "attention_mask": mask.numpy()})
        assert logits.shape == expected.shape == (len(TEXTS), mask.shape[1], model.config.vocab_size)
        real = mask.numpy().astype(bool)
        difference = float(np.abs(logits - expected)[real].max())
        assert difference <= TOLERANCE, f"{target}, padded on the {side}: onnxruntime differs by {difference:.2e}"
