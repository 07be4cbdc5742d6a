#!/bin/sh
# scalelab CPU stress: SSM Run Command (AWS-RunShellScript) runs this as root on
# each InService instance of the lab's group, so the group's target-tracking CPU
# policy scales it out. Every core is kept busy for DURATION seconds, and then
# the burn stops by itself even if nobody ever cancels the command:
#   - stress-ng (installed by the user data when the package exists) stops at its
#     own --timeout; without it, one shell busy loop per core stops at DURATION;
#   - both run under coreutils timeout, which ends them DURATION (+ GRACE for
#     stress-ng) seconds after the start, and kills them KILL_AFTER seconds later
#     if they ignore that.
# timeout runs in --foreground mode so every process stays in this script's
# process group: the SSM agent kills that whole group on cancel-command or
# executionTimeout, and nothing escapes it.
# POSIX sh on purpose: the agent starts the script with sh.
# scalelab.stress fills in the placeholder below before sending the command.
set -eu

DURATION="__SCALELAB_STRESS_SECONDS__"
GRACE=3
KILL_AFTER=2

say() {
  echo "scalelab stress: $*"
}

case "$DURATION" in
  '' | *[!0-9]*)
    say "duration '${DURATION}' is not a whole number of seconds; nothing started"
    exit 2
    ;;
esac
if [ "$DURATION" -lt 1 ]; then
  say "duration must be at least 1 second; nothing started"
  exit 2
fi
if ! command -v timeout >/dev/null 2>&1; then
  say "coreutils timeout is missing; refusing to start a burn nothing would bound"
  exit 3
fi

CORES=$(nproc 2>/dev/null || echo 1)
say "started at $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(hostname 2>/dev/null || echo this host): ${CORES} cores for ${DURATION} s"

if command -v stress-ng >/dev/null 2>&1; then
  say "using stress-ng (every core at 100 % load)"
  status=0
  timeout --foreground --kill-after="$KILL_AFTER" "$((DURATION + GRACE))" \
    stress-ng --cpu 0 --cpu-load 100 --timeout "${DURATION}s" || status=$?
  case "$status" in
    0) ;;
    124 | 137) say "stress-ng overran its own timeout; timeout stopped it" ;;
    *)
      say "stress-ng failed with exit status ${status}"
      exit "$status"
      ;;
  esac
else
  say "stress-ng not found; one shell busy loop per core"
  core=0
  while [ "$core" -lt "$CORES" ]; do
    timeout --foreground --kill-after="$KILL_AFTER" "$DURATION" sh -c 'while :; do :; done' &
    core=$((core + 1))
  done
  # Each loop ends when its timeout fires (exit status 124): that is the plan, not a failure.
  wait
fi

say "finished at $(date -u +%Y-%m-%dT%H:%M:%SZ)"
