#!/usr/bin/env bash
# Run autox3d_jax on a Cloud TPU VM slice: create it, install this checkout on every worker, run a
# config on all workers at once (jax.distributed finds the slice by itself), watch and collect the
# logs, resume after a preemption, delete. launch/README.md walks through a whole search.
#
#   bash launch/tpu.sh [--dry-run] COMMAND [ARGS...]
#
#   create                  a TPU VM (tpu-vm create), or a queued resource when QUEUED=1; SPOT=1: spot
#   install                 ship this checkout (git archive) to every worker, venv + pip install '.[tpu]'
#   run CONFIG [--config.k=v ...]
#                           start `python -m autox3d_jax.main --config=CONFIG --workdir=$WORKDIR ...`
#                           under nohup on every worker; its output goes to ~/autox3d.log there
#   resume CONFIG [...]     the same as run, with the same WORKDIR: the program resumes from the
#                           workdir's last checkpoint. A TPU that is gone is recreated, a preempted
#                           one deleted and recreated, and either reinstalled, before the rerun
#   logs                    stream worker $WORKER's log (default 0): tail -F over ssh
#   collect                 copy every worker's log to $WORKDIR/logs/<worker hostname>.log
#   status                  the TPU's state, and per worker: running or not, the log's last lines
#   stop                    SIGTERM the program on every worker: it saves a checkpoint and exits 143
#   delete                  delete the TPU VM (or the queued resource and its VM)
#
# Variables (environment):
#   TPU_NAME, ZONE          required by every command: the TPU VM's name and zone (e.g. us-central2-b)
#   WORKDIR                 run/resume/collect: a gs:// path (every worker writes and reads it)
#   DATA_DIR                optional: passed as --config.data.data_dir=$DATA_DIR (a gs:// path)
#   PROJECT                 optional: --project for every gcloud command (default: gcloud's config)
#   ACCEL                   accelerator type, default v4-8 (v4-32, v5litepod-16, v5p-8, v6e-8, ...)
#   RUNTIME_VERSION         default from ACCEL: v4 tpu-ubuntu2204-base, v5e v2-alpha-tpuv5-lite,
#                           v5p v2-alpha-tpuv5, v6e v2-alpha-tpuv6e
#   QUEUED=1                create through a queued resource named $QR_ID (default $TPU_NAME-qr)
#                           whose node is $TPU_NAME; SPOT=1: spot capacity (preemptible)
#   PYTHON                  the workers' interpreter for the venv, default python3.11 (installed
#                           with apt when missing)
#   GIT_REF                 what install ships; default: the working tree's tracked files
#                           (`git stash create`, which touches neither the tree nor the stash list),
#                           or HEAD when nothing tracked is modified. Untracked files are not shipped
#   DRY_RUN=1 / --dry-run   print every gcloud, gsutil and git command, one per line, run none
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# On each worker, relative to the ssh user's home directory:
readonly REMOTE_TREE=autox3d_jax REMOTE_VENV=autox3d_venv REMOTE_LOG=autox3d.log REMOTE_PID=autox3d.pid
readonly REMOTE_ARCHIVE=autox3d_jax.tar.gz
# Worker shell test: the run started by `run` is alive. The pid file holds the pid of the shell group
# that waits on the program; its command line (sshd's `bash -c` of the run command) holds
# autox3d_jax.main, so a stale pid reused by another process does not count.
readonly REMOTE_RUNNING="[ -e $REMOTE_PID ] && grep -qs autox3d_jax.main \"/proc/\$(cat $REMOTE_PID)/cmdline\""

DRY_RUN=${DRY_RUN:-0}
exec 3>&1   # dry-run lines go to fd 3 (stdout), also from inside $(...) captures

die() { echo "tpu.sh: $*" >&2; exit 2; }

