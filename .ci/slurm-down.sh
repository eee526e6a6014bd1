#!/usr/bin/env bash
# Stop the single-node CI cluster started by .ci/slurm-up.sh: slurmd, slurmctld and (only if
# slurm-up.sh started it) munged. Idempotent; leaves configuration, state and logs in place.
set -euo pipefail

CI_DIR=${SLURM_CI_DIR:-/tmp/slurm-ci}

log() { printf '[slurm-down] %s\n' "$*"; }

stop() { # stop NAME PIDFILE: SIGTERM, wait up to 15 s, then SIGKILL
    local name=$1 pidfile=$2 pid
    if [ ! -s "$pidfile" ] || ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then
        log "$name not running"
        rm -f "$pidfile"
        return 0
    fi
    pid=$(cat "$pidfile")
    log "stopping $name (pid $pid)"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 30); do
        kill -0 "$pid" 2>/dev/null || { rm -f "$pidfile"; return 0; }
        sleep 0.5
    done
    log "$name did not stop in 15 s, killing it"
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$pidfile"
}

# slurmd first (it would otherwise keep retrying a vanished controller), then the controller.
stop slurmd "$CI_DIR/slurmd.pid"
stop slurmctld "$CI_DIR/slurmctld.pid"

if [ -s "$CI_DIR/munged.started" ]; then
    stop munged "$(cat "$CI_DIR/munged.started")"
    rm -f "$CI_DIR/munged.started"
else
    log "munged was not started by slurm-up.sh; leaving it alone"
fi
