#!/usr/bin/env bash
# Create a TPU queued resource (one TPU VM node, any slice size) and wait until it is ACTIVE.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<'USAGE'
usage: tpu_scripts/create.sh --name NAME --zone ZONE --accelerator-type TYPE [options]

Creates the queued resource NAME holding one TPU VM node named NAME, then waits until it is ACTIVE.

  --name NAME               queued-resource and node id (or $AYA_TPU_NAME)
  --zone ZONE               e.g. us-west4-a, us-central2-b (or $AYA_TPU_ZONE)
  --project PROJECT         default: gcloud's configured project (or $AYA_TPU_PROJECT)
  --accelerator-type TYPE   v4-32, v5litepod-64, v5p-128, v6e-256, ...
  --runtime-version V       TPU VM image; default by generation: v2-alpha-tpuv5-lite (v5e),
                            v2-alpha-tpuv6e (v6e), v2-alpha-tpuv5 (v5p), tpu-ubuntu2204-base (v4)
  --spot                    Spot capacity: cheaper, can be preempted at any time
  --best-effort             best-effort capacity (gcloud alpha): can be preempted
  --reserved                use the project's reservation
  --valid-until-duration D  give up if not provisioned within D (e.g. 6h)
  --no-wait                 return once the request is queued
  --dry-run                 print the gcloud commands, run nothing
  -h, --help                this help
USAGE
}

ACCELERATOR_TYPE=""
RUNTIME_VERSION=""
CAPACITY=""
VALID_UNTIL=""
WAIT=1
scan_dry_run "$@"
while (($#)); do
  common_option "$@"
  if ((SHIFT)); then shift "$SHIFT"; continue; fi
  case "$1" in
    --accelerator-type | --accelerator-type=*) option_value "$@"; ACCELERATOR_TYPE="$VALUE"; shift "$SHIFT" ;;
    --runtime-version | --runtime-version=*) option_value "$@"; RUNTIME_VERSION="$VALUE"; shift "$SHIFT" ;;
    --valid-until-duration | --valid-until-duration=*) option_value "$@"; VALID_UNTIL="$VALUE"; shift "$SHIFT" ;;
    --spot | --best-effort | --reserved)
      [[ -z $CAPACITY || $CAPACITY == "$1" ]] || die "choose one of --spot, --best-effort, --reserved"
      CAPACITY="$1"
      shift
      ;;
    --no-wait) WAIT=0; shift ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done
require_common
[[ -n $ACCELERATOR_TYPE ]] || die "--accelerator-type is required, e.g. v5litepod-16"
if [[ -z $RUNTIME_VERSION ]]; then
  case "$ACCELERATOR_TYPE" in
    v5litepod-* | v5e-*) RUNTIME_VERSION="v2-alpha-tpuv5-lite" ;;
    v6e-*) RUNTIME_VERSION="v2-alpha-tpuv6e" ;;
    v5p-*) RUNTIME_VERSION="v2-alpha-tpuv5" ;;
    v4-*) RUNTIME_VERSION="tpu-ubuntu2204-base" ;;
    *) die "no default runtime version for $ACCELERATOR_TYPE; pass --runtime-version" ;;
  esac
fi

gcloud_cmd=(gcloud)
# --best-effort exists only in gcloud's alpha track.
if [[ $CAPACITY == --best-effort ]]; then gcloud_cmd+=(alpha); fi
location_flags
create=("${gcloud_cmd[@]}" compute tpus queued-resources create "$NAME" "--node-id=$NAME" "${LOCATION_FLAGS[@]}"
  "--accelerator-type=$ACCELERATOR_TYPE" "--runtime-version=$RUNTIME_VERSION")
if [[ -n $CAPACITY ]]; then create+=("$CAPACITY"); fi
if [[ -n $VALID_UNTIL ]]; then create+=("--valid-until-duration=$VALID_UNTIL"); fi
run "${create[@]}"

if ((WAIT)); then
  common_args
  "$SCRIPTS_DIR/wait.sh" "${COMMON_ARGS[@]}"
fi
