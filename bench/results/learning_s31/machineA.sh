#!/usr/bin/env bash
# Prepared in session 30 for the next device session: the controls of session 30's two nulls (BENCHMARKS.md section 4,
# "Session 30", item 3). From the same pick prior, at the same budget and recipe as learning_s30/machineA.sh (120
# iterations x 24 envs x 80 steps = 230 k env steps, `train` only, sparse reward, LoRA r16, --train-vision,
# --env-parts 2), one arm per machine ($ARM), then its last checkpoint on the three greedy test cells (200 episodes,
# seeds 10^7 + i) -> /tmp/out/run_<ARM>_last.tar.xz, eval_<ARM>.tar.xz:
#   ARM=grpo_g2        GRPO in groups of 2: 12 reset layouts per iteration where groups of 8 gave 3 (LoRA 1e-4,
#                      towers 1e-5). If the layouts were GRPO's brake, this arm moves the plate as PPO did.
#   ARM=reinforce_lr4  REINFORCE at 4x the rates (LoRA 4e-4, towers 4e-5): about as far per iteration as PPO's 16
#                      Adam steps moved its weights. If the step count was REINFORCE's brake, this arm moves.
# Each runs ~5 s per iteration alone on one H100 (learning.sh's micro-batches for the small model), ~10 min, then
# ~4 min of cells. Calls as learning_s30/machineA.sh's header (the site bundle in two parts), with
# `ARM=grpo_g2 setsid bash /tmp/job/bench/results/learning_s31/machineA.sh` in call (b).
# Smoke-run on the CPU in session 30 (LEARN_SMOKE=1 EP=2 EVAL_ENVS=2): both arms ran and packed; reinforce_lr4's
# checkpoint recorded learning_rate 4e-4, vision_learning_rate 4e-5, micro_batch_size 256, and its cells came back.
source "$(dirname "$0")/../drive_common.sh"  # /tmp/job, log, arm, evalv, pack_run, unstash
unstash machineA.done prior_pick.tar.xz
# EP and EVAL_ENVS can be shrunk for a smoke run
export ARM_EVALS="key plate red" ARM_ITERS=120 EVAL_ENVS=${EVAL_ENVS:-8} EP=${EP:-200}
rl="--train-vision --vision-learning-rate 1e-5 --env-parts 2"
case ${ARM:?set ARM=grpo_g2 or ARM=reinforce_lr4} in
  grpo_g2) algo=grpo; export GROUP=2 ;;
  reinforce_lr4) algo=reinforce; export ARM_LR=4e-4; rl="$rl --vision-learning-rate 4e-5" ;;  # the later flag wins
  *) log "unknown ARM=$ARM"; touch /tmp/out/machineA.done; exit 2 ;;
esac
log "$ARM ($algo) from $LEARN_DIR/prior, 120 iterations"
arm 0 "$algo" "$ARM" "$rl" & p_arm=$!
sigterm_after "${STOP_S:-1140}"; p_stop=$!
wait $p_arm; kill $p_stop 2>/dev/null
log DONE
touch /tmp/out/machineA.done
