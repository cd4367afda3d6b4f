# shellcheck shell=bash
# slurm/env.sh: the environment of every bertcls job, in one place. Each slurm/*.sbatch script sources it in
# the batch shell before `srun`, and srun hands the result to every task on every node.
#
# Edit section 1 for your cluster. Anything else can be overridden per job without editing: sbatch passes
# the submitting shell's environment to the job (its default --export=ALL), and every value below that is
# written ${NAME:-default} keeps what you exported, e.g.
#     BERTCLS_VENV=~/envs/bertcls BERTCLS_CACHE=/scratch/$USER/bertcls sbatch slurm/train.sbatch ...

# ---- 1. Your cluster: modules ----------------------------------------------------------------- EDIT HERE
# module purge
# module load cuda/12.4 gcc/12          # what your PyTorch build (and DeepSpeed's compiled ops) need
# ------------------------------------------------------------------------------------------------------------

# ---- 2. Python -----------------------------------------------------------------------------------------------
# A virtual environment: BERTCLS_VENV, by default the one active when you ran sbatch. For conda instead, set
# BERTCLS_CONDA_ENV (a name or a prefix); an environment active at submission also works unchanged, as its
# bin/ folder is on the PATH the job inherits.
BERTCLS_VENV=${BERTCLS_VENV:-${VIRTUAL_ENV:-}}
if [ -n "$BERTCLS_VENV" ]; then
  # shellcheck disable=SC1091
  source "$BERTCLS_VENV/bin/activate"
elif [ -n "${BERTCLS_CONDA_ENV:-}" ]; then
  eval "$(conda shell.bash hook)"
  conda activate "$BERTCLS_CONDA_ENV"
fi
if ! python -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("bertcls") is None)' 2>/dev/null; then
  echo "slurm/env.sh: $(command -v python || echo 'no python on the PATH') cannot import bertcls:" \
    "set BERTCLS_VENV (or BERTCLS_CONDA_ENV) to the environment bertcls is installed in." >&2
  exit 1
fi

# ---- 3. Compute nodes without internet -----------------------------------------------------------------------
# Models, tokenizers and hub data sets come from the caches that `bertcls download --config ...` filled on a
# login node (docs/offline-nodes.md); W&B logs into the run folder, `bash slurm/wandb-sync.sh` uploads the runs
# later from a login node (without WANDB_MODE, the W&B logger goes online by itself where it can).
# On a cluster whose compute nodes do reach the internet, export HF_HUB_OFFLINE=0 (etc.) before sbatch.
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1}
export HF_DATASETS_OFFLINE=${HF_DATASETS_OFFLINE:-1}
export TRANSFORMERS_OFFLINE=${TRANSFORMERS_OFFLINE:-1}
export WANDB_MODE=${WANDB_MODE:-offline}

# ---- 4. Caches on the shared filesystem -------------------------------------------------------------------------
# Every node must see the same caches, and they must be the ones `bertcls download` filled: run it with the same
# HF_HOME / BERTCLS_CACHE exported (its last lines print them). Not a node-local /tmp.
BERTCLS_SHARED=${BERTCLS_SHARED:-$HOME/.cache}     # EDIT HERE, e.g. /scratch/$USER or /shared/$USER
export HF_HOME=${HF_HOME:-$BERTCLS_SHARED/huggingface}
export BERTCLS_CACHE=${BERTCLS_CACHE:-$BERTCLS_SHARED/bertcls}
# The tokenization cache (BERTCLS_CACHE) is built by the first rank to take its per-entry lock; the others wait
# on the lock and then read the result. On NFS or Lustre mounts whose flock is node-local, pass
# --data.cache_lock soft. Hub data sets (data.hub_dataset) live in HF_DATASETS_CACHE ($HF_HOME/datasets), which
# the `datasets` library locks with flock whenever it loads one: prepare them on the login node with
# `bertcls download`, so that the job only reads them.
# export HF_DATASETS_CACHE=/scratch/$USER/hf-datasets

