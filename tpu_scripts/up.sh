#!/usr/bin/env bash
# The one command: queued resource -> install on every worker -> launch on all workers -> stream worker 0.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<'USAGE'
usage: tpu_scripts/up.sh --name NAME --zone ZONE --accelerator-type TYPE [options] [-- MAIN_ARGS ...]

  1. creates the queued resource NAME (tpu_scripts/create.sh) unless it is already there, and waits until
     it is ACTIVE; one that was preempted (SUSPENDED) or FAILED is deleted and requested again;
  2. copies this checkout to every worker and installs it (tpu_scripts/install.sh);
  3. starts python -m aya_jax.main MAIN_ARGS on all workers at once (tpu_scripts/launch.sh);
  4. streams worker 0's log until the run ends (tpu_scripts/logs.sh) and exits with its status;
  5. with --teardown, deletes the queued resource afterwards (tpu_scripts/teardown.sh).

Running the same command again after a preemption resumes the run from its latest checkpoint (keep the
checkpoints on gs://). Example (v5e-16 Spot, checkpoints in a bucket):

  tpu_scripts/up.sh --name aya-v5e --zone us-west4-a --accelerator-type v5litepod-16 --spot -- \
      --config configs/quickstart.py --config.checkpoint.directory=gs://MY_BUCKET/aya/quickstart

  --name, --zone, --project          as for every script (or $AYA_TPU_NAME, $AYA_TPU_ZONE, $AYA_TPU_PROJECT)
  --accelerator-type, --runtime-version, --spot, --best-effort, --reserved, --valid-until-duration
                                     passed to tpu_scripts/create.sh
  --env KEY=VALUE                    passed to tpu_scripts/launch.sh (repeatable)
  --skip-install                     reuse what is installed on the workers
  --no-logs                          return after launching
  --teardown                         delete the queued resource when the run ends
  --dry-run                          print every command, run nothing
  -h, --help                         this help
USAGE
}

CREATE_ARGS=()
LAUNCH_ARGS=()
MAIN_ARGS=()
INSTALL=1
LOGS=1
TEARDOWN=0
scan_dry_run "$@"
while (($#)); do
  common_option "$@"
  if ((SHIFT)); then shift "$SHIFT"; continue; fi
  case "$1" in
    --accelerator-type | --accelerator-type=* | --runtime-version | --runtime-version=* | \
      --valid-until-duration | --valid-until-duration=*)
      option_value "$@"
      CREATE_ARGS+=("${1%%=*}" "$VALUE")
      shift "$SHIFT"
      ;;
    --spot | --best-effort | --reserved) CREATE_ARGS+=("$1"); shift ;;
    --env | --env=*) option_value "$@"; LAUNCH_ARGS+=(--env "$VALUE"); shift "$SHIFT" ;;
    --skip-install) INSTALL=0; shift ;;
    --no-logs) LOGS=0; shift ;;
    --teardown) TEARDOWN=1; shift ;;
    --)
      shift
      take_main_args "$@"
      break
      ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done
require_common
common_args

# 1. The slice. A dry run cannot ask gcloud, so it shows the path for a resource that does not exist yet.
state=""
if ((!DRY_RUN)); then
  location_flags
  state="$(gcloud compute tpus queued-resources describe "$NAME" "${LOCATION_FLAGS[@]}" \
    "--format=value(state.state)" 2>/dev/null || true)"
  echo "queued resource $NAME: ${state:-not found}" >&2
fi
case "$state" in
  ACTIVE) ;;
  FAILED | SUSPENDING | SUSPENDED)
    "$SCRIPTS_DIR/teardown.sh" "${COMMON_ARGS[@]}"
    "$SCRIPTS_DIR/create.sh" "${COMMON_ARGS[@]}" "${CREATE_ARGS[@]}"
    ;;
  "") "$SCRIPTS_DIR/create.sh" "${COMMON_ARGS[@]}" "${CREATE_ARGS[@]}" ;;
  *) "$SCRIPTS_DIR/wait.sh" "${COMMON_ARGS[@]}" ;;
esac

# 2-4. Code, run, log.
if ((INSTALL)); then "$SCRIPTS_DIR/install.sh" "${COMMON_ARGS[@]}"; fi
"$SCRIPTS_DIR/launch.sh" "${COMMON_ARGS[@]}" "${LAUNCH_ARGS[@]}" -- "${MAIN_ARGS[@]}"
status=0
if ((LOGS)); then "$SCRIPTS_DIR/logs.sh" "${COMMON_ARGS[@]}" || status=$?; fi

# 5. Delete the slice on request, whatever the run's status.
if ((TEARDOWN)); then "$SCRIPTS_DIR/teardown.sh" "${COMMON_ARGS[@]}"; fi
exit "$status"
