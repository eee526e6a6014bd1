#!/usr/bin/env bash
# End-to-end test of the SLURM executor on the single-node CI cluster (about 3 minutes on 2 cores):
#   1. start the cluster (.ci/slurm-up.sh; needs root),
#   2. run the `tiny` preset through profiles/slurm-ci into a fresh temporary results dir, then check that
#      the report lists the preset's experiments and that every non-local job was a real SLURM job
#      (job id in Snakemake's output, in slurmctld's log, COMPLETED in scontrol, its sbatch log on disk),
#   3. meanwhile, in the background: corrupt the dataset file of a second results dir and run `train` on
#      it: the SLURM job fails at run time, and Snakemake must exit non-zero,
#   4. stop the daemons this script started (trap), print the wall time and the job count.
# Environment: SLURM_CI_DIR as for slurm-up.sh; SLURM_E2E_KEEP=1 keeps the temporary directory.
set -euo pipefail
cd "$(dirname "$0")/.."

CI_DIR=${SLURM_CI_DIR:-/tmp/slurm-ci}
t_start=$(date +%s)
log() { printf '[slurm-e2e] %s\n' "$*"; }
fail() {
    log "FAIL: $*"
    exit 1
}
alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
# the node advertises fake GPUs (slurm-up.sh) and the GPU rules get them: train on the CPU all the same
export DIFFUSION_STUDY_DEVICE=cpu

# ---------------------------------------------------------------- cluster up, down on exit
was_up=0
alive "$CI_DIR/slurmctld.pid" && alive "$CI_DIR/slurmd.pid" && was_up=1
TMP=$(mktemp -d /tmp/slurm-e2e.XXXXXX)
cleanup() {
    local rc=$?
    if [ -s "$TMP/run2.pid" ] && [ ! -s "$TMP/run2.rc" ]; then # run 2 still going: end it
        kill -KILL -- "-$(cat "$TMP/run2.pid")" 2>/dev/null || true
    fi
    if [ "$was_up" = 0 ]; then
        bash .ci/slurm-down.sh || true
    else
        log "cluster was already running before this test: leaving it up"
    fi
    if [ "${SLURM_E2E_KEEP:-0}" = 1 ] || [ "$rc" != 0 ]; then
        log "logs kept in $TMP"
    else
        rm -rf "$TMP"
    fi
    exit "$rc"
}
trap cleanup EXIT
bash .ci/slurm-up.sh

ctld_lines=$(wc -l <"$CI_DIR/slurmctld.log") # only this test's submissions count below

# ---------------------------------------------------------------- 2. (started first, in the background)
# A failing job must fail the run. A dataset file that is not HDF5: Snakemake takes it as given (it has
# no record of it), plans `train`, and the job fails inside SLURM when core.stages.train opens the file. It runs
# beside run 1 (its own results dir; Snakemake locks only the files a run touches) to save wall time.
BAD=$TMP/results-bad
mkdir -p "$BAD/data"
echo "not an HDF5 file" >"$BAD/data/shapes-tiny.h5"
log "run 2: train on a corrupt dataset file (must fail), in the background"
t2=$(date +%s)
(
    set +e
    # timeout leads its own process group: cleanup() can end it and snakemake together
    timeout 600 snakemake --profile profiles/slurm-ci "$BAD/tiny/models/unet-cfg/r0/train_log.csv" \
        --slurm-logdir "$TMP/slurm_logs_bad" --config results_dir="$BAD" >"$TMP/run2.log" 2>&1 &
    echo $! >"$TMP/run2.pid"
    wait $!
    echo $? >"$TMP/run2.rc"
    echo $(($(date +%s) - t2)) >"$TMP/run2.seconds"
) &
run2_pid=$!

# ---------------------------------------------------------------- 1. the tiny preset through SLURM
RESULTS=$TMP/results
TARGET=$RESULTS/tiny/report/table.md
log "run 1: tiny preset -> $RESULTS"
t1=$(date +%s)
set +e
timeout 900 snakemake --profile profiles/slurm-ci "$TARGET" --slurm-logdir "$TMP/slurm_logs" \
    --config results_dir="$RESULTS" >"$TMP/run1.log" 2>&1
rc=$?
set -e
t_run1=$(($(date +%s) - t1))
[ "$rc" = 0 ] || {
    tail -n 60 "$TMP/run1.log"
    fail "snakemake exited $rc on the tiny preset (log: $TMP/run1.log)"
}
[ -s "$TARGET" ] || fail "$TARGET missing"

