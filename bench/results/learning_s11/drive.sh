#!/usr/bin/env bash
# Issue 12, the runs after session 10, for one nvidia-h200-x2 machine (2 GPUs, 32 cores). Session 10 measured
# PPO from session 9's prior `same` (0.42 greedy / 0.44 sampled on test): at LoRA lr 5e-4 it held `train` and
# forgot the untrained siblings (plate 0.315 -> 0.115, red cube 0.30 -> 0.045); at lr 1e-4 it climbed slowly
# (rollout success 0.47 -> 0.50 over 144 iterations; test 0.495 / 0.505, p = 0.16 / 0.23) and kept them.
# One arm per GPU:
#   GPU 0, tag lr1e4: that lr-1e-4 run resumed (optimizer and RNG state) from it. 144: does the slope hold, and
#     where is it after ~300 iterations (~580 k env steps, 2.5x the blog's budget)?
#   GPU 1, tag $ARM1 (see below): from the same prior, at the same lr 1e-4.
#     ARM1=grpo: GRPO (sparse, groups of 8), the issue's second algorithm at the budget, at the rate PPO needs;
#       sessions 7's lr-5e-4 GRPO walked away from its prior.
#     ARM1=vision: PPO with --train-vision (towers and projector, full fine-tuning at $VISION_LR): issue 12's
#       cause 3. The default: bench/gradient_noise.py --vision resolved the towers' gradient on one of two
#       96-episode samples and the LoRA's on neither (BENCHMARKS.md section 4, session 10); the arm decides.
# Both stop by SIGTERM at $STOP_S seconds after they start; then each arm's last checkpoint: 200 greedy and 200
# sampled (T = 1) episodes of `train`, 200 greedy of each sibling (the prior's cells are session 9's and 10's).
# carry: [".device", ".learn/s9/prior_same.tar.xz", ".learn/s10/run_lr1e4_last.tar.xz"] (~60 MB; the run tar holds
# only it. 144 and the events file)
# On the device (the brief's prefix, then):
#   (setsid bash bench/results/learning_s11/drive.sh </dev/null >/tmp/drive.out 2>&1 &)   # then poll
#   tail /tmp/out/driver.log; copy /tmp/out/* to $OUT before the machine's 30 minutes end
source "$(dirname "$0")/../drive_common.sh"  # /tmp/job, log, evalv, pack_run, arm
STOP_S=${STOP_S:-1140}  # 19 min of training (~175 iterations per arm at ~6.5 s); ~6 min of evaluation follow
EP=${EP:-200}  # test episodes per evaluation
ARM1=${ARM1:-vision} VISION_LR=${VISION_LR:-5e-5}
export LEARN_DIR=/tmp/learn_same EVAL_ENVS=${EVAL_ENVS:-8}
mkdir -p "$LEARN_DIR"
tar -C "$LEARN_DIR" -xJf .learn/s9/prior_same.tar.xz        # -> prior/
tar -C "$LEARN_DIR" -xJf .learn/s10/run_lr1e4_last.tar.xz   # -> ppo/train__ppo_lr1e4__1__*/ (checkpoint 144)
log "start ARM1=$ARM1"
arm 0 ppo lr1e4 "--resume $(ls -d "$LEARN_DIR"/ppo/train__ppo_lr1e4__*/ | tail -1)" &
case $ARM1 in
  grpo) arm 1 grpo grpo1e4 & ;;
  vision) arm 1 ppo vision1e4 "--train-vision --vision-learning-rate $VISION_LR" & ;;
  *) log "unknown ARM1=$ARM1"; exit 2 ;;
esac
( sleep "$STOP_S"; pkill -TERM -f "[p]po_openvla.py|[g]rpo_openvla.py"; log "SIGTERM sent" ) &
wait
log DONE
