#!/usr/bin/env bash
# IAH on a multi-host GPU cluster with SLURM: one JAX process per host, each driving all of its
# host's GPUs; the hosts form one JAX cluster through jax.distributed.
#
#   DATA_PATH=/datasets/VOCdevkit DATA_DIR=/shared/tensorflow_datasets \
#   WORKDIR=/shared/runs/voc07 PRETRAINED=/shared/googlenet.npz \
#   sbatch launch/slurm_multihost_gpu.sh configs/voc07.py [--config.x=... more flags]
#
# Run it from the repository root (sbatch keeps the submission directory as the working
# directory). Everything after the config path is passed to iah_jax.main.
#
# How the pieces fit (launch/README.md has the longer story):
# - `python -m iah_jax.main --distributed` calls jax.distributed.initialize() with no arguments
#   before anything touches JAX. JAX reads the SLURM environment (SLURM_JOB_ID,
#   SLURM_STEP_NODELIST, SLURM_NTASKS, SLURM_PROCID, SLURM_LOCALID): the coordinator is the
#   first host of the step on a port derived from the job id, there are SLURM_NTASKS processes,
#   and this one is number SLURM_PROCID. (The --distributed flag is the one change iah_jax.main
#   needs for multi-host runs; see launch/README.md, "Status".)
# - JAX's SLURM detection assumes one process per GPU and would give each process only GPU
#   SLURM_LOCALID. We run one process per host instead, so JAX_LOCAL_DEVICE_IDS below lists all
#   of the host's GPUs.
# - Data: every process reads its own 1 / (number of hosts) of the training split
#   (tfds.split_for_jax_process in iah_jax/data/pipeline.py) and decodes
#   batch_size / (number of hosts) images per step on its own CPUs; train.to_global turns those
#   rows into one global array (jax.make_array_from_process_local_data) sharded over every GPU
#   of every host. Parameters are replicated; gradients and the triplet losses (which compare
#   every image of the global batch with every other) are reduced across hosts inside the jitted
#   step, so the result does not depend on the number of hosts (tests/test_distributed.py checks
#   this on 2 CPU processes).
# - batch_size (32 in the paper configs) must be a multiple of the total GPU count: 2 hosts x 8
#   GPUs = 16 is fine, 64 GPUs are not (raise --config.batch_size, which changes the recipe).
# - DATA_DIR (the prepared TFDS files) and WORKDIR (orbax checkpoints, written by all processes
#   together, and results.json) must be on a filesystem every host sees.
#
# The paper's recipe (batch 32, 15,000 steps) takes ~10-15 min per model on one GPU, so for it
# the cheaper way to use a cluster is one single-GPU job per (q, b) pair; see launch/README.md.

#SBATCH --job-name=iah
#SBATCH --nodes=2                  # hosts
#SBATCH --ntasks-per-node=1        # one JAX process per host ...
#SBATCH --gpus-per-node=8          # ... driving all of the host's GPUs
#SBATCH --cpus-per-task=32         # tf.data decodes and resizes JPEGs on the host's cores
#SBATCH --time=04:00:00
#SBATCH --output=%x-%j.out

set -euo pipefail

CONFIG=${1:?usage: sbatch launch/slurm_multihost_gpu.sh CONFIG [--config.x=... flags]}
shift
: "${DATA_PATH:?set DATA_PATH to the dataset download directory (see the config docstring)}"
: "${DATA_DIR:?set DATA_DIR to a shared directory for the prepared TFDS files}"
: "${WORKDIR:?set WORKDIR to a shared directory for checkpoints and results}"
PRETRAINED=${PRETRAINED:-}   # converted ImageNet GoogLeNet (.npz); empty = train from scratch
GPUS_PER_NODE=${SLURM_GPUS_PER_NODE:-8}
GPUS_PER_NODE=${GPUS_PER_NODE##*:}  # "a100:8" -> "8"

# Environment: activate your virtualenv / module here, e.g.
#   source ~/venvs/iah/bin/activate   (pip install -r requirements.txt and jax[cuda12])

# 1. Prepare the dataset once, on one host, before the processes start: N = 100 selective-search
#    proposals per image on every core of that host, then the TFDS records. Without this step
#    every host would try to prepare the same files at the same time. A second submission finds
#    the files prepared and skips the work.
PREPARE='
import runpy, sys
from iah_jax import train
config = runpy.run_path(sys.argv[1])["get_config"]()
config.dataset.options.data_path, config.dataset.data_dir = sys.argv[2], sys.argv[3]
builder = train.load_dataset(config)
print({name: split.num_examples for name, split in builder.info.splits.items()})
'
srun --nodes=1 --ntasks=1 python -c "$PREPARE" "$CONFIG" "$DATA_PATH" "$DATA_DIR"

# 2. Train and evaluate: the same command on every host (srun starts one task per host).
export JAX_LOCAL_DEVICE_IDS=$(seq -s, 0 $((GPUS_PER_NODE - 1)))   # all GPUs, not just #LOCALID
export TF_CPP_MIN_LOG_LEVEL=1            # TensorFlow only feeds data; keep its logs short
export NCCL_DEBUG=${NCCL_DEBUG:-WARN}    # INFO shows which network NCCL picked (IB vs TCP)
srun python -m iah_jax.main --distributed \
  --config "$CONFIG" \
  --workdir "$WORKDIR" \
  --config.dataset.options.data_path="$DATA_PATH" \
  --config.dataset.data_dir="$DATA_DIR" \
  --config.model.pretrained="$PRETRAINED" \
  "$@"
# Mixed precision on the GPUs: add --config.model.dtype=bfloat16 (float32 parameters kept).
# The job resumes from WORKDIR's latest checkpoint when resubmitted (e.g. after a time limit).
