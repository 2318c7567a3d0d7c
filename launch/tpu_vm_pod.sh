#!/usr/bin/env bash
# IAH on a Cloud TPU VM pod slice: the same command on every worker VM (one JAX process per VM,
# driving its 4 or 8 TPU chips), started from your workstation with `gcloud ... ssh --worker=all`.
#
#   TPU_NAME=iah-v4-32 ZONE=us-central2-b BUCKET=gs://my-bucket \
#   bash launch/tpu_vm_pod.sh setup        # once: code + dependencies on every worker
#   CONFIG=configs/voc07.py DATA_PATH=/data/VOCdevkit BUCKET=gs://my-bucket ... \
#   bash launch/tpu_vm_pod.sh prepare      # once per dataset, where the download is
#   DATA_PATH=/data/VOCdevkit TPU_NAME=iah-v4-32 ZONE=us-central2-b BUCKET=gs://my-bucket \
#   bash launch/tpu_vm_pod.sh train configs/voc07.py [--config.x=... more flags]
#
# How the pieces fit (launch/README.md has the longer story):
# - `python -m iah_jax.main --distributed` calls jax.distributed.initialize() with no arguments;
#   on a TPU VM JAX finds the coordinator (worker 0), the number of workers and this worker's id
#   in the TPU metadata. (--distributed is the one change iah_jax.main needs for multi-host runs;
#   see launch/README.md, "Status".)
# - Data: every worker reads its own 1 / (number of workers) of the training split
#   (tfds.split_for_jax_process in iah_jax/data/pipeline.py) and decodes
#   batch_size / (number of workers) images per step on its own CPUs; train.to_global turns
#   those rows into one global array sharded over every chip of the slice. Parameters are
#   replicated; gradients and the triplet losses over the whole global batch are reduced across
#   workers inside the jitted step (tests/test_distributed.py checks multi-process == one process).
# - batch_size (32 in the paper configs) must be a multiple of the slice's device count:
#   jax.device_count() is the number of chips on v4/v5e/v5p (e.g. v4-32: 16 chips, fine) and
#   twice the chips on v2/v3 (v3-32: 32 cores, fine; v3-64 needs a larger batch).
# - The prepared TFDS files and the workdir (orbax writes one checkpoint from all workers
#   together) must be readable/writable by every worker: a GCS bucket in the TPU's region.
# - bfloat16 is the TPU's native compute type: --config.model.dtype=bfloat16 (parameters,
#   BatchNorm statistics and losses stay float32).
#
# Create the slice first, for example:
#   gcloud compute tpus tpu-vm create "$TPU_NAME" --zone "$ZONE" \
#     --accelerator-type v4-32 --version tpu-ubuntu2204-base

set -euo pipefail

COMMAND=${1:?usage: bash launch/tpu_vm_pod.sh setup | prepare | train CONFIG [--config.x=... flags]}
shift
if [[ "$COMMAND" != prepare ]]; then
  : "${TPU_NAME:?set TPU_NAME}"
  : "${ZONE:?set ZONE}"
fi
: "${BUCKET:?set BUCKET, e.g. gs://my-bucket (same region as the TPU)}"
REPO_URL=${REPO_URL:-}          # where the workers clone iah_jax from (or copy it with scp)
REMOTE_DIR=${REMOTE_DIR:-iah_jax}

on_all_workers() {  # runs "$1" on every worker VM of the slice at the same time
  gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone "$ZONE" --worker=all --command "$1"
}

case "$COMMAND" in
  setup)
    # The code and its dependencies on every worker; jax[tpu] instead of the CPU jax of
    # requirements.txt (TensorFlow stays the CPU build: it only feeds data).
    : "${REPO_URL:?set REPO_URL to a git URL the workers can clone}"
    on_all_workers "git clone $REPO_URL $REMOTE_DIR || git -C $REMOTE_DIR pull; \
      cd $REMOTE_DIR && pip install -r requirements.txt && pip install -U 'jax[tpu]'"
    ;;

  prepare)
    # Once, anywhere with the dataset's download and some cores (a workstation, or worker 0:
    # `--worker=0`): writes the TFDS files with N = 100 selective-search proposals per image, then
    # copy them into the bucket so every worker reads the same files. DATA_PATH is the download
    # directory (see the config's docstring), CONFIG the config file.
    : "${DATA_PATH:?set DATA_PATH}"; : "${CONFIG:?set CONFIG}"
    LOCAL_TFDS=${LOCAL_TFDS:-$HOME/tensorflow_datasets}
    python -c '
import runpy, sys
from iah_jax import train
config = runpy.run_path(sys.argv[1])["get_config"]()
config.dataset.options.data_path, config.dataset.data_dir = sys.argv[2], sys.argv[3]
builder = train.load_dataset(config)
print(builder.data_dir, {name: split.num_examples for name, split in builder.info.splits.items()})
' "$CONFIG" "$DATA_PATH" "$LOCAL_TFDS"
    # Only the record files are needed; the proposal cache (iah_proposal_cache/) can stay.
    gsutil -m rsync -r -x 'iah_proposal_cache/.*' "$LOCAL_TFDS" "$BUCKET/tensorflow_datasets"
    ;;

  train)
    CONFIG=${1:?usage: bash launch/tpu_vm_pod.sh train CONFIG [flags]}
    shift
    RUN=${RUN:-$(basename "$CONFIG" .py)}
    PRETRAINED=${PRETRAINED:-}   # converted ImageNet GoogLeNet (.npz), e.g. $BUCKET/googlenet.npz
    FETCH=""
    if [[ "$PRETRAINED" == gs://* ]]; then  # the loader reads local files: copy it to each worker
      FETCH="gsutil cp $PRETRAINED /tmp/googlenet.npz && "
      PRETRAINED=/tmp/googlenet.npz
    fi
    # data_path is only read while preparing; the prepared files in the bucket are found by the
    # config's options (the same options give the same prepared-dataset name), so pass the same
    # DATA_PATH as in "prepare" (it is part of that name).
    : "${DATA_PATH:?set DATA_PATH to the value used in prepare}"
    # nohup + log file: the run survives a dropped ssh connection; each worker logs to its own
    # file. Single quotes in "$*" would break the remote command: pass flags without them.
    on_all_workers "${FETCH}cd $REMOTE_DIR && TF_CPP_MIN_LOG_LEVEL=1 nohup python -m iah_jax.main \
      --distributed --config $CONFIG --workdir $BUCKET/runs/$RUN \
      --config.dataset.data_dir=$BUCKET/tensorflow_datasets \
      --config.dataset.options.data_path=$DATA_PATH \
      --config.model.pretrained=$PRETRAINED --config.model.dtype=bfloat16 $* \
      > iah_$RUN.log 2>&1 &"
    echo "started on every worker; follow worker 0 with:"
    echo "  gcloud compute tpus tpu-vm ssh $TPU_NAME --zone $ZONE --worker=0 --command 'tail -f $REMOTE_DIR/iah_$RUN.log'"
    ;;

  *)
    echo "unknown command $COMMAND (setup | prepare | train)" >&2
    exit 2
    ;;
esac
# Resume: running "train" again with the same RUN continues from the bucket's latest checkpoint.
# Stop: gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone "$ZONE" --worker=all \
#         --command "pkill -f iah_jax.main"   (on the TPU VMs, which run nothing else)
# Delete the slice when done: gcloud compute tpus tpu-vm delete "$TPU_NAME" --zone "$ZONE"
