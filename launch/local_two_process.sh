#!/usr/bin/env bash
# Two local processes behaving like two hosts (gloo CPU collectives), 4 simulated devices each.
#   bash launch/local_two_process.sh configs/demo.py:tiny /tmp/two_host
set -euo pipefail
CONFIG=${1:-configs/demo.py:tiny}; WORKDIR=${2:-/tmp/autox3d_two_process}
PORT=${PORT:-12355}
for ID in 0 1; do
  XLA_FLAGS=--xla_force_host_platform_device_count=4 AUTOX3D_COORDINATOR=127.0.0.1:$PORT \
  AUTOX3D_NUM_PROCESSES=2 AUTOX3D_PROCESS_ID=$ID \
    python -m autox3d_jax.main --config="$CONFIG" --workdir="$WORKDIR" --config.mode=search &
done
wait
