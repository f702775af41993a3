#!/usr/bin/env bash
# Copy this checkout to every worker of a TPU VM slice and install it there (a venv with the [tpu] extra).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<'USAGE'
usage: tpu_scripts/install.sh --name NAME --zone ZONE [--project PROJECT] [options]

Packs the project (without .venv, .git, workdirs), copies it to every worker, unpacks it into ~/aya_jax and
installs it into ~/aya_jax/.venv. Rerunning updates the code and keeps the venv.

  --source DIR      the project to copy (default: the checkout this script belongs to)
  --tarball FILE    where to pack it locally (default: /tmp/aya_jax-NAME.tgz)
  --python PYTHON   the interpreter to create the venv with (default: python3.11; installed with apt if
                    the image lacks it)
  --extras EXTRAS   pip extras (default: tpu)
  --dry-run         print the commands, run nothing
  -h, --help        this help
USAGE
}

SOURCE="$(cd "$SCRIPTS_DIR/.." && pwd)"
TARBALL=""
PYTHON="python3.11"
EXTRAS="tpu"
scan_dry_run "$@"
while (($#)); do
  common_option "$@"
  if ((SHIFT)); then shift "$SHIFT"; continue; fi
  case "$1" in
    --source | --source=*) option_value "$@"; SOURCE="$VALUE"; shift "$SHIFT" ;;
    --tarball | --tarball=*) option_value "$@"; TARBALL="$VALUE"; shift "$SHIFT" ;;
    --python | --python=*) option_value "$@"; PYTHON="$VALUE"; shift "$SHIFT" ;;
    --extras | --extras=*) option_value "$@"; EXTRAS="$VALUE"; shift "$SHIFT" ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done
require_common
TARBALL="${TARBALL:-/tmp/aya_jax-$NAME.tgz}"
[[ -f $SOURCE/pyproject.toml ]] || die "--source $SOURCE: no pyproject.toml there"

run tar -czf "$TARBALL" --exclude=./.venv --exclude=./.git --exclude=./workdirs --exclude=__pycache__ \
  -C "$SOURCE" .
location_flags
run gcloud compute tpus tpu-vm scp "$TARBALL" "$NAME:$REMOTE_DIR.tgz" "${LOCATION_FLAGS[@]}" --worker=all
py="$(quote "$PYTHON")"
remote="set -e; command -v $py >/dev/null || { sudo apt-get update -qq && sudo apt-get install -y -qq $py $py-venv; }"
remote+="; mkdir -p $REMOTE_DIR && tar -xzf $REMOTE_DIR.tgz -C $REMOTE_DIR && cd $REMOTE_DIR"
remote+=" && { test -x .venv/bin/python || $py -m venv .venv; }"
remote+=" && .venv/bin/pip install -q --upgrade pip && .venv/bin/pip install -q -e \".[$EXTRAS]\""
on_workers all "$remote"
