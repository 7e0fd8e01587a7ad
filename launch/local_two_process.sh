#!/usr/bin/env bash
# Two local processes behaving like two hosts (gloo CPU collectives), 4 simulated devices each.
#   bash launch/local_two_process.sh configs/demo.py:tiny /tmp/two_host [--config.KEY=VALUE ...]
# Like hosts, each process has its own dataset dir ($TFDS_DATA_DIR/process<ID>) and both share the
# workdir. Logs: $LOG_DIR/autox3d_process<ID>.log (LOG_DIR default /tmp). Exits with the first
# non-zero exit code of the two (143 when preempted: `kill -TERM` one process and both save the
# same step; the same command then resumes).
set -euo pipefail
CONFIG=${1:-configs/demo.py:tiny}; WORKDIR=${2:-/tmp/autox3d_two_process}
shift $(( $# < 2 ? $# : 2 ))
PORT=${PORT:-12355}
LOG_DIR=${LOG_DIR:-/tmp}
DATA_ROOT=${TFDS_DATA_DIR:-$HOME/tensorflow_datasets}
PIDS=()
for ID in 0 1; do
  TFDS_DATA_DIR="$DATA_ROOT/process$ID" XLA_FLAGS=--xla_force_host_platform_device_count=4 \
  AUTOX3D_COORDINATOR=127.0.0.1:$PORT AUTOX3D_NUM_PROCESSES=2 AUTOX3D_PROCESS_ID=$ID \
    python -m autox3d_jax.main --config="$CONFIG" --workdir="$WORKDIR" --config.mode=search "$@" \
    > "$LOG_DIR/autox3d_process$ID.log" 2>&1 &
  PIDS+=($!)
  echo "process $ID: pid $! log $LOG_DIR/autox3d_process$ID.log"
done
STATUS=0
for PID in "${PIDS[@]}"; do
  CODE=0; wait "$PID" || CODE=$?
  if [ "$STATUS" -eq 0 ]; then STATUS=$CODE; fi
done
exit "$STATUS"
