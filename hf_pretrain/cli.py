"""The `hf-pretrain` command line."""

from __future__ import annotations

import argparse
import time


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hf-pretrain",
        description="Pretrain your own transformer on your own text, in Hugging Face format.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    quickstart = commands.add_parser(
        "quickstart", help="See it work offline: build the small encoder and train a few steps on the CPU."
    )
    quickstart.add_argument("--steps", type=int, default=20, help="training steps of the smoke run (default 20)")
    quickstart.set_defaults(handler=run_quickstart)
    return parser


def run_quickstart(args: argparse.Namespace) -> int:
    """Smoke run until the data pipeline and training engine land: the `mlm-small`-sized masked LM on random
    token blocks, to show the install works end to end (model build, sparse MLM loss, backward, AdamW)."""
    import torch

    from .models import PretrainEncoderConfig, PretrainEncoderForMaskedLM

    if args.steps < 1:
        raise SystemExit(f"--steps={args.steps} is not allowed; it must be a positive integer.")
    torch.manual_seed(0)
    config = PretrainEncoderConfig()
    model = PretrainEncoderForMaskedLM(config).train()
    parameters = sum(p.numel() for p in model.parameters())
    print(f"model: {type(model).__name__}, {parameters / 1e6:.2f}M parameters "
          f"(hidden {config.hidden_size}, {config.num_hidden_layers} layers, vocab {config.vocab_size})")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    batch, length = 32, 128
    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        input_ids = torch.randint(5, config.vocab_size, (batch, length))
        labels = torch.where(torch.rand(batch, length) < 0.15, input_ids, -100)
        loss = model(input_ids=input_ids.masked_fill(labels != -100, 4), labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step == 1 or step % 5 == 0 or step == args.steps:
            elapsed = time.perf_counter() - start
            print(f"step {step:3d}  loss {loss.item():.3f}  {step * batch * length / elapsed:,.0f} tokens/s")
    print("smoke run done (random tokens; real pretraining arrives with the training engine)")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)
