#!/usr/bin/env bash
# The GPU path of the SLURM executor on the CI cluster, with fake GPUs (docs/slurm.md, "How CI tests it"):
#   1. start the cluster with 2 fake GPUs (.ci/slurm-up.sh; needs root),
#   2. train tiny's unet-cfg with `resources: {gpus: 2, nodes: 1}` through profiles/slurm-ci, --retries 1:
#      sbatch -> plugin -> core.launch -> torchrun with 2 gloo processes on the CPU; check the job's request
#      (scontrol: TresPerNode=gres:gpu:2, 1 node, 2 CPUs, no --gpus/--ntasks-per-gpu),
#   3. while it trains: `scancel --signal=USR1 <job>` (the job's steps, as --signal=USR1@120 does): every rank
#      checkpoints, the attempt fails (75), Snakemake's retry resumes from the checkpoint and finishes,
#   4. the same model trained without interruption (2 ranks under torchrun, no SLURM): the published final
#      checkpoints must be equal tensor for tensor,
#   5. two nodes: the cluster restarted as two slurmd on this host (SLURM_CI_NODES=2, 1 fake GPU each), the same
#      model with `resources: {gpus: 1, nodes: 2}`: core.launch -> srun --overlap -> a node agent per node ->
#      torchrun --nnodes 2 (c10d rendezvous at the first node's address) -> 2 gloo processes; the job must ask
#      for 2 nodes with gres gpu:1 each; SIGUSR1 as in 3.; the retry resumes and the final weights equal the
#      one-node 2-GPU run's (same global batch, same 2 ranks),
#   6. go back to the one-node cluster, or stop the daemons this script started (trap); print the wall time.
# Jobs train on the CPU although SLURM gives them GPUs: DIFFUSION_STUDY_DEVICE=cpu (jobs inherit it, --export=ALL).
# Environment: SLURM_CI_DIR as for slurm-up.sh; SLURM_E2E_KEEP=1 keeps the temporary directory.
set -euo pipefail
cd "$(dirname "$0")/.."

CI_DIR=${SLURM_CI_DIR:-/tmp/slurm-ci}
STEPS=${SLURM_GPU_E2E_STEPS:-200}
t_start=$(date +%s)
log() { printf '[slurm-gpu-e2e] %s\n' "$*"; }
fail() {
    log "FAIL: $*"
    exit 1
}
alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
export DIFFUSION_STUDY_DEVICE=cpu OMP_NUM_THREADS=1

