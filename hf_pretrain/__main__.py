"""`python -m hf_pretrain ...` is the same as the `hf-pretrain` command."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
