#!/usr/bin/env bash
# What a session with a GPU runs on the device machine to measure issue 6's figures (trial
# throughput: reference way vs unlearn-sweep's packed way, plus the gpu_limits.py reference) and
# bring them back under $OUT. Each stage fits one device call (10 minutes at most); the device
# machine has torch, numpy, pyarrow and scikit-learn but not ray/optuna/pydantic: they come as wheels.
#
# On the development machine, before the first call:
#   bash /work/shared/device/make-wheelhouse.sh              # builds .whl/ (about 55 MiB, git-ignored)
#   mkdir -p .devbench && cp /work/shared/device/gpu_limits.py .devbench/   # git-ignored, carried
# Stage 1 (device call, carry [".whl", ".devbench"], timeout_s 600):
#   bash bench/gpu_session.sh 1
#     -> $OUT/gpu_limits.jsonl, $OUT/trial_throughput_cuda.json ((a) + (b) at K=1,4), $OUT/env.txt
# Copy stage 1's JSON to bench/results/trial_throughput_cuda.json on the development machine, then
# Stage 2 (device call, same carry):
#   bash bench/gpu_session.sh 2
#     -> $OUT/trial_throughput_cuda.json (K=8,2 measured, merged with stage 1's rows: the best K and
#        the recommended gpus_per_trial over 1,2,4,8), $OUT/gpu_limits_packed.jsonl (as time allows)
# Commit the stage 2 JSON as bench/results/trial_throughput_cuda.json and update docs/performance.md.
set -uo pipefail
stage=${1:-1}
OUT=${OUT:-$PWD/.devbench/out}
mkdir -p "$OUT"
budget=570                      # seconds of this call for everything below (the call's limit: 600)
left() { echo $(( budget - SECONDS )); }

# ray, optuna, pydantic (+ deps) from the carried wheelhouse; the header of make-wheelhouse.sh
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD
export UNLEARN_SWEEP_RAY_DASHBOARD=0 WANDB_MODE=disabled
{
  nvidia-smi
  python3 -c 'import torch, ray, optuna, pydantic, sklearn, numpy; print("torch", torch.__version__,
"cuda", torch.version.cuda, "ray", ray.__version__, "optuna", optuna.__version__, "pydantic",
pydantic.__version__, "sklearn", sklearn.__version__, "numpy", numpy.__version__)'
  nproc; free -g
} > "$OUT/env.txt" 2>&1
limits=.devbench/gpu_limits.py
[ -f "$limits" ] || echo "no $limits: copy /work/shared/device/gpu_limits.py there and carry .devbench" >&2

if [ "$stage" = 1 ]; then
  # the reference figures on this very machine: eval + CPU DataLoader, then the single-process
  # training lines (the torch.compile lines come last and are cut by the timeout)
  if [ -f "$limits" ]; then
    timeout 75 python3 "$limits" eval loader >> "$OUT/gpu_limits.jsonl" 2>> "$OUT/gpu_limits.err"
    timeout 60 python3 "$limits" single >> "$OUT/gpu_limits.jsonl" 2>> "$OUT/gpu_limits.err"
  fi
  # (a) 4 trials one at a time; (b) K=1 and K=4 (at least 2K trials each); the JSON is rewritten
  # after every phase, so a cut-short run still leaves what it measured
  timeout "$(left)" python3 bench/trial_throughput.py --trials 4 --pack 1,4 --time-limit-s 300 \
    --out "$OUT/trial_throughput_cuda.json" 2>&1 | tee "$OUT/trial_throughput.log" | tail -40
else
  merge=()
  [ -f bench/results/trial_throughput_cuda.json ] && merge=(--merge bench/results/trial_throughput_cuda.json)
  timeout "$(( $(left) - 150 ))" python3 bench/trial_throughput.py --skip-reference --trials 4 \
    --pack 8,2 --time-limit-s 200 "${merge[@]}" --out "$OUT/trial_throughput_cuda.json" 2>&1 \
    | tee "$OUT/trial_throughput.log" | tail -40
  if [ -f "$limits" ] && [ "$(left)" -gt 30 ]; then  # packed processes at batch 64/128, as time allows
    timeout "$(left)" python3 "$limits" packed >> "$OUT/gpu_limits_packed.jsonl" 2>> "$OUT/gpu_limits.err"
  fi
fi
ls -la "$OUT"
