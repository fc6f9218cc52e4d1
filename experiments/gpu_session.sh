#!/usr/bin/env bash
# One call on a lent GPU: the speed benchmarks, then a training slot of the default
# model with the time that is left, then the trained weights' invertibility.
#
# Prepare here (once per machine; all three folders are git-ignored):
#   python experiments/make_train_pack.py               # .pack/train/ (19.4 MiB)
#   cp ../shared/datasets/kodak/kodim01.png .pack/      # the codec benchmark's image
#   mkdir -p .whl && pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --implementation cp --platform manylinux2014_x86_64 -d .whl constriction==0.5.0
#   bash experiments/prepare_official.sh                # .official/ (optional baseline)
# Then, with the device tool:
#   run(command="bash experiments/gpu_session.sh 560", timeout_s=600,
#       carry=[".pack", ".whl", ".official"])
# and here, with the files that come back (files_at):
#   bash experiments/gpu_session.sh --collect FILES_AT
#
# The working tree that travels is capped at 64 MiB: today the tracked files (43 MB, of
# which the shipped weights and the optimizer state are 35 MB), .pack (20 MB), .official
# (1.3 MB) and .whl (0.4 MB) make 63 MiB. If it grows, rebuild the pack smaller
# (make_train_pack.py --max-pixels 200000) or leave .official behind (MODE=train).
#
# MODE (env, default "both"): "bench" skips the slot, "train" skips the benchmarks.
# Everything goes to $OUT: session.log as it runs; at the end results.tgz (benchmark
# JSONs, metrics.jsonl, invertibility reports) and the weights and optimizer state in
# 15 MiB parts with their sha256 (the device returns at most 8 files of at most 16 MiB).
set -u

if [[ "${1:-}" == "--collect" ]]; then  # Here: unpack what came back into the repo.
  src=$(cd "${2:?usage: gpu_session.sh --collect FILES_AT}" && pwd) || exit 1
  root=$(cd "$(dirname "$0")/.." && pwd)
  mkdir -p "$root/experiments/results/gpu" "$root/experiments/state"
  tar -xzf "$src/results.tgz" -C "$root/experiments/results/gpu"
  cp "$src/session.log" "$root/experiments/results/gpu/"
  if compgen -G "$src/weights.part-*" >/dev/null; then  # Checked before anything is replaced.
    tmp=$(mktemp -d)
    cat "$src"/weights.part-* > "$tmp/default_model.npz"
    cat "$src"/state.part-* > "$tmp/default_state.npz"
    (cd "$tmp" && sha256sum -c "$src/weights.sha256") || { echo "parts damaged: kept the old files"; exit 1; }
    mv "$tmp/default_model.npz" "$root/src/msinn_jax/data/default_model.npz"
    mv "$tmp/default_state.npz" "$root/experiments/state/default_state.npz"
  fi
  ls -la "$root/experiments/results/gpu"
  exit 0
fi

BUDGET=${1:-560}
MODE=${MODE:-both}
T0=$(date +%s)
OUT=${OUT:?set OUT to the folder whose files come back}
R=/tmp/results
LOG=$OUT/session.log
mkdir -p "$R"
export PYTHONUNBUFFERED=1
export JAX_COMPILATION_CACHE_DIR=/tmp/jax_cache  # The slot reuses the benchmark's compile.
left() { echo $((BUDGET - ($(date +%s) - T0))); }
step() {  # step LIMIT_S CMD...: run with a limit, log it, never abort the session.
  local limit=$1
  shift
  echo "== [$(($(date +%s) - T0)) s] $* (limit ${limit} s)" >>"$LOG"
  timeout "$limit" "$@" >>"$LOG" 2>&1
  echo "== exit $? after $(($(date +%s) - T0)) s" >>"$LOG"
}

python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl \
  >>"$LOG" 2>&1
export PYTHONPATH=$PWD/src:/tmp/site
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv >>"$LOG" 2>&1
python3 -c "import sys, jax, flax, optax, orbax.checkpoint, constriction; \
print(sys.version.split()[0], 'jax', jax.__version__, 'flax', flax.__version__, \
'optax', optax.__version__, jax.devices())" >>"$LOG" 2>&1

if [[ "$MODE" != train ]]; then
  # The official code first: it also leaves its codec weights for ours to time.
  if [[ -d .official ]]; then
    step 180 python3 experiments/bench_official.py --official .official --device cuda \
      --image .pack/kodim01.png --save-weights /tmp/official_weights.npz \
      --out "$R/bench_official_gpu.json"
  fi
  step 150 python3 experiments/bench_train.py --config default --out "$R/bench_train_paper_gpu.json"
  if [[ $(left) -gt 420 ]]; then  # Where the step's time goes (compiled above: cache hit).
    step 60 python3 experiments/profile_train.py --config default \
      --out "$R/profile_train_paper_gpu.json"
  fi
  weights=(--random paper)
  [[ -f /tmp/official_weights.npz ]] && weights=(--checkpoint /tmp/official_weights.npz)
  step 120 python3 experiments/bench_codec.py "${weights[@]}" --image .pack/kodim01.png \
    --out "$R/bench_codec_paper_gpu.json"
  if [[ $(left) -gt 400 ]]; then  # Whole commands, with and without the compile cache.
    step 75 python3 experiments/bench_cli.py --device gpu --runs 1 --image .pack/kodim01.png \
      --out "$R/bench_cli_gpu.json"
  fi
  step 90 python3 experiments/bench_train.py --config compact --out "$R/bench_train_compact_gpu.json"
  if [[ $(left) -gt 330 ]]; then
    step 90 python3 experiments/bench_train.py --config compact --set model.compute_dtype=bfloat16 \
      --out "$R/bench_train_compact_bf16_gpu.json"
  fi
fi

if [[ "$MODE" != bench && $(left) -gt 150 ]]; then
  slot=$(($(left) - 75))  # Keeps time for the invertibility check and the packing.
  # compact.py plans 10 k steps, for CPU slots; a GPU slot does that many in minutes, so it
  # extends the run to 40 k with a warm restart (compact_gpu.py).
  step $((slot + 30)) python3 experiments/slot.py --budget-s "$slot" --workdir /tmp/slot_run \
    --out /tmp/slot --config experiments/configs/compact_gpu.py
  if [[ -f /tmp/slot/default_model.npz ]]; then
    for p in default highest; do
      step 40 bash -c "python3 -m msinn_jax.cli check-invertibility .pack/kodim01.png \
        --checkpoint /tmp/slot/default_model.npz --precision $p --json \
        > $R/invertibility_$p.json"
    done
    (cd /tmp/slot && sha256sum default_model.npz default_state.npz) > "$OUT/weights.sha256"
    split -b 15M /tmp/slot/default_model.npz "$OUT/weights.part-"
    split -b 15M /tmp/slot/default_state.npz "$OUT/state.part-"
  fi
  cp /tmp/slot_run/metrics.jsonl "$R/" 2>/dev/null
fi

tar -czf "$OUT/results.tgz" -C "$R" .
echo "== done after $(($(date +%s) - T0)) s" >>"$LOG"
