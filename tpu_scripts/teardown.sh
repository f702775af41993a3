#!/usr/bin/env bash
# Delete the queued resource and its TPU VM node.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<'USAGE'
usage: tpu_scripts/teardown.sh --name NAME --zone ZONE [--project PROJECT] [--stop-first] [--dry-run]

Deletes the queued resource NAME and (--force) the node it holds. Anything not on a gs:// path is lost.

  --stop-first   SIGTERM the run first (tpu_scripts/stop.sh) and wait up to --grace seconds for it to save
                 its checkpoint and exit
  --grace S      default 300
  --dry-run      print the gcloud commands, run nothing
  -h, --help     this help
USAGE
}

STOP_FIRST=0
GRACE=300
scan_dry_run "$@"
while (($#)); do
  common_option "$@"
  if ((SHIFT)); then shift "$SHIFT"; continue; fi
  case "$1" in
    --stop-first) STOP_FIRST=1; shift ;;
    --grace | --grace=*) option_value "$@"; GRACE="$VALUE"; shift "$SHIFT" ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done
require_common
if ((STOP_FIRST)); then
  common_args
  "$SCRIPTS_DIR/stop.sh" "${COMMON_ARGS[@]}"
  [[ $GRACE =~ ^[0-9]+$ ]] || die "--grace $GRACE: expected seconds"
  on_workers all "timeout $GRACE tail --pid=\"\$(cat ~/$RUN_PID)\" -f /dev/null || true"
fi
location_flags
run gcloud compute tpus queued-resources delete "$NAME" "${LOCATION_FLAGS[@]}" --force --quiet
