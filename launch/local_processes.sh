#!/usr/bin/env bash
# Several processes on this machine, as on several hosts (jax.distributed over 127.0.0.1):
# a dry run of a multi-host job, or one process per GPU group.
#
#   CONFIG=configs/synthface.py:tiny WORKDIR=/runs/mp NUM_PROCESSES=2 bash launch/local_processes.sh
#
# Variables: CONFIG, WORKDIR, NUM_PROCESSES (≥ 2), PORT (coordinator port, default 12355),
# DEVICES_PER_PROCESS (CPU only: fake devices per process, default 4; on GPUs set
# CUDA_VISIBLE_DEVICES per process yourself). Logs are appended to $WORKDIR/process_<k>.log. If one
# process fails, the others stop within --heartbeat_timeout seconds.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "${REPO}/launch/common.sh"
require CONFIG WORKDIR NUM_PROCESSES
print_commit "${REPO}"
PORT="${PORT:-12355}"
mkdir -p "${WORKDIR}"
cd "${REPO}"
pids=()
for ((k = 0; k < NUM_PROCESSES; k++)); do
  XLA_FLAGS="${XLA_FLAGS:---xla_force_host_platform_device_count=${DEVICES_PER_PROCESS:-4}}" \
  python -m anifacegan_jax.main --config="${CONFIG}" --workdir="${WORKDIR}" \
    --coordinator_address="127.0.0.1:${PORT}" --num_processes="${NUM_PROCESSES}" \
    --process_id="${k}" "$@" >>"${WORKDIR}/process_${k}.log" 2>&1 &
  pids+=($!)
  echo "process ${k}: pid $! log ${WORKDIR}/process_${k}.log"
done
status=0
for k in "${!pids[@]}"; do
  if ! wait "${pids[$k]}"; then
    echo "process ${k} failed: see ${WORKDIR}/process_${k}.log" >&2
    status=1
  fi
done
exit "${status}"
