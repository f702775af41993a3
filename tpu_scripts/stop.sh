#!/usr/bin/env bash
# Ask the run on every worker to stop: SIGTERM, as a preemption does; it saves a checkpoint and exits 0.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<'USAGE'
usage: tpu_scripts/stop.sh --name NAME --zone ZONE [--project PROJECT] [--dry-run]

Sends SIGTERM to the run on all workers. The trainer finishes its current step, saves a checkpoint and exits
0 (see README, "Checkpoints and preemption"); tpu_scripts/launch.sh with the same arguments resumes it.
USAGE
}

scan_dry_run "$@"
while (($#)); do
  common_option "$@"
  if ((SHIFT)); then shift "$SHIFT"; continue; fi
  die "unknown option $1 (see --help)"
done
require_common
on_workers all "if test -f ~/$RUN_PID; then kill -TERM \"\$(cat ~/$RUN_PID)\" 2>/dev/null || true; fi"