# ---- 5. Threads ----------------------------------------------------------------------------------------------
# Each task (one per GPU) gets --cpus-per-task CPUs; without this, every rank's PyTorch starts one thread per
# core of the node, and they fight over the cores.
export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-${OMP_NUM_THREADS:-1}}

# ---- 6. NCCL (GPU jobs; CPU jobs use gloo and ignore these) -------------------------------------------------------
# WARN prints NCCL's errors only; NCCL_DEBUG=INFO shows the interfaces and transports chosen (for hangs).
export NCCL_DEBUG=${NCCL_DEBUG:-WARN}
# A failed or hung collective aborts the job (after the DDP timeout, configs/strategy/ddp.yaml) instead of
# hanging until the time limit. (torch < 2.2 read NCCL_ASYNC_ERROR_HANDLING=1; bertcls needs torch >= 2.4.)
export TORCH_NCCL_ASYNC_ERROR_HANDLING=${TORCH_NCCL_ASYNC_ERROR_HANDLING:-1}
# Multi-node: the network interface for NCCL's bootstrap and socket traffic, and the InfiniBand adapters to use
# (`ip -br addr` and `ibstat` on a compute node list them). NCCL usually guesses right; set these when
# multi-node jobs hang at start-up or run at Ethernet speed. For CPU (gloo) jobs: GLOO_SOCKET_IFNAME.
# export NCCL_SOCKET_IFNAME=ib0              # or e.g. eth0, or ^docker0,lo to exclude
# export NCCL_IB_HCA=mlx5_0,mlx5_1
# Only when single-node multi-GPU jobs hang at the first all-reduce (GPU peer-to-peer broken by PCIe ACS or a
# VM): it routes GPU-to-GPU traffic through host memory, which is slower.
# export NCCL_P2P_DISABLE=1

# ---- 7. Script defaults --------------------------------------------------------------------------------------
# gpu, or cpu for the CPU variant of every script (README.md: sbatch --gpus-per-node=0 ...).
export BERTCLS_ACCELERATOR=${BERTCLS_ACCELERATOR:-gpu}

# ---- 8. srun ---------------------------------------------------------------------------------------------------
# Every script starts its tasks with srun "${BERTCLS_SRUN_OPTIONS[@]}" ...:
# --cpus-per-task: srun of SLURM 22.05 to 23.02 does not take it over from the job (each task would get one CPU).
# --gpu-bind=none, where the job has GPUs: Lightning wants each task to see all of its node's GPUs, and takes the
#   one of its local rank. Clusters that bind GPUs to tasks (--gpus-per-task, or a site's default --gpu-bind)
#   show each task only its own, and --trainer.devices 4 fails. Unbound, a task sees the GPUs its node's device
#   cgroup allows (ConstrainDevices: the job's); SLURM leaves CUDA_VISIBLE_DEVICES unset then. On nodes without
#   device cgroups that is every GPU of the node: share no node there (sbatch --exclusive).
BERTCLS_SRUN_OPTIONS=()
if [ -n "${SLURM_CPUS_PER_TASK:-}" ]; then
  BERTCLS_SRUN_OPTIONS+=("--cpus-per-task=$SLURM_CPUS_PER_TASK")
fi
if [ "${SLURM_GPUS_ON_NODE:-0}" -gt 0 ] || [ -n "${SLURM_JOB_GPUS:-}" ]; then
  BERTCLS_SRUN_OPTIONS+=("--gpu-bind=none")
fi

echo "[bertcls] job ${SLURM_JOB_ID:-?} (restart ${SLURM_RESTART_COUNT:-0}): ${SLURM_JOB_NUM_NODES:-1} node(s)" \
  "x ${SLURM_NTASKS_PER_NODE:-?} task(s) on ${SLURM_JOB_NODELIST:-?}, accelerator $BERTCLS_ACCELERATOR," \
  "python $(command -v python), OMP_NUM_THREADS=$OMP_NUM_THREADS, srun ${BERTCLS_SRUN_OPTIONS[*]}," \
  "started $(date -Is)"
