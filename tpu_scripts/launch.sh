#!/usr/bin/env bash
# Start `python -m aya_jax.main ...` on every worker of a TPU VM slice at once, in the background.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<'USAGE'
usage: tpu_scripts/launch.sh --name NAME --zone ZONE [--project PROJECT] [--env KEY=VALUE ...] [--dry-run]
                             [-- MAIN_ARGS ...]

Starts `python -m aya_jax.main MAIN_ARGS` in ~/aya_jax on all workers at once (default MAIN_ARGS:
--config configs/quickstart.py), detached from the ssh session: output in ~/aya_jax_run.log, the process id in
~/aya_jax_run.pid and, when it ends, its exit status in ~/aya_jax_run.exit. Follow it with tpu_scripts/logs.sh.
Refuses to start while a previous run is alive on a worker.

Adds --config.mesh.distributed=on unless MAIN_ARGS set it (jax then finds its peers from the TPU metadata).
On more than one worker, put the checkpoints on a shared path
(--config.checkpoint.directory=gs://BUCKET/run/checkpoints): every host writes its own shards of each
checkpoint. Metrics, TensorBoard and the loss plot stay in the workdir of worker 0. Rerunning the same launch
after a preemption resumes from the latest checkpoint.

  --env KEY=VALUE   environment for the run (repeatable), e.g. AYA_DATA_DIR=gs://BUCKET/data
  --dry-run         print the gcloud command, run nothing
  -h, --help        this help
USAGE
}

ENV_VARS=()
MAIN_ARGS=()
scan_dry_run "$@"
while (($#)); do
  common_option "$@"
  if ((SHIFT)); then shift "$SHIFT"; continue; fi
  case "$1" in
    --env | --env=*)
      option_value "$@"
      [[ $VALUE =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || die "--env $VALUE: expected KEY=VALUE"
      ENV_VARS+=("$VALUE")
      shift "$SHIFT"
      ;;
    --)
      shift
      take_main_args "$@"
      break
      ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done
require_common
if ((${#MAIN_ARGS[@]} == 0)); then MAIN_ARGS=(--config configs/quickstart.py); fi
if [[ " ${MAIN_ARGS[*]} " != *" --config.mesh.distributed"* ]]; then
  MAIN_ARGS+=(--config.mesh.distributed=on)
fi
if [[ " ${MAIN_ARGS[*]} " != *" --config.checkpoint.directory=gs://"* ]]; then
  echo "note: no --config.checkpoint.directory=gs://...: fine on one worker; a pod needs a shared path" >&2
fi

python_cmd=".venv/bin/python -m aya_jax.main"
for arg in "${MAIN_ARGS[@]}"; do python_cmd+=" $(quote "$arg")"; done
if ((${#ENV_VARS[@]})); then
  env_words="env"
  for kv in "${ENV_VARS[@]}"; do env_words+=" $(quote "$kv")"; done
  python_cmd="$env_words $python_cmd"
fi
# Only the last part runs in the background; the subshell ignores the hangup of the ssh session ending,
# records the python process id for stop.sh and, once python ends, its exit status for logs.sh.
remote="cd $REMOTE_DIR || exit 1"
remote+="; if test -f ~/$RUN_PID && kill -0 \"\$(cat ~/$RUN_PID)\" 2>/dev/null; then"
remote+=" echo \"a run is still alive on \$(hostname); stop it first (tpu_scripts/stop.sh)\" >&2; exit 1; fi"
remote+="; rm -f ~/$RUN_EXIT"
remote+="; (trap \"\" HUP; $python_cmd > ~/$RUN_LOG 2>&1 & echo \$! > ~/$RUN_PID;"
remote+=" wait \$!; echo \$? > ~/$RUN_EXIT) < /dev/null > /dev/null 2>&1 &"
on_workers all "$remote"
