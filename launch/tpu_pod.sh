#!/usr/bin/env bash
# Cloud TPU VM pod slice: the same command on every worker; JAX detects the pod.
#
#   TPU_NAME=afg-v4-32 ZONE=us-central2-b CONFIG=configs/ffhq.py WORKDIR=gs://bucket/runs/ffhq \
#   EXTRA_ARGS="--config.dataset.data_dir=gs://bucket/tfds" bash launch/tpu_pod.sh
#
# Variables: TPU_NAME, ZONE, CONFIG, WORKDIR (a GCS path or a disk all workers share),
# EXTRA_ARGS, REMOTE_REPO (the checkout on the workers, default ~/anifacegan-jax; install it there
# first, e.g. with the same command and `pip install -e . jax[tpu]`), PROJECT (optional).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "${REPO}/launch/common.sh"
require TPU_NAME ZONE CONFIG WORKDIR
print_commit "${REPO}"
REMOTE_REPO="${REMOTE_REPO:-~/anifacegan-jax}"
project=()
[ -n "${PROJECT:-}" ] && project=(--project="${PROJECT}")
remote="cd ${REMOTE_REPO} && git rev-parse HEAD && python -m anifacegan_jax.main"
remote+=" --config=${CONFIG} --workdir=${WORKDIR} --distributed=on ${EXTRA_ARGS:-}"
exec gcloud compute tpus tpu-vm ssh "${TPU_NAME}" --zone="${ZONE}" "${project[@]}" \
  --worker=all --command="${remote}"
