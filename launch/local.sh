#!/usr/bin/env bash
# Train on this machine: all local accelerators (or CPU), one process.
#
#   CONFIG=configs/synthface.py WORKDIR=/runs/synth bash launch/local.sh [--config.num_steps=...]
#
# Variables: CONFIG (config file, with an optional :variant), WORKDIR (checkpoints, events;
# resumed when it has checkpoints). Extra arguments go to anifacegan_jax.main.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "${REPO}/launch/common.sh"
require CONFIG WORKDIR
print_commit "${REPO}"
cd "${REPO}"
exec python -m anifacegan_jax.main --config="${CONFIG}" --workdir="${WORKDIR}" \
  --distributed=off "$@"