# shq ARG: ARG quoted for bash (and POSIX sh): as is when it holds only safe characters, otherwise
# in single quotes with each ' written as '\''. Equivalent to printf %q, and easier to read.
shq() {
  if [[ $1 =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then
    printf '%s' "$1"
  else
    printf "'%s'" "${1//\'/\'\\\'\'}"
  fi
}

# quote_all ARGS...: one command line that a shell splits back into exactly ARGS.
quote_all() {
  local out="" arg
  for arg in "$@"; do out+="${out:+ }$(shq "$arg")"; done
  printf '%s' "$out"
}

# x CMD...: run CMD (echoed to stderr with '+ '), or under dry-run only print it on fd 3.
x() {
  if [[ $DRY_RUN == 1 ]]; then
    printf '%s\n' "$(quote_all "$@")" >&3
  else
    printf '+ %s\n' "$(quote_all "$@")" >&2
    "$@"
  fi
}

# query CMD...: CMD's stdout (nothing when it fails). Under dry-run it prints CMD and answers
# nothing, which the callers read as "no such TPU": a dry run shows the longest path.
query() {
  if [[ $DRY_RUN == 1 ]]; then
    printf '%s\n' "$(quote_all "$@")" >&3
  else
    "$@" 2>/dev/null || true
  fi
}

need_tpu() {
  [[ -n ${TPU_NAME:-} ]] || die "TPU_NAME is not set: the TPU VM's name, e.g. TPU_NAME=autox3d"
  [[ -n ${ZONE:-} ]] || die "ZONE is not set: the TPU's zone, e.g. ZONE=us-central2-b"
  GCLOUD_FLAGS=(--zone="$ZONE")
  if [[ -n ${PROJECT:-} ]]; then GCLOUD_FLAGS+=(--project="$PROJECT"); fi
  QR_ID=${QR_ID:-$TPU_NAME-qr}
}

need_workdir() {
  [[ -n ${WORKDIR:-} ]] || die "WORKDIR is not set: a gs:// path for checkpoints, logs and the report, e.g. WORKDIR=gs://my-bucket/runs/autox3d_s"
  [[ $WORKDIR == gs://?* ]] || die "WORKDIR must be a gs:// path (every worker writes it and resume reads it), got '$WORKDIR'"
}

default_runtime() {
  case $1 in
    v5litepod-*|v5e-*) echo v2-alpha-tpuv5-lite ;;
    v5p-*) echo v2-alpha-tpuv5 ;;
    v6e-*) echo v2-alpha-tpuv6e ;;
    *) echo tpu-ubuntu2204-base ;;
  esac
}

ssh_all() { x gcloud compute tpus tpu-vm ssh "$TPU_NAME" "${GCLOUD_FLAGS[@]}" --worker=all --command="$1"; }

# The TPU's state: READY (tpu-vm) / ACTIVE (queued resource) when usable, empty when it does not exist.
tpu_state() {
  if [[ ${QUEUED:-0} == 1 ]]; then
    query gcloud compute tpus queued-resources describe "$QR_ID" "${GCLOUD_FLAGS[@]}" --format='value(state.state)'
  else
    query gcloud compute tpus tpu-vm describe "$TPU_NAME" "${GCLOUD_FLAGS[@]}" --format='value(state)'
  fi
}

# what: the resource this script manages, in words.
what() {
  if [[ ${QUEUED:-0} == 1 ]]; then echo "queued resource $QR_ID (node $TPU_NAME)"; else echo "TPU VM $TPU_NAME"; fi
}

cmd_create() {
  local accel=${ACCEL:-v4-8} spot=()
  local runtime=${RUNTIME_VERSION:-$(default_runtime "$accel")}
  if [[ ${SPOT:-0} == 1 ]]; then spot=(--spot); fi
  if [[ ${QUEUED:-0} == 1 ]]; then
    x gcloud compute tpus queued-resources create "$QR_ID" "${GCLOUD_FLAGS[@]}" --node-id="$TPU_NAME" \
      --accelerator-type="$accel" --runtime-version="$runtime" \
      --scopes=https://www.googleapis.com/auth/cloud-platform "${spot[@]}"
    wait_ready
  else
    x gcloud compute tpus tpu-vm create "$TPU_NAME" "${GCLOUD_FLAGS[@]}" --accelerator-type="$accel" \
      --version="$runtime" --scopes=https://www.googleapis.com/auth/cloud-platform "${spot[@]}"
  fi
}

