#!/usr/bin/env bash
# EleutherAI's lm-evaluation-harness (lm-eval 0.4.13), HF backend, on our stock Llama folders, with no
# trust_remote_code and no hf_pretrain importable: the check that `export --as llama` (and a clm-tiny-llama run's
# final/) is an ordinary LlamaForCausalLM to a third-party evaluator. Result: benchmarks/RESULTS.md#lm-eval.
#
# 1. A side venv ($LMEVAL, default /tmp/lmeval; made if missing): torch 2.13.0 first (the CPU wheel), then
#    lm-eval[hf]==0.4.13 constrained to requirements/lock.txt, so transformers stays at the lock's 5.24.0 (lm-eval
#    0.4.13 asks only transformers>=4.1). hf_pretrain is not installed there.
# 2. Two tiny models, made with the project's .venv if missing (30 steps each, about 1.5 min each on 2 cores):
#    $LMEVAL/run/final (clm-tiny-llama: a stock LlamaForCausalLM trained from scratch) and
#    $LMEVAL/ours/export-llama (clm-tiny, our decoder, then `hf-pretrain export --as llama`).
# 3. A local task (every task lm-eval bundles downloads its data from the Hub): "docstrings", wikitext-style rolling
#    log-likelihood (word/byte perplexity, bits per byte) over 12 hand-written docstring sentences in a JSONL file.
# 4. lm_eval --model hf on both folders, offline, from $LMEVAL (not the repo), printing lm-eval's tables.
#
# Usage: bash benchmarks/check_lm_eval.sh   (LMEVAL=/other/dir to put everything elsewhere)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LMEVAL="${LMEVAL:-/tmp/lmeval}"
PY="$LMEVAL/bin/python"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 OMP_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false

# 1. the side venv
if [ ! -x "$LMEVAL/bin/lm_eval" ]; then
    python3 -m venv "$LMEVAL"
    "$PY" -m pip install -q --disable-pip-version-check torch==2.13.0
    "$PY" -m pip install -q --disable-pip-version-check -c "$REPO/requirements/lock.txt" "lm-eval[hf]==0.4.13"
fi
if (cd "$LMEVAL" && "$PY" -c "import hf_pretrain" 2>/dev/null); then
    echo "hf_pretrain is importable in $LMEVAL: this check needs a venv without it" >&2
    exit 1
fi

# 2. the models
HFP="$REPO/.venv/bin/hf-pretrain"
if [ ! -f "$LMEVAL/run/final/COMPLETE" ]; then
    "$HFP" pretrain clm-tiny-llama train.max_minutes=null train.max_steps=30 output.dir="$LMEVAL/run"
fi
if [ ! -f "$LMEVAL/ours/export-llama/config.json" ]; then
    "$HFP" pretrain clm-tiny train.max_minutes=null train.max_steps=30 output.dir="$LMEVAL/ours"
    "$HFP" export "$LMEVAL/ours" --as llama
fi

# 3. the local task
TASKS="$LMEVAL/tasks"
mkdir -p "$TASKS"
"$PY" - "$TASKS" <<'EOF'
import json, sys
from pathlib import Path

tasks = Path(sys.argv[1])
sentences = [
    "Return the number of items in the queue that have not been processed yet.",
    "Raise ValueError if the given path does not point to an existing file.",
    "This module provides helpers for reading and writing configuration files.",
    "Open the connection to the server and return a new session object.",
    "Convert the timestamp to a string in the local time zone of the machine.",
    "If the buffer is full, block until another thread removes an item from it.",
    "Return a copy of the list with every duplicate element removed, keeping the first occurrence.",
    "The optional argument encoding names the codec used to decode the bytes read from the stream.",
    "Close the file and release the lock that was taken when it was opened.",
    "Return True if the object is an instance of a class defined in this module.",
    "Parse the header lines of the message and return them as a dictionary.",
    "Write the data to the socket, retrying until every byte has been sent or the timeout expires.",
]
(tasks / "docstrings.jsonl").write_text("".join(json.dumps({"text": s}) + "\n" for s in sentences))
(tasks / "docstrings.yaml").write_text(f"""task: docstrings
dataset_path: json
dataset_kwargs:
  data_files:
    test: {tasks / 'docstrings.jsonl'}
output_type: loglikelihood_rolling
test_split: test
doc_to_text: ""
doc_to_target: "{{{{text}}}}"
metric_list:
  - metric: word_perplexity
    aggregation: weighted_perplexity
    higher_is_better: false
  - metric: byte_perplexity
    aggregation: weighted_perplexity
    higher_is_better: false
  - metric: bits_per_byte
    aggregation: bits_per_byte
    higher_is_better: false
metadata:
  version: 1.0
""")
EOF

# 4. the evaluation
"$PY" -m pip freeze --disable-pip-version-check | grep -iE '^(lm.eval|torch|transformers|datasets)==' | paste -sd' '
# add_bos_token=False: lm-eval 0.4.13's rolling log-likelihood puts the prefix token (our tokenizers' <s>) before
# the text itself, and by default also encodes the text with the tokenizer's own <s>, so it would score
# p(<s> | <s>) as part of every document (without this: 1.970 / 1.978 bits per byte, RESULTS.md#lm-eval).
cd "$LMEVAL"
for model in "$LMEVAL/run/final" "$LMEVAL/ours/export-llama"; do
    echo "== $model"
    "$LMEVAL/bin/lm_eval" --model hf \
        --model_args "pretrained=$model,dtype=float32,trust_remote_code=False,add_bos_token=False" \
        --tasks docstrings --include_path "$TASKS" --device cpu --batch_size 1 \
        --output_path "$LMEVAL/results"
done
