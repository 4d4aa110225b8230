#!/bin/bash
# unlearn-sweep on SLURM: one Ray head on the first node of the allocation, one Ray worker on each of
# the others, then the sweep driver on the head. Preemption-safe: a requeued job continues the same
# record.
#
#   sbatch cluster/templates/slurm-ray.sh my-sweep.yaml [RUN_DIR]
#
# Options given to sbatch override the #SBATCH lines below (e.g. --nodes=2 --gpus-per-node=2).
# Every node runs 1 / gpus_per_trial trials per GPU it was given (0.25 -> 16 on a 4-GPU node) and
# cpus_per_trial per CPU; both counts come from SLURM (--cpus-per-task, --gpus-per-node), the
# same on every node.
#
# Stopping and continuing (the record is never half-written; see docs/reliability.md):
# - 120 s before the time limit SLURM sends USR1 to this script (--signal below): the driver stops
#   gracefully (runs in flight recorded "interrupted", their trials re-enqueued), then the job
#   requeues itself and continues the sweep when it runs again.
# - Preempted (PreemptMode=REQUEUE) or `scontrol requeue`: SIGTERM to the driver, the same graceful
#   stop; SLURM puts the job back in the queue (--requeue) and it continues the sweep.
# - `scancel`: the same graceful stop, and the job ends; `sbatch` it again (or `unlearn-sweep
#   resume RUN_DIR`) to continue.
# Continuing is `unlearn-sweep run SPEC --out RUN_DIR` again: on a run directory that holds this
# sweep, `run` continues its record (it refuses a different spec in one line).
#
# Nodes need no shared file system for models: each keeps its own oracle cache and the driver
# sends the models it trained to the nodes that lack them. RUN_DIR (default runs/<sweep name>,
# relative to the directory sbatch was called from) must survive a requeue: not a node's /tmp.
#SBATCH --job-name=unlearn-sweep
#SBATCH --nodes=3
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=32
#SBATCH --gpus-per-node=4
#SBATCH --mem=0
#SBATCH --time=12:00:00
#SBATCH --output=unlearn-sweep-%j.log
#SBATCH --open-mode=append
#SBATCH --requeue
#SBATCH --signal=B:USR1@120
set -euo pipefail

SPEC=${1:?usage: sbatch slurm-ray.sh SPEC.yaml [RUN_DIR]}
OUT=()
if [ -n "${2:-}" ]; then OUT=(--out "$2"); fi
PORT=6379
CPUS=${SLURM_CPUS_PER_TASK:-${SLURM_CPUS_ON_NODE:-1}}
GPUS=${SLURM_GPUS_ON_NODE:-0}  # what --gpus-per-node gave this node (none without it)
UNLEARN_SWEEP=${UNLEARN_SWEEP:-unlearn-sweep}  # the command (a container wrapper, a venv's path)
READY_TIMEOUT_S=${READY_TIMEOUT_S:-300}
export UNLEARN_SWEEP_CACHE=${UNLEARN_SWEEP_CACHE:-$HOME/.cache/unlearn-sweep}
export WANDB_MODE=${WANDB_MODE:-offline}  # compute nodes rarely reach the internet; `wandb sync` later

# Token authentication on every node: one random token for this job, passed to srun steps through
# the environment (never printed, never written to the log).
export RAY_AUTH_MODE=token
RAY_AUTH_TOKEN=$(python3 -c 'import secrets; print(secrets.token_hex(32))')
export RAY_AUTH_TOKEN

# Signals: the driver stops gracefully on SIGTERM. USR1 (the time limit is near) also requeues the
# job once it has stopped. The driver runs in the background (below): bash runs a trap only between
# commands, never while a command runs in the foreground.
STOPPING= REQUEUE= DRIVER=
stop() {  # $1: requeue this job once the driver has stopped
  STOPPING=yes REQUEUE=${REQUEUE:-$1}
  if [ -n "$DRIVER" ]; then kill -TERM "$DRIVER" 2>/dev/null || true; fi
}
trap 'stop yes' USR1
trap 'stop ""' TERM INT

mapfile -t NODES < <(scontrol show hostnames "$SLURM_JOB_NODELIST")
HEAD=${NODES[0]}
HEAD_IP=$(srun --overlap --nodes=1 --ntasks=1 -w "$HEAD" hostname --ip-address | awk '{print $1}')
export RAY_ADDRESS="$HEAD_IP:$PORT"
echo "unlearn-sweep: job $SLURM_JOB_ID (restart ${SLURM_RESTART_COUNT:-0}) on ${NODES[*]}:" \
  "Ray head $RAY_ADDRESS, $CPUS CPU and $GPUS GPU per node"

STEPS=()  # the srun steps running Ray; ended by their pids when this script ends
cleanup() {
  if [ ${#STEPS[@]} -gt 0 ]; then kill -TERM "${STEPS[@]}" 2>/dev/null || true; fi
  wait 2>/dev/null || true
}
trap cleanup EXIT

live_nodes() {  # Ray nodes alive, as `ray status` lists them (0 while the head is not up)
  { ray status --address "$RAY_ADDRESS" 2>/dev/null || true; } | sed -n '/^Active:/,/^Pending:/p' \
    | grep -c ' node_' || true
}
wait_for_nodes() {  # until $1 Ray nodes are alive, or give up after READY_TIMEOUT_S
  local deadline=$((SECONDS + READY_TIMEOUT_S))
  until [ -n "$STOPPING" ] || [ "$(live_nodes)" -ge "$1" ]; do
    if [ $SECONDS -ge $deadline ]; then
      echo "unlearn-sweep: $(live_nodes) of $1 Ray node(s) up after ${READY_TIMEOUT_S} s; giving up" >&2
      exit 1
    fi
    sleep 2
  done
}

# The head runs the driver and its trials too; the dashboard stays on 127.0.0.1 (ssh -L to view it).
srun --overlap --nodes=1 --ntasks=1 -w "$HEAD" \
  ray start --head --node-ip-address="$HEAD_IP" --port=$PORT --num-cpus="$CPUS" --num-gpus="$GPUS" \
  --dashboard-host=127.0.0.1 --disable-usage-stats --block &
STEPS+=($!)
wait_for_nodes 1

for node in "${NODES[@]:1}"; do
  srun --overlap --nodes=1 --ntasks=1 -w "$node" \
    ray start --address="$HEAD_IP:$PORT" --num-cpus="$CPUS" --num-gpus="$GPUS" \
    --disable-usage-stats --block &
  STEPS+=($!)
done
wait_for_nodes "${#NODES[@]}"

# Run or continue (the same command: `run` continues the record a run directory holds).
rc=0
if [ -z "$STOPPING" ]; then
  # shellcheck disable=SC2086  # UNLEARN_SWEEP may be several words
  $UNLEARN_SWEEP run "$SPEC" "${OUT[@]}" --backend ray --address "$RAY_ADDRESS" &
  DRIVER=$!
  if [ -n "$STOPPING" ]; then kill -TERM "$DRIVER" 2>/dev/null || true; fi  # came before DRIVER=
  while true; do  # `wait` returns when a trapped signal comes: wait again until the driver ends
    wait "$DRIVER" && rc=0 || rc=$?
    kill -0 "$DRIVER" 2>/dev/null || break
  done
fi
if [ -n "$REQUEUE" ]; then
  echo "unlearn-sweep: stopped before the time limit; job $SLURM_JOB_ID requeued to continue the record"
  scontrol requeue "$SLURM_JOB_ID" || echo "unlearn-sweep: the requeue was refused; sbatch this" \
    "script again (or unlearn-sweep resume) to continue" >&2
fi
exit "$rc"