# Poll until the TPU is usable (READY / ACTIVE). A queued resource can wait hours for capacity;
# Ctrl-C is safe (the request stays queued) and `tpu.sh resume` picks the wait up again.
wait_ready() {
  local state
  while :; do
    state=$(tpu_state)
    if [[ $DRY_RUN == 1 || $state == READY || $state == ACTIVE ]]; then return 0; fi
    case $state in
      ACCEPTED|WAITING_FOR_RESOURCES|PROVISIONING|CREATING|STARTING) ;;
      *) die "$(what) is '${state:-gone}' instead of becoming ready; delete it and create it again" ;;
    esac
    echo "tpu.sh: $(what) is $state; waiting until it is ready (checking every 60 s)" >&2
    sleep 60
  done
}

cmd_install() {
  local ref=${GIT_REF:-}
  if [[ -z $ref ]]; then ref=$(query git -C "$ROOT" stash create); fi
  ref=${ref:-HEAD}
  ARCHIVE=${TMPDIR:-/tmp}/autox3d_jax.$$.tar.gz   # global: the EXIT trap removes it
  if [[ $DRY_RUN != 1 ]]; then trap 'rm -f "$ARCHIVE"' EXIT; fi
  x git -C "$ROOT" archive --format=tar.gz --prefix="$REMOTE_TREE/" --output="$ARCHIVE" "$ref"
  x gcloud compute tpus tpu-vm scp "$ARCHIVE" "$TPU_NAME:$REMOTE_ARCHIVE" "${GCLOUD_FLAGS[@]}" --worker=all
  # On every worker: a fresh tree; a venv (apt-installing the interpreter or its venv module when
  # missing); this tree installed with the TPU extra (jax[tpu]), replacing any earlier install.
  local py
  py=$(shq "${PYTHON:-python3.11}")
  ssh_all "set -e ; if $REMOTE_RUNNING ; then echo \"\$(hostname): a run is in progress; stop it first (tpu.sh stop)\" >&2 ; exit 1 ; fi ; \
rm -rf $REMOTE_TREE ; tar -xzf $REMOTE_ARCHIVE ; rm -f $REMOTE_ARCHIVE ; \
$py -m venv $REMOTE_VENV || { sudo apt-get update -q && sudo DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q $py $py-venv && $py -m venv $REMOTE_VENV ; } ; \
$REMOTE_VENV/bin/pip install -q --upgrade pip ; $REMOTE_VENV/bin/pip uninstall -q -y autox3d_jax || true ; \
$REMOTE_VENV/bin/pip install -q './${REMOTE_TREE}[tpu]' ; echo \"\$(hostname): installed\""
}

cmd_run() {
  local config=${1:?usage: tpu.sh run CONFIG[:ARG] [--config.key=value ...]}
  shift
  local argv=("../$REMOTE_VENV/bin/python" -m autox3d_jax.main --config="$config" --workdir="$WORKDIR")
  if [[ -n ${DATA_DIR:-} ]]; then argv+=(--config.data.data_dir="$DATA_DIR"); fi
  argv+=("$@")
  # Each argument is quoted once here and split once by the worker's shell, so a value with spaces,
  # commas or quotes reaches the program unchanged. The pid file names the process group below; a
  # live one (its command line holds autox3d_jax.main) stops a second copy on that worker. The group
  # outlives the ssh session (HUP ignored by nohup, trapped by the group) and logs the program's exit
  # code when it ends (143: preempted, state saved; 0: done).
  ssh_all "if $REMOTE_RUNNING ; then echo \"\$(hostname): already running, not starting another\" >&2 ; exit 1 ; fi ; \
cd $REMOTE_TREE || exit 1 ; \
{ trap true HUP TERM ; echo \"=== \$(date -u) start\" ; nohup $(quote_all "${argv[@]}") ; echo \"=== \$(date -u) exit code \$?\" ; } >> ../$REMOTE_LOG 2>&1 < /dev/null & \
echo \$! > ../$REMOTE_PID ; echo \"\$(hostname): started, log ~/$REMOTE_LOG\""
  echo "tpu.sh: started on $TPU_NAME; watch: bash launch/tpu.sh logs; after a preemption: bash launch/tpu.sh resume with the same arguments" >&2
}

