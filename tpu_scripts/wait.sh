#!/usr/bin/env bash
# Wait until a queued resource is ACTIVE; fail if it FAILED or was SUSPENDED (preempted).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<'USAGE'
usage: tpu_scripts/wait.sh --name NAME --zone ZONE [--project PROJECT] [--poll SECONDS] [--dry-run]

Polls the queued resource's state every SECONDS (default 30) until it is ACTIVE. Exits 1 if it becomes
FAILED, SUSPENDING or SUSPENDED.
USAGE
}

POLL=30
scan_dry_run "$@"
while (($#)); do
  common_option "$@"
  if ((SHIFT)); then shift "$SHIFT"; continue; fi
  case "$1" in
    --poll | --poll=*) option_value "$@"; POLL="$VALUE"; shift "$SHIFT" ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done
require_common
location_flags
describe=(gcloud compute tpus queued-resources describe "$NAME" "${LOCATION_FLAGS[@]}" "--format=value(state.state)")
if ((DRY_RUN)); then
  run "${describe[@]}"
  exit 0
fi
last=""
while true; do
  state="$("${describe[@]}")"
  if [[ $state != "$last" ]]; then
    echo "$(date +%H:%M:%S) queued resource $NAME: $state" >&2
    last="$state"
  fi
  case "$state" in
    ACTIVE) exit 0 ;;
    FAILED | SUSPENDING | SUSPENDED)
      echo "error: queued resource $NAME is $state; delete it (tpu_scripts/teardown.sh) and create it again" >&2
      exit 1
      ;;
  esac
  sleep "$POLL"
done