was_up=0
two_nodes=0
alive "$CI_DIR/slurmctld.pid" && alive "$CI_DIR/slurmd.pid" && was_up=1
TMP=$(mktemp -d /tmp/slurm-gpu-e2e.XXXXXX)
cleanup() {
    local rc=$?
    [ -s "$TMP/run.pid" ] && kill -KILL -- "-$(cat "$TMP/run.pid")" 2>/dev/null || true
    if [ "$was_up" = 1 ] && [ "$two_nodes" = 1 ]; then
        log "back to the one-node cluster"
        bash .ci/slurm-up.sh >"$TMP/up-again.log" 2>&1 || { cat "$TMP/up-again.log"; rc=1; }
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
SLURM_CI_GPUS=2 bash .ci/slurm-up.sh
[ "$(scontrol show node | sed -n 's/.*Gres=\(gpu:[0-9]*\).*/\1/p' | head -n1)" = gpu:2 ] ||
    fail "the CI node does not advertise 2 GPUs"

# tiny's unet-cfg on 2 GPUs of 1 node, long enough to be signalled while it trains
cat >"$TMP/overlay.yaml" <<EOF
studies:
  tiny:
    models:
      unet-cfg:
        resources: {gpus: 2, nodes: 1}
        train: {steps: $STEPS, checkpoint_every: $STEPS, log_every: 20}
EOF
CONFIG=(--configfile config.yaml "$TMP/overlay.yaml")
model=tiny/models/unet-cfg/r0
final=$(printf 'step%07d.pt' "$STEPS")

# ---------------------------------------------------------------- 2./3. through SLURM, signalled, retried
RES=$TMP/results
log "run 1: $model on gres gpu:2 through profiles/slurm-ci (--retries 1), SIGUSR1 while it trains"
t1=$(date +%s)
(
    set +e
    timeout 600 snakemake --profile profiles/slurm-ci --retries 1 "${CONFIG[@]}" --config results_dir="$RES" \
        --slurm-logdir "$TMP/slurm_logs" -- "$RES/$model/train_log.csv" >"$TMP/run.log" 2>&1 &
    echo $! >"$TMP/run.pid"
    wait $!
    echo $? >"$TMP/run.rc"
) &
run_pid=$!

# the running train job (its --comment starts with rule_train) and its live log
job=""
live=$RES/$model/state/train_log.csv
deadline=$((SECONDS + 300))
while :; do
    [ $SECONDS -lt $deadline ] || fail "no train job trained 20 steps within 300 s (log: $TMP/run.log)"
    [ -s "$TMP/run.rc" ] && fail "snakemake ended before the signal (log: $TMP/run.log)"
    job=$(squeue -h -t RUNNING -o '%i %k' | awk '$2 ~ /^rule_train/ {print $1; exit}')
    [ -n "$job" ] && [ -s "$live" ] && [ "$(wc -l <"$live")" -gt 20 ] && break
    sleep 1
done
info=$(scontrol show job "$job")
echo "$info" >"$TMP/job-$job.txt"
grep -q 'TresPerNode=gres:gpu:2' <<<"$info" || fail "job $job does not ask for gres gpu:2 per node: $info"
grep -q 'NumNodes=1 ' <<<"$info" || fail "job $job is not on 1 node"
grep -q 'NumCPUs=2 ' <<<"$info" || fail "job $job does not have 2 CPUs (1 thread x 2 GPUs)"
grep -Eq 'TresPerJob=.*gpu|NumTasks=[2-9]' <<<"$info" && fail "job $job has a per-job --gpus or extra tasks: $info"
at=$(($(wc -l <"$live") - 1))
log "job $job: $(grep -o 'TRES=[^ ]*' <<<"$info") $(grep -o 'TresPerNode=[^ ]*' <<<"$info"); SIGUSR1 at ~step $at"
scancel --signal=USR1 "$job"
# Snakemake empties a failed job's log before the retry: keep the last copy taken while the attempt still ran
stage_log=$RES/logs/train/tiny/unet-cfg/r0.log
while squeue -h -j "$job" -t RUNNING,COMPLETING -o %i 2>/dev/null | grep -q .; do
    cp "$stage_log" "$TMP/attempt1.log"
    sleep 0.5
done
cp "$stage_log" "$TMP/attempt1.tail.log" # (may already be the retry's)
[ "$(wc -c <"$TMP/attempt1.tail.log")" -gt "$(wc -c <"$TMP/attempt1.log")" ] &&
    ! grep -q "resuming from" "$TMP/attempt1.tail.log" && cp "$TMP/attempt1.tail.log" "$TMP/attempt1.log"

wait "$run_pid" || true
rc=$(cat "$TMP/run.rc")
t_run=$(($(date +%s) - t1))
[ "$rc" = 0 ] || {
    tail -n 60 "$TMP/run.log"
    fail "snakemake exited $rc (log: $TMP/run.log)"
}
for r in 0 1; do
    grep -q "\[train\] rank $r: signal" "$TMP/attempt1.log" ||
        fail "rank $r did not checkpoint on the signal ($TMP/attempt1.log)"
done
# The supervisor's own "exit 75" line appears only if it outlives the step's task (the inner Snakemake, which
# SLURM's SIGUSR1 ends at once); what counts is the checkpoint of every rank and the resumed retry.
launch_note="supervisor's exit-75 line not seen (the step ended first)"
grep -q "exit 75" "$TMP/attempt1.log" && launch_note="supervisor reported exit 75"
resumed=$(sed -n 's/.*resuming from .* at step \([0-9]*\).*/\1/p' "$stage_log" | head -n1)
[ -n "$resumed" ] || fail "the retry did not resume from the checkpoint ($stage_log)"
mapfile -t jobids < <(sed -n 's/.*has been submitted with SLURM jobid \([0-9][0-9]*\).*/\1/p' "$TMP/run.log")
state1=$(scontrol show job "$job" | sed -n 's/.*JobState=\([A-Z_]*\).*/\1/p')
[ "$state1" = FAILED ] || fail "the signalled job $job is '$state1', not FAILED"
retry=${jobids[-1]}
[ "$retry" != "$job" ] || fail "no retry was submitted"
state2=$(scontrol show job "$retry" | sed -n 's/.*JobState=\([A-Z_]*\).*/\1/p')
[ "$state2" = COMPLETED ] || fail "the retry $retry is '$state2', not COMPLETED"
log "run 1 ok: ${t_run}s; job $job: both ranks checkpointed at the signal ($launch_note), job FAILED;" \
    "retry $retry resumed at step $resumed and COMPLETED"

# ---------------------------------------------------------------- 4. the uninterrupted 2-rank run
REF=$TMP/reference
log "run 2: the same model uninterrupted (2 ranks under torchrun, local executor)"
t2=$(date +%s)
timeout 600 snakemake --cores 2 "${CONFIG[@]}" --config results_dir="$REF" -- "$REF/$model/train_log.csv" \
    >"$TMP/ref.log" 2>&1 || {
    tail -n 40 "$TMP/ref.log"
    fail "the uninterrupted run failed (log: $TMP/ref.log)"
}
t_ref=$(($(date +%s) - t2))
python3 - "$RES/$model/ckpt/$final" "$REF/$model/ckpt/$final" <<'EOF' || fail "the resumed run's weights differ from the uninterrupted run's"
import sys
import torch
a, b = (torch.load(p, map_location="cpu", weights_only=False) for p in sys.argv[1:])
assert a["meta"]["world_size"] == b["meta"]["world_size"] == 2, "not 2-rank runs"
for part in ("model", "ema"):
    x, y = (c[part]["model"] if part == "ema" else c[part] for c in (a, b))
    assert x.keys() == y.keys()
    bad = [k for k in x if not torch.equal(x[k], y[k])]
    assert not bad, f"{part}: {len(bad)} tensors differ, e.g. {bad[:3]}"
print(f"[slurm-gpu-e2e] final checkpoints equal: {len(a['model'])} model and EMA tensors, step {a['step']}")
EOF
log "run 2 ok: ${t_ref}s"

# ---------------------------------------------------------------- 5. two nodes
log "run 3: two nodes (two slurmd on this host), $model with resources {gpus: 1, nodes: 2}"
t3=$(date +%s)
two_nodes=1
SLURM_CI_NODES=2 SLURM_CI_GPUS=1 bash .ci/slurm-up.sh >"$TMP/up-two-nodes.log" 2>&1 || {
    cat "$TMP/up-two-nodes.log"
    fail "the two-node cluster did not start"
}
printf '%s\n' "studies:" "  tiny:" "    models:" "      unet-cfg:" "        resources: {gpus: 1, nodes: 2}" \
    "        train: {steps: $STEPS, checkpoint_every: $STEPS, log_every: 20}" >"$TMP/overlay-2nodes.yaml"
RES2=$TMP/results-2nodes
(
    set +e
    timeout 480 snakemake --profile profiles/slurm-ci --retries 1 --configfile config.yaml "$TMP/overlay-2nodes.yaml" \
        --config results_dir="$RES2" --slurm-logdir "$TMP/slurm_logs_2nodes" -- "$RES2/$model/train_log.csv" \
        >"$TMP/run3.log" 2>&1 &
    echo $! >"$TMP/run.pid"
    wait $!
    echo $? >"$TMP/run3.rc"
) &
run_pid=$!
live=$RES2/$model/state/train_log.csv
deadline=$((SECONDS + 300))
while :; do
    [ $SECONDS -lt $deadline ] || fail "no two-node train job trained 20 steps within 300 s (log: $TMP/run3.log)"
    [ -s "$TMP/run3.rc" ] && fail "snakemake ended before the signal (log: $TMP/run3.log)"
    job3=$(squeue -h -t RUNNING -o '%i %k' | awk '$2 ~ /^rule_train/ {print $1; exit}')
    [ -n "$job3" ] && [ -s "$live" ] && [ "$(wc -l <"$live")" -gt 20 ] && break
    sleep 1
done
info=$(scontrol show job "$job3")
grep -q 'NumNodes=2 ' <<<"$info" || fail "job $job3 is not on 2 nodes: $info"
grep -q 'TresPerNode=gres:gpu:1' <<<"$info" || fail "job $job3 does not ask for gres gpu:1 per node: $info"
scancel --signal=USR1 "$job3"
stage_log=$RES2/logs/train/tiny/unet-cfg/r0.log
while squeue -h -j "$job3" -t RUNNING,COMPLETING -o %i 2>/dev/null | grep -q .; do
    cp "$stage_log" "$TMP/attempt1-2nodes.log"
    sleep 0.5
done
wait "$run_pid" || true
[ "$(cat "$TMP/run3.rc")" = 0 ] || {
    tail -n 40 "$TMP/run3.log"
    tail -n 30 "$stage_log" || true
    fail "the two-node run failed (log: $TMP/run3.log)"
}
for r in 0 1; do
    grep -q "\[train\] rank $r: signal" "$TMP/attempt1-2nodes.log" ||
        fail "rank $r did not checkpoint on the signal ($TMP/attempt1-2nodes.log)"
done
resumed2=$(sed -n 's/.*resuming from .* at step \([0-9]*\).*/\1/p' "$stage_log" | head -n1)
[ -n "$resumed2" ] || fail "the two-node retry did not resume from the checkpoint ($stage_log)"
grep -q "over 2 process(es)" "$stage_log" || fail "the two-node run did not train on 2 processes"
retry3=$(sed -n 's/.*has been submitted with SLURM jobid \([0-9][0-9]*\) (log: .*rule_train.*/\1/p' "$TMP/run3.log" | tail -n1)
grep -q 'JobState=COMPLETED' <<<"$(scontrol show job "$retry3")" || fail "the two-node retry $retry3 did not complete"
python3 - "$RES2/$model/ckpt/$final" "$RES/$model/ckpt/$final" <<'PY' || fail "the two-node run's weights differ from the one-node run's"
import sys
import torch
a, b = (torch.load(p, map_location="cpu", weights_only=False) for p in sys.argv[1:])
assert a["meta"]["world_size"] == 2, a["meta"]
for part in ("model", "ema"):
    x, y = (c[part]["model"] if part == "ema" else c[part] for c in (a, b))
    bad = [k for k in x if not torch.equal(x[k], y[k])]
    assert not bad, f"{part}: {len(bad)} tensors differ, e.g. {bad[:3]}"
print("[slurm-gpu-e2e] two-node final checkpoint equals the one-node 2-GPU run's")
PY
t_two=$(($(date +%s) - t3))
log "run 3 ok: ${t_two}s; job $job3 on $(grep -o ' NodeList=[^ ]*' <<<"$info" | head -n1)," \
    "$(grep -o 'TresPerNode=[^ ]*' <<<"$info"); both ranks checkpointed on SIGUSR1, retry $retry3 resumed at step" \
    "$resumed2 and COMPLETED"

log "PASS in $(($(date +%s) - t_start))s (cluster start, runs, checks): SLURM run with SIGUSR1 and retry ${t_run}s," \
    "uninterrupted run ${t_ref}s, two nodes ${t_two}s"
