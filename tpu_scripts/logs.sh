#!/usr/bin/env bash
# Stream a worker's run log until the run ends; exit with the run's exit status.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<'USAGE'
usage: tpu_scripts/logs.sh --name NAME --zone ZONE [--project PROJECT] [--worker N] [--dry-run]

Prints ~/aya_jax_run.log of worker N (default 0, the one that writes metrics) from the start and follows it
until the run's process ends; then exits with the run's exit status. Ctrl-C stops following, not the run.
USAGE
}

WORKER=0
scan_dry_run "$@"
while (($#)); do
  common_option "$@"
  if ((SHIFT)); then shift "$SHIFT"; continue; fi
  case "$1" in
    --worker | --worker=*) option_value "$@"; WORKER="$VALUE"; shift "$SHIFT" ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done
require_common
[[ $WORKER =~ ^[0-9]+$ ]] || die "--worker $WORKER: expected a worker number"
remote="tail -n +1 --pid=\"\$(cat ~/$RUN_PID)\" -F ~/$RUN_LOG"
remote+="; if test -f ~/$RUN_EXIT; then exit \"\$(cat ~/$RUN_EXIT)\"; fi"
on_workers "$WORKER" "$remote"