# the report lists every experiment of the preset (names from config.yaml)
experiments=$(python3 -c 'import yaml; print(*yaml.safe_load(open("config.yaml"))["studies"]["tiny"]["experiments"])')
for e in $experiments; do
    grep -q "^| $e |" "$TARGET" || fail "report $TARGET has no row for experiment '$e'"
done

# every non-local job was submitted with sbatch, ran and completed
mapfile -t jobids < <(sed -n 's/.*has been submitted with SLURM jobid \([0-9][0-9]*\).*/\1/p' "$TMP/run1.log")
n_jobs=${#jobids[@]}
n_remote=$(grep -cE '^(rule|checkpoint) ' "$TMP/run1.log" || true) # train is a checkpoint rule
n_local=$(grep -c '^localrule ' "$TMP/run1.log" || true)
[ "$n_jobs" -gt 0 ] || fail "no SLURM job ids in $TMP/run1.log"
[ "$n_jobs" = "$n_remote" ] || fail "$n_remote non-local jobs but $n_jobs SLURM submissions"
for id in "${jobids[@]}"; do
    # grep reads all of tail's output (no -q): with pipefail, an early exit would fail tail with SIGPIPE
    tail -n +"$((ctld_lines + 1))" "$CI_DIR/slurmctld.log" | grep "_slurm_rpc_submit_batch_job: JobId=$id " >/dev/null ||
        fail "slurmctld log has no submission of job $id"
    state=$(scontrol show job "$id" 2>/dev/null | sed -n 's/.*JobState=\([A-Z_]*\).*/\1/p')
    [ "$state" = COMPLETED ] || fail "SLURM job $id is '${state:-unknown}', not COMPLETED"
    [ -n "$(find "$TMP/slurm_logs" -name "$id.log" -print -quit)" ] || fail "no sbatch log $id.log"
done
log "run 1 ok: ${t_run1}s, $n_jobs SLURM jobs (ids ${jobids[*]}) + $n_local local; report lists: $experiments"

# ---------------------------------------------------------------- 2. the failing run
wait "$run2_pid" || true
rc=$(cat "$TMP/run2.rc")
t_run2=$(cat "$TMP/run2.seconds")
[ "$rc" = 124 ] && fail "run 2 hung: snakemake did not notice the failed job in 600 s"
[ "$rc" != 0 ] || fail "snakemake exited 0 although the train job must fail (log: $TMP/run2.log)"
bad_id=$(sed -n 's/.*has been submitted with SLURM jobid \([0-9][0-9]*\).*/\1/p' "$TMP/run2.log" | head -n1)
[ -n "$bad_id" ] || fail "run 2 failed before submitting anything (expected a failure at run time)"
grep -Eq "Error in (rule|checkpoint) train" "$TMP/run2.log" || fail "run 2 log does not name the failed rule train"
# the failure names the job's sbatch log (where SLURM's own messages are), not only "check log file(s)"
grep -Eq "slurm_logs_bad/rule_train/.*[0-9]+\.log" "$TMP/run2.log" || fail "run 2 log does not name the sbatch log"
grep -q "Traceback\|Error" "$TMP/run2.log" || fail "run 2 does not show the failed job's log"
state=$(scontrol show job "$bad_id" 2>/dev/null | sed -n 's/.*JobState=\([A-Z_]*\).*/\1/p')
[ "$state" = FAILED ] || fail "SLURM job $bad_id is '${state:-unknown}', not FAILED"
# core.status joins SLURM's view: the failed train job shows as failed with its SLURM id and state
python3 -m core.status tiny --slurm --slurm-logdir "$TMP/slurm_logs_bad" --no-write --config results_dir="$BAD" \
    >"$TMP/status2.txt" 2>&1 || fail "core.status --slurm exited non-zero ($TMP/status2.txt)"
grep -Eq "^ +train +tiny/unet-cfg/r0 +failed .*slurm $bad_id FAILED" "$TMP/status2.txt" ||
    fail "core.status --slurm does not show train job $bad_id FAILED: $(cat "$TMP/status2.txt")"
log "run 2 ok: snakemake exited $rc after ${t_run2}s; SLURM job $bad_id FAILED"

log "PASS in $(($(date +%s) - t_start))s (cluster start, runs, checks): tiny preset ${t_run1}s with" \
    "$n_jobs SLURM jobs + $n_local local; failing run (alongside) ${t_run2}s with 1 SLURM job"
