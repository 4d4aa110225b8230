#!/bin/bash
# unlearn-sweep on SLURM: one Ray head on the first node of the allocation, one Ray worker on each
# of the others, then the sweep driver on the head.
#
#   sbatch cluster/templates/slurm-ray.sh my-sweep.yaml
#
# Trials per GPU = 1 / gpus_per_trial in the spec (0.25 -> 16 trials on these 4-GPU nodes).
# UNLEARN_SWEEP_CACHE must be on a filesystem every node sees (home, Lustre, GPFS): the original and
# Retrain models are then trained once for the whole allocation.
#SBATCH --job-name=unlearn-sweep
#SBATCH --nodes=3
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=32
#SBATCH --gpus-per-node=4
#SBATCH --mem=0
#SBATCH --time=12:00:00
#SBATCH --output=unlearn-sweep-%j.log
set -euo pipefail

SPEC=${1:?usage: sbatch slurm-ray.sh SPEC.yaml}
PORT=6379
CPUS=${SLURM_CPUS_PER_TASK:-32}
GPUS=4  # the same as --gpus-per-node
export UNLEARN_SWEEP_CACHE=${UNLEARN_SWEEP_CACHE:-$HOME/.cache/unlearn-sweep}
export WANDB_MODE=${WANDB_MODE:-offline}  # compute nodes rarely reach the internet; `wandb sync` later

# Token authentication on every node: one random token for this job, passed to srun steps through
# the environment (never printed, never written to the log).
export RAY_AUTH_MODE=token
RAY_AUTH_TOKEN=$(python -c 'import secrets; print(secrets.token_hex(32))')
export RAY_AUTH_TOKEN

mapfile -t NODES < <(scontrol show hostnames "$SLURM_JOB_NODELIST")
HEAD=${NODES[0]}
HEAD_IP=$(srun --overlap --nodes=1 --ntasks=1 -w "$HEAD" hostname --ip-address | awk '{print $1}')
export RAY_ADDRESS="$HEAD_IP:$PORT"

cleanup() { srun --overlap --nodes="$SLURM_JOB_NUM_NODES" --ntasks-per-node=1 ray stop --force >/dev/null 2>&1 || true; }
trap cleanup EXIT

# The head runs the driver and its trials too; the dashboard stays on 127.0.0.1 (ssh -L to view it).
srun --overlap --nodes=1 --ntasks=1 -w "$HEAD" \
  ray start --head --node-ip-address="$HEAD_IP" --port=$PORT --num-cpus="$CPUS" --num-gpus="$GPUS" \
  --dashboard-host=127.0.0.1 --block &
sleep 20

for node in "${NODES[@]:1}"; do
  srun --overlap --nodes=1 --ntasks=1 -w "$node" \
    ray start --address="$HEAD_IP:$PORT" --num-cpus="$CPUS" --num-gpus="$GPUS" --block &
done
sleep 20

unlearn-sweep run "$SPEC" --backend ray --address auto
