#!/usr/bin/env bash
# The whole learning experiment on one machine that is held for a limited time (our GPU machine: 30 min):
# prior -> PPO until STOP_S seconds after the start, the prior's evaluation beside it (PPO on the tiny model
# is launch-bound: CPU and GPU have room) -> the PPO checkpoint's evaluation -> the table. Each result is
# packed into $OUT_DIR as soon as it exists, so a machine taken away early still leaves the finished parts.
#   STOP_S=1200 OUT_DIR=/tmp/out bash bench/learning_all.sh     # then copy $OUT_DIR/*.tar.xz home
# Budget on an H100 (16 cores), measured in session 5: prior ~15 min (1,200 demos 4.5 min, SFT to 3,500-4,500
# steps with its evaluations), PPO ~8 s per iteration of 24 x 80 steps (~230 SPS with the evaluation beside it).
# EP_KEY / EP_SIB: test episodes on train and on the siblings (unseen_target, red_cube). REUSE_PRIOR=1 skips the
# prior stage when $LEARN_DIR/prior exists (e.g. unpacked from an earlier machine's prior.tar.xz).
set -u
cd "$(dirname "$0")/.."
export LEARN_DIR=${LEARN_DIR:-runs/learning} PYTHONUNBUFFERED=1
OUT_DIR=${OUT_DIR:-$LEARN_DIR/out}
mkdir -p "$OUT_DIR" "$LEARN_DIR"
start=$(date +%s)
log() { echo "$* t=$(( $(date +%s) - start ))s $(date +%T)" | tee -a "$OUT_DIR/driver.log"; }
pack() { local name=$1; shift; tar -C "$LEARN_DIR" --exclude='*.mp4' -cJf "$OUT_DIR/$name.tar.xz" "$@"; }
evalv() {  # out-dir episodes variants... -- checkpoints...: greedy success on the test seeds
  local out=$1 ep=$2; shift 2; local variants=(); while [ "$1" != -- ]; do variants+=("$1"); shift; done; shift
  python3 eval_generalization.py --checkpoints "$@" --unnorm-key sft_tabletop --variants "${variants[@]}" \
    --episodes "$ep" --num-envs "${EVAL_ENVS:-20}" --videos-per-variant 1 --output-dir "$LEARN_DIR/$out"
}
log "start"
if [ "${REUSE_PRIOR:-0}" = 1 ] && [ -d "$LEARN_DIR/prior" ]; then  # a prior carried over from an earlier machine
  log "prior reused: $LEARN_DIR/prior"
else
  SFT_STEPS=${SFT_STEPS:-4500} bash bench/learning.sh prior > "$OUT_DIR/prior.log" 2>&1
  log "prior rc=$?"
fi
pack prior prior prior.json sft.log
( evalv eval_key "${EP_KEY:-200}" train -- "$LEARN_DIR/prior" > "$OUT_DIR/eval_prior.log" 2>&1
  evalv eval_sib "${EP_SIB:-200}" unseen_target red_cube -- "$LEARN_DIR/prior" >> "$OUT_DIR/eval_prior.log" 2>&1
  log "prior eval rc=$?" ) &
evalpid=$!
left=$(( ${STOP_S:-1200} - ($(date +%s) - start) ))
log "ppo for ${left}s"
( sleep "$left"; pkill -TERM -f "ppo_openvla.py --vla-path $LEARN_DIR/prior" ) &
watchdog=$!
ENVS=${ENVS:-24} SAVE_EVERY=5 bash bench/learning.sh ppo > "$OUT_DIR/ppo.log" 2>&1
log "ppo rc=$?"
kill $watchdog 2>/dev/null
run=$(ls -d "$LEARN_DIR"/ppo/*/ | tail -1)
last=$(ls -d "${run}checkpoints"/iter_* | grep -v '\.tmp$' | tail -1)
pack ppo_run "${run#"$LEARN_DIR"/}"
log "ppo saved $last"
evalv eval_key "${EP_KEY:-200}" train -- "$last" > "$OUT_DIR/eval_ppo.log" 2>&1
evalv eval_sib "${EP_SIB:-200}" unseen_target red_cube -- "$last" >> "$OUT_DIR/eval_ppo.log" 2>&1
log "ppo eval rc=$?"
wait $evalpid
for d in "eval_key ${EP_KEY:-200} train" "eval_sib ${EP_SIB:-200} unseen_target red_cube"; do  # every cell done: reports
  evalv $d -- "$LEARN_DIR/prior" "$last" >> "$OUT_DIR/eval_report.log" 2>&1
done
python3 bench/learning_table.py --evals "$LEARN_DIR/eval_key" "$LEARN_DIR/eval_sib" --out "$LEARN_DIR/learning.json"
pack eval eval_key eval_sib learning.json learning.md
log "DONE"
