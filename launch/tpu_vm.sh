#!/usr/bin/env bash
# Launch a search on a Cloud TPU VM slice: every host runs the same command; jax.distributed
# discovers the slice by itself on TPU VMs (no coordinator flags needed).
#
#   TPU_NAME=autox3d ZONE=us-central2-b ACCEL=v4-32 DATA_DIR=gs://bucket/datasets \
#     WORKDIR=gs://bucket/runs/autox3d_s bash launch/tpu_vm.sh configs/search_autox3d.py:target=S
set -euo pipefail
CONFIG=${1:?usage: launch/tpu_vm.sh CONFIG[:ARG] [--config.key=value ...]}; shift || true
: "${TPU_NAME:?}" "${ZONE:?}" "${WORKDIR:?}"
ACCEL=${ACCEL:-v4-8}
REPO=${REPO:-https://github.com/your-org/autox3d_jax.git}

if ! gcloud compute tpus tpu-vm describe "$TPU_NAME" --zone "$ZONE" >/dev/null 2>&1; then
  gcloud compute tpus tpu-vm create "$TPU_NAME" --zone "$ZONE" --accelerator-type "$ACCEL" \
    --version tpu-ubuntu2204-base
fi
gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone "$ZONE" --worker=all --command "
  set -e
  [ -d autox3d_jax ] || git clone $REPO autox3d_jax
  cd autox3d_jax && python3 -m venv .venv && . .venv/bin/activate && pip install -q -e '.[tpu]'
  nohup python -m autox3d_jax.main --config=$CONFIG --workdir=$WORKDIR \
      --config.data.data_dir=${DATA_DIR:-} $* > search.log 2>&1 &
"
echo "started on $TPU_NAME; preemption (SIGTERM) saves a checkpoint, rerun this script to resume"
