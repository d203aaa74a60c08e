#!/usr/bin/env bash
# The user's three commands on a CUDA GPU, end to end, with a small stand-in model:
#   finetuner (automatic speed plan, token-budget batches, Liger, 4-bit) -> test_model batch -> human_evaluation.
# MODEL_DIR: a local HF checkpoint with a chat template (default: a random-weight SmolLM2-135M built from
# the config in $TOKENIZER_DIR, for machines that cannot reach the hub). Results go to ${OUT:-/tmp/gpu_e2e}.
set -euo pipefail
OUT=${OUT:-/tmp/gpu_e2e}; mkdir -p "$OUT"
TOKENIZER_DIR=${TOKENIZER_DIR:-.gpucheck/smol}
MODEL_DIR=${MODEL_DIR:-}
if [ -z "$MODEL_DIR" ]; then
  MODEL_DIR=/tmp/random-smol
  python3 - "$TOKENIZER_DIR" "$MODEL_DIR" <<'PY'
import shutil, sys, torch
from pathlib import Path
from transformers import AutoConfig, AutoModelForCausalLM
src, dst = Path(sys.argv[1]), Path(sys.argv[2])
torch.manual_seed(0)
model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(src), dtype=torch.bfloat16)
model.save_pretrained(dst)
for f in src.iterdir():
    if f.name != "config.json":
        shutil.copy(f, dst / f.name)
PY
fi
RUN=/tmp/gpu_e2e_run
COMMON=(--model-name-or-path "$MODEL_DIR" --output-dir "$RUN")
python3 bengali_empathy_finetuner.py "${COMMON[@]}" --data data/sample_empathy_conversations.csv \
  --max-train-samples 0 --max-steps 20 --eval-steps 10 --save-steps 10 --logging-steps 5 --max-seq-length 768 \
  --overwrite 2>&1 | grep -v "it/s]" | tee "$OUT/train.log"
cp "$RUN/run_record.json" "$OUT/"
python3 test_model.py batch "${COMMON[@]}" --max-new-tokens 32 --out "$OUT/test_results.json" --samples-out '' \
  2>&1 | tail -5 | tee "$OUT/batch.log"
python3 human_evaluation.py "${COMMON[@]}" --compare-base --max-new-tokens 32 --limit 8 \
  --out "$OUT/evaluation_results.json" --report-dir "$OUT/report" 2>&1 | tail -25 | tee "$OUT/eval.log"
