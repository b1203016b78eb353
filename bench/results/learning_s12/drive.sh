#!/usr/bin/env bash
# Issue 12, the runs after session 11, for one nvidia-h200-x2 machine (2 GPUs, 32 cores). Session 11 measured,
# from session 9's prior `same` (0.42 greedy / 0.44 sampled on test), 24 envs, sparse reward, LoRA lr 1e-4:
#   PPO with --train-vision (towers + projector at 5e-5), it. 164 (315 k env steps): train 0.615 greedy / 0.74
#     sampled (p = 1.4e-4 / 1.5e-9), but the siblings fell: plate 0.315 -> 0.03, red cube 0.30 -> 0.175;
#   PPO on the LM only, it. 314 (603 k): train 0.555 / 0.55 (p = 0.009 / 0.036), siblings 0.255 / 0.26 (n.s.).
# One arm per GPU:
#   GPU 0, tag vision1e4: the --train-vision run resumed (optimizer, RNG, towers) from it. 164: does `train`
#     reach the issue's 0.8 (rollout success plateaued near 0.75 over its last 70 iterations)?
#   GPU 1, tag $ARM1 (see below), from the prior:
#     ARM1=vision2e5 (default): PPO with --train-vision at 2e-5 instead of 5e-5. Session 11's tower rate lifted
#       `train` and made the policy go to the towel whatever the instruction (plate variant: cube left on the
#       towel in 28 of 40 CPU-evaluated episodes vs the prior's 13); the LM-only arm at KL 0.005 per iteration kept
#       the siblings, the lr-5e-4 one at 0.03-0.05 lost them. Does a smaller tower step keep the instruction while
#       still lifting `train` (a point on the trade-off between the two)?
#     ARM1=grpo_vision: GRPO (sparse, groups of 8) with --train-vision at 5e-5: the issue's second algorithm,
#       with the lever that moved PPO.
#     ARM1=grpo: GRPO on the LM only at lr 1e-4.
# Both stop by SIGTERM at $STOP_S seconds after they start; then each arm's last checkpoint: 200 greedy and 200
# sampled (T = 1) episodes of `train`, 200 greedy of each sibling (the prior's cells are session 9's and 10's).
# The working tree may carry 64 MiB: .device (52 MB) + the prior (7 MB) + the resumed run (13 MB) is more, so
# two calls, back to back (files under /tmp stay while the machine is warm):
#   call 1, carry [".device", ".learn/s9/prior_same.tar.xz"]:
#     for f in .device/gl/*.deb; do dpkg -x $f /; done; ldconfig; mkdir -p /tmp/site /tmp/carry &&
#     tar -xJf .device/site.tar.xz -C /tmp/site && cp .learn/s9/prior_same.tar.xz /tmp/carry/
#   call 2, carry [".learn/s11/run_vision1e4_last.tar.xz"]:
#     export PYTHONPATH=/tmp/site:/tmp/job PYTHONUNBUFFERED=1; mkdir -p /tmp/job/.learn/s9 /tmp/out &&
#     tar --exclude=./.device --exclude=./runs -cf - . | tar -C /tmp/job -xf - &&
#     cp /tmp/carry/prior_same.tar.xz /tmp/job/.learn/s9/ && cd /tmp/job &&
#     (setsid bash bench/results/learning_s12/drive.sh </dev/null >/tmp/drive.out 2>&1 &); sleep 540; cat /tmp/out/driver.log
#   then poll (sleep; cat /tmp/out/driver.log) until DONE, and copy /tmp/out/*.tar.xz and a tar of the logs to $OUT
#   before the machine's 30 minutes end (each file back <= 16 MiB: pack_run keeps the runs under it).
# CPU smoke run of this driver (2 cores, ~10 min): LEARN_SMOKE=1 EP=2 EVAL_ENVS=2 STOP_S=600, from a copy in /tmp/job.
source "$(dirname "$0")/../drive_common.sh"  # /tmp/job, log, evalv, pack_run, arm
STOP_S=${STOP_S:-1140}  # 19 min of training (~175 iterations per arm at ~6.5 s); ~6 min of evaluation follow
EP=${EP:-200}  # test episodes per evaluation
ARM1=${ARM1:-vision2e5}
VISION="--train-vision --vision-learning-rate 5e-5"  # session 11's rates (the resumed run needs the same)
export LEARN_DIR=/tmp/learn_same EVAL_ENVS=${EVAL_ENVS:-8}
mkdir -p "$LEARN_DIR"
tar -C "$LEARN_DIR" -xJf .learn/s9/prior_same.tar.xz                  # -> prior/
tar -C "$LEARN_DIR" -xJf .learn/s11/run_vision1e4_last.tar.xz         # -> ppo/train__ppo_vision1e4__1__*/ (it. 164)
log "start ARM1=$ARM1"
arm 0 ppo vision1e4 "$VISION --resume $(ls -d "$LEARN_DIR"/ppo/train__ppo_vision1e4__*/ | tail -1)" &
case $ARM1 in
  vision2e5) arm 1 ppo vision2e5 "--train-vision --vision-learning-rate 2e-5" & ;;
  grpo_vision) arm 1 grpo grpovis1e4 "$VISION" & ;;
  grpo) arm 1 grpo grpo1e4 & ;;
  *) log "unknown ARM1=$ARM1"; exit 2 ;;
esac
( sleep "$STOP_S"; pkill -TERM -f "[p]po_openvla.py|[g]rpo_openvla.py"; log "SIGTERM sent" ) &
wait
log DONE
