# What the session drivers (learning_s*/drive.sh) share, sourced by them on the GPU machine: the working tree
# copied to /tmp/job, session 5's prior and PPO it. 120 (each where carried) unpacked into $LEARN_DIR=/tmp/learn, a timestamped
# log (/tmp/out/driver.log) and `evalv`, eval_generalization.py on the test seeds.
set -u
cd /tmp/job
export LEARN_DIR=/tmp/learn PYTHONUNBUFFERED=1
mkdir -p /tmp/out /tmp/learn
[ -f .learn/s5/prior.tar.xz ] && tar -C /tmp/learn -xJf .learn/s5/prior.tar.xz  # session 5's prior, where carried
[ -f .learn/s5/resume.tar.xz ] && tar -C /tmp/learn -xJf .learn/s5/resume.tar.xz  # session 5's PPO, where carried
start=$(date +%s)
log() { echo "$* t=$(( $(date +%s) - start ))s $(date +%T)" >> /tmp/out/driver.log; }
evalv() {  # out-dir episodes variants... -- checkpoints... [extra flags in $EXTRA, envs in $EVAL_ENVS]
  local out=$1 ep=$2; shift 2; local variants=(); while [ "$1" != -- ]; do variants+=("$1"); shift; done; shift
  python3 eval_generalization.py --checkpoints "$@" --unnorm-key sft_tabletop --variants "${variants[@]}" \
    --episodes "$ep" --num-envs "${EVAL_ENVS:-20}" --videos-per-variant 0 --output-dir "/tmp/learn/$out" ${EXTRA:-}
}
pack_run() {  # algo tag: tar the newest run of that tag (optimizer kept: resumable) to /tmp/out/run_<tag>.tar.xz,
  # log and print its last checkpoint
  local run; run=$(ls -d "$LEARN_DIR/$1/train__$1_$2__"*/ | tail -1); run=${run%/}
  local last; last=$(ls -d "$run"/checkpoints/iter_* | grep -E 'iter_[0-9]+$' | sort | tail -1)
  log "$1 $2 last=$last"
  tar -C "$LEARN_DIR" -cJf "/tmp/out/run_$2.tar.xz" "${run#"$LEARN_DIR"/}"
  echo "$last"
}
