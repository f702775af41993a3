# shellcheck shell=bash disable=SC2034  # the variables set here are read by the scripts that source it
# Shared by the tpu_scripts: common options, quoting, --dry-run. Sourced by each script, never run.
#
# Every script prints each gcloud command before it runs it (to stderr, prefixed "+ "); with --dry-run it prints
# them to stdout instead and runs nothing, so the exact commands can be read, reviewed or pasted.

DRY_RUN=0
NAME="${AYA_TPU_NAME:-}"        # queued-resource id, also used as the TPU VM (node) id
ZONE="${AYA_TPU_ZONE:-}"
PROJECT="${AYA_TPU_PROJECT:-}"  # empty: gcloud's configured project
REMOTE_DIR="aya_jax"            # the project on each worker, relative to the ssh user's home
RUN_LOG="aya_jax_run.log"       # in the home directory of each worker: the run's stdout and stderr
RUN_PID="aya_jax_run.pid"       # the run's python process id
RUN_EXIT="aya_jax_run.exit"     # the run's exit status, once it has ended
SCRIPTS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

die() {
  echo "error: $*" >&2
  exit 2
}

# One shell word that reads back as $1: bare when it is plain, else single-quoted.
quote() {
  if [[ $1 =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then
    printf '%s' "$1"
  else
    printf "'%s'" "${1//\'/\'\\\'\'}"
  fi
}

# The words of a command as one line that a shell reads back as the same words.
command_line() {
  local line="" word
  for word in "$@"; do
    line+="${line:+ }$(quote "$word")"
  done
  printf '%s\n' "$line"
}

# Every gcloud call of the scripts goes through this function, so a dry run cannot reach the real gcloud even
# through a path that forgot to check DRY_RUN: it stops the script instead.
gcloud() {
  ((!DRY_RUN)) || die "internal: a dry run tried to run gcloud $*"
  command gcloud "$@"
}

# Print the command; run it unless --dry-run.
run() {
  if ((DRY_RUN)); then
    command_line "$@"
  else
    printf '+ %s' "$(command_line "$@")" >&2
    echo >&2
    "$@"
  fi
}

# Set DRY_RUN from a --dry-run anywhere before "--", before any option is parsed: every later error or step
# then already knows it is a dry run (an option parsed earlier can never turn it off or take it as a value).
# Each script calls this first with all its arguments; a --dry-run after "--" is refused by take_main_args.
scan_dry_run() {
  local arg
  for arg in "$@"; do
    [[ $arg != -- ]] || break
    if [[ $arg == --dry-run ]]; then DRY_RUN=1; fi
  done
}

# Refuse "--opt" given as the last word or followed by another option: "--accelerator-type --dry-run" would
# otherwise swallow the next option as its value. (The "--opt=VALUE" spelling takes VALUE as written.)
require_value() { # OPTION [NEXT_WORD]
  if (($# < 2)) || [[ $2 == --* ]]; then die "$1 needs a value"; fi
}

# Consume one common option at the front of "$@": SHIFT is how many words it took (0: not a common option).
# The calling script defines usage().
common_option() {
  SHIFT=0
  case "$1" in
    --name | --zone | --project)
      require_value "$@"
      set_common "$1" "$2"
      SHIFT=2
      ;;
    --name=* | --zone=* | --project=*)
      set_common "${1%%=*}" "${1#*=}"
      SHIFT=1
      ;;
    --dry-run)
      DRY_RUN=1
      SHIFT=1
      ;;
    -h | --help)
      usage
      exit 0
      ;;
  esac
}

set_common() {
  case "$1" in
    --name) NAME="$2" ;;
    --zone) ZONE="$2" ;;
    --project) PROJECT="$2" ;;
  esac
}

# VALUE and SHIFT for a script's own "--opt VALUE" or "--opt=VALUE" at the front of "$@".
option_value() {
  if [[ $1 == *=* ]]; then
    VALUE="${1#*=}"
    SHIFT=1
  else
    require_value "$@"
    VALUE="$2"
    SHIFT=2
  fi
}

take_main_args() { # the arguments after --, for aya_jax.main (sets MAIN_ARGS)
  MAIN_ARGS=("$@")
  local arg
  for arg in "${MAIN_ARGS[@]}"; do
    [[ $arg != --dry-run ]] || die "--dry-run after -- would go to aya_jax.main; put it before --"
  done
}

require_common() {
  [[ -n $NAME ]] || die "--name is required (or set AYA_TPU_NAME)"
  [[ -n $ZONE ]] || die "--zone is required (or set AYA_TPU_ZONE)"
}

# The options every script passes through to another one.
common_args() {
  COMMON_ARGS=(--name "$NAME" --zone "$ZONE")
  if [[ -n $PROJECT ]]; then COMMON_ARGS+=(--project "$PROJECT"); fi
  if ((DRY_RUN)); then COMMON_ARGS+=(--dry-run); fi
}

# gcloud's location flags: --zone=..., and --project=... when one is given.
location_flags() {
  LOCATION_FLAGS=("--zone=$ZONE")
  if [[ -n $PROJECT ]]; then LOCATION_FLAGS+=("--project=$PROJECT"); fi
}

# Run a shell command line on TPU VM workers ("all", or a worker number) over gcloud's ssh.
on_workers() {
  local worker="$1" remote="$2"
  location_flags
  run gcloud compute tpus tpu-vm ssh "$NAME" "${LOCATION_FLAGS[@]}" "--worker=$worker" "--command=$remote"
}