cmd_resume() {
  local state
  state=$(tpu_state)
  case $state in
    READY|ACTIVE) ;;   # still up: the install is there, only the program needs a rerun
    ACCEPTED|WAITING_FOR_RESOURCES|PROVISIONING|CREATING|STARTING) wait_ready; cmd_install ;;
    "") cmd_create; cmd_install ;;
    *) cmd_delete; cmd_create; cmd_install ;;   # PREEMPTED, SUSPENDED, FAILED, ...: recreate
  esac
  cmd_run "$@"
}

cmd_logs() {
  x gcloud compute tpus tpu-vm ssh "$TPU_NAME" "${GCLOUD_FLAGS[@]}" --worker="${WORKER:-0}" \
    --command="tail -n 200 -F $REMOTE_LOG"
}

cmd_collect() {
  ssh_all "gsutil -q cp $REMOTE_LOG $(shq "$WORKDIR/logs/")\"\$(hostname).log\" && echo \"\$(hostname): log copied\""
  echo "tpu.sh: logs in $WORKDIR/logs/ (gsutil ls $WORKDIR/logs/)" >&2
}

cmd_status() {
  local state
  state=$(tpu_state)
  echo "tpu.sh: $(what): ${state:-not found}" >&2
  if [[ -z $state && $DRY_RUN != 1 ]]; then return 0; fi
  ssh_all "if $REMOTE_RUNNING ; then echo \"\$(hostname): running\" ; else echo \"\$(hostname): not running\" ; fi ; tail -n 3 $REMOTE_LOG 2>/dev/null || true"
}

# SIGTERM to the program on every worker, as a preemption would: it saves after the current step and
# exits 143; `resume` continues from that checkpoint.
cmd_stop() {
  ssh_all "if $REMOTE_RUNNING ; then pkill -TERM -P \"\$(cat $REMOTE_PID)\" && echo \"\$(hostname): SIGTERM sent\" ; else echo \"\$(hostname): not running\" ; fi"
}

cmd_delete() {
  if [[ ${QUEUED:-0} == 1 ]]; then
    x gcloud compute tpus queued-resources delete "$QR_ID" "${GCLOUD_FLAGS[@]}" --force --quiet
  else
    x gcloud compute tpus tpu-vm delete "$TPU_NAME" "${GCLOUD_FLAGS[@]}" --quiet
  fi
}

main() {
  if [[ ${1:-} == --dry-run ]]; then DRY_RUN=1; shift; fi
  local command=${1:-}
  shift || true
  case $command in
    create|install|logs|status|stop|delete) need_tpu ;;
    run|resume|collect) need_tpu; need_workdir ;;
    *) die "usage: tpu.sh [--dry-run] create|install|run CONFIG [ARGS...]|resume CONFIG [ARGS...]|logs|collect|status|stop|delete (got '${command}')" ;;
  esac
  if [[ $command == run || $command == resume ]]; then
    [[ $# -ge 1 ]] || die "usage: tpu.sh $command CONFIG[:ARG] [--config.key=value ...]"
  fi
  "cmd_$command" "$@"
}

main "$@"
