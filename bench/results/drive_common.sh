# What the session drivers (learning_s*/ and speed_s*/ drive.sh) share, sourced by them on the GPU machine: the
# working tree copied to /tmp/job, session 5's prior and PPO it. 120 (each where carried) unpacked into
# $LEARN_DIR=/tmp/learn, a timestamped log (/tmp/out/driver.log), `tp` (bench/throughput.py), `evalv`
# (eval_generalization.py on the test seeds), `rl4vla_others`, `pack_run`, `arm`, `pack_prior`, `prior_cells`,
# `unpack_prior_same`, `ptx_demos`, `sigterm_after`, `stop_and_wait`, `unstash`, `state_run` and `twin_run`.
set -u
cd /tmp/job
export LEARN_DIR=/tmp/learn PYTHONUNBUFFERED=1
mkdir -p /tmp/out /tmp/learn
[ -f .learn/s5/prior.tar.xz ] && tar -C /tmp/learn -xJf .learn/s5/prior.tar.xz  # session 5's prior, where carried
[ -f .learn/s5/resume.tar.xz ] && tar -C /tmp/learn -xJf .learn/s5/resume.tar.xz  # session 5's PPO, where carried
start=$(date +%s)
log() { echo "$* t=$(( $(date +%s) - start ))s $(date +%T)" >> /tmp/out/driver.log; }
tp() {  # name, then bench/throughput.py flags -> /tmp/out/<name>.json and .log
  local name=$1; shift
  python3 bench/throughput.py "$@" --out "/tmp/out/$name.json" > "/tmp/out/$name.log" 2>&1
  log "$name rc=$?"
}
evalv() {  # out-dir episodes variants... -- checkpoints... [extra flags in $EXTRA, envs in $EVAL_ENVS]
  local out=$1 ep=$2; shift 2; local variants=(); while [ "$1" != -- ]; do variants+=("$1"); shift; done; shift
  python3 eval_generalization.py --checkpoints "$@" --unnorm-key sft_tabletop --variants "${variants[@]}" \
    --episodes "$ep" --num-envs "${EVAL_ENVS:-20}" --videos-per-variant 0 --output-dir "/tmp/learn/$out" ${EXTRA:-}
}
rl4vla_others() {  # seconds checkpoints...: RL4VLA's 16 test variants other than `train` (openvla_envs.SUITES
  # ["rl4vla"]), 100 greedy episodes each, in four evaluation processes of $EVAL_ENVS env workers at once ->
  # /tmp/learn/eval_other_{0..3}; each process is cut after `seconds`: the (checkpoint, variant) cells finished by then
  # are kept (a file each, which a later call with the same directories does not re-run)
  local seconds=$1; shift
  local groups=("unseen_instructions unseen_table unseen_position multi_object_seen"
                "unseen_objects dynamic_texture_weak unseen_robot_init_pose multi_object_unseen"
                "unseen_receptacles dynamic_noise_weak object_reposition distractive_receptacle"
                "similar_to_training dynamic_texture_strong dynamic_noise_strong multi_receptacle_unseen")
  local i=0 g
  for g in "${groups[@]}"; do
    timeout "$seconds" bash -c "source bench/results/drive_common.sh; evalv eval_other_$i 100 $g -- $*" \
      > "/tmp/out/eval_other_$i.log" 2>&1 &
    i=$((i + 1))
  done
  wait
}
pack_run() {  # algo tag: pack the newest run of that tag and print its last checkpoint. The device hands back
  # files of at most 16 MiB: /tmp/out/run_<tag>_last.tar.xz holds the last checkpoint whole (optimizer, RNG,
  # --train-vision's towers: resumable) and the event files; run_<tag>_ckpts.tar.xz every checkpoint's adapter
  # and value head, evaluable, except for --train-vision runs (~5 MB of towers per checkpoint; an adapter without
  # them would load the prior's towers)
  local run; run=$(ls -d "$LEARN_DIR/$1/train__$1_$2__"*/ | tail -1); run=${run%/}
  local last; last=$(ls -d "$run"/checkpoints/iter_* | grep -E 'iter_[0-9]+$' | sort | tail -1)
  log "$1 $2 last=$last"
  local rel=${run#"$LEARN_DIR"/}
  (cd "$LEARN_DIR" && tar -cJf "/tmp/out/run_$2_last.tar.xz" "$rel"/events.* "${last#"$LEARN_DIR"/}")
  [ -f "$last/vision.safetensors" ] || (cd "$LEARN_DIR" && find "$rel"/checkpoints -type f ! -name optimizer.pt ! -name rng_states.pt ! -name vision.safetensors \
    | tar -cJf "/tmp/out/run_$2_ckpts.tar.xz" -T -)
  echo "$last"
}
arm() {  # gpu algo tag [extra RL flags]: one RL arm on one GPU ($ARM_ENVS envs (24), LoRA lr $ARM_LR, $ARM_ITERS
  # iterations (400) or the driver's SIGTERM), its run packed, then its last checkpoint evaluated on $EP test episodes
  # per cell, the cells in $ARM_EVALS (default all three; `none`: no evaluation): key (`train` greedy), t1 (`train`
  # sampled, T = 1), sib (the siblings greedy), plate (`unseen_target` alone, greedy), red (`red_cube` alone,
  # greedy) -> /tmp/out/eval_<tag>.tar.xz
  local gpu=$1 algo=$2 tag=$3 extra=${4:-} cells=${ARM_EVALS:-key t1 sib}
  export CUDA_VISIBLE_DEVICES=$gpu
  TAG=$tag ENVS=${ARM_ENVS:-24} LR=${ARM_LR:-1e-4} ITERS=${ARM_ITERS:-400} SAVE_EVERY=15 RL_ARGS="--eval-every 0 $extra" \
    bash bench/learning.sh "$algo" > "/tmp/out/${algo}_$tag.log" 2>&1; log "$algo $tag rc=$?"
  local last; last=$(pack_run "$algo" "$tag")
  local dirs=() c
  for c in $cells; do
    case $c in
      key) evalv "eval_key_$tag" "$EP" train -- "$last" > "/tmp/out/eval_key_$tag.log" 2>&1 & ;;
      t1) EXTRA="--temperature 1.0" evalv "eval_t1_$tag" "$EP" train -- "$last" > "/tmp/out/eval_t1_$tag.log" 2>&1 & ;;
      sib) evalv "eval_sib_$tag" "$EP" unseen_target red_cube -- "$last" > "/tmp/out/eval_sib_$tag.log" 2>&1 & ;;
      plate) evalv "eval_plate_$tag" "$EP" unseen_target -- "$last" > "/tmp/out/eval_plate_$tag.log" 2>&1 & ;;
      red) evalv "eval_red_$tag" "$EP" red_cube -- "$last" > "/tmp/out/eval_red_$tag.log" 2>&1 & ;;
      none) continue ;;
      *) log "unknown evaluation cell $c"; continue ;;
    esac
    dirs+=("eval_${c}_$tag")
  done
  wait; log "evals $tag done"
  [ ${#dirs[@]} -eq 0 ] || tar -C /tmp/learn -cJf "/tmp/out/eval_$tag.tar.xz" "${dirs[@]}"
}
ptx_demos() {  # PPO-ptx's demonstrations -> $LEARN_DIR/ptx_demos.npz: $DEMOS_PTX (64) per SFT variant ($PTX_VARIANTS,
  # default all three) on $DEMO_ENVS (32) workers, seeds from 1,000,000 and expert noise 0.1, as the prior's SFT data
  # (bench/learning.sh prior)
  python3 sft_openvla.py --demos-only --variants ${PTX_VARIANTS:-train red_cube unseen_target} --demos-per-task "${DEMOS_PTX:-64}" \
    --demo-seed 1000000 --expert-noise 0.1 --num-envs "${DEMO_ENVS:-32}" --demos-path "$LEARN_DIR/ptx_demos.npz" \
    > /tmp/out/demos.log 2>&1
  log "demos rc=$? $(grep -a '\[demos\] [0-9]* demos' /tmp/out/demos.log)"
}
sigterm_after() {  # seconds: SIGTERM the RL scripts that many seconds from now (a run saves and exits 0), in the
  # background; its pid is then in $! (kill it once the arms are done, so that it sends nothing)
  ( sleep "$1"; pkill -TERM -f "[p]po_openvla.py|[g]rpo_openvla.py|[r]einforce_openvla.py"; log "SIGTERM sent" ) &
}
stop_and_wait() {  # SIGTERM the RL scripts $STOP_S seconds from now, wait for every arm and its evaluations
  sigterm_after "$STOP_S"
  wait
}
pack_prior() {  # name: $LEARN_DIR/prior -> /tmp/out/<name>.tar.xz, with the SFT log and prior.json beside it
  cp "$LEARN_DIR/sft.log" /tmp/out/sft.log; cp "$LEARN_DIR/prior.json" /tmp/out/prior.json
  tar -C "$LEARN_DIR" -cJf "/tmp/out/$1.tar.xz" prior
  log "packed prior"
}
prior_cells() {  # the cells every arm is compared with, for $LEARN_DIR/prior: $EP greedy and $EP sampled (T = 1)
  # episodes of `train`, $EP greedy of each sibling, at once -> /tmp/out/eval_prior.tar.xz
  evalv eval_key_prior "$EP" train -- "$LEARN_DIR/prior" > /tmp/out/eval_key_prior.log 2>&1 &
  EXTRA="--temperature 1.0" evalv eval_t1_prior "$EP" train -- "$LEARN_DIR/prior" > /tmp/out/eval_t1_prior.log 2>&1 &
  evalv eval_sib_prior "$EP" unseen_target red_cube -- "$LEARN_DIR/prior" > /tmp/out/eval_sib_prior.log 2>&1 &
  wait
  log "prior evals done"
  tar -C /tmp/learn -cJf /tmp/out/eval_prior.tar.xz eval_key_prior eval_t1_prior eval_sib_prior
}
unpack_prior_same() {  # session 9's prior `same` (carried as .learn/s9/prior_same.tar.xz) -> $LEARN_DIR/prior
  mkdir -p "$LEARN_DIR"
  tar -C "$LEARN_DIR" -xJf .learn/s9/prior_same.tar.xz
}
unstash() {  # marker tarball...: the tarballs a driver's first call stashed in /tmp/stash, unpacked into
  # $LEARN_DIR=/tmp/learn_s13 (the pick prior's runs have --vla-path /tmp/learn_s13/prior); a missing one ends the
  # driver (exit 3, the marker /tmp/out/<marker> touched so that the poll stops)
  local marker=$1 t; shift
  for t in "$@"; do [ -f "/tmp/stash/$t" ] || { log "stash missing: $t"; touch "/tmp/out/$marker"; exit 3; }; done
  export LEARN_DIR=/tmp/learn_s13
  mkdir -p "$LEARN_DIR"
  for t in "$@"; do tar -C "$LEARN_DIR" -xJf "/tmp/stash/$t"; done
}
state_run() {  # [tag]: the unpacked PPO run directory of that arm tag (default `state`; the newest)
  local run; run=$(ls -d "$LEARN_DIR"/ppo/train__ppo_"${1:-state}"__*/ | tail -1); echo "${run%/}"
}
twin_run() {  # run tag: a copy of the `state` run directory `run` as arm `tag`'s (resumed from the same checkpoint and
  # RNG state, the twin draws the same env seeds at the same envs per update: a paired arm) -> its path
  local twin=${1/ppo_state__/ppo_$2__}
  cp -r "$1" "$twin" && echo "$twin"
}
