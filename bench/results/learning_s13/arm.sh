#!/usr/bin/env bash
# Issue 12, session 13, machine 2 (one GPU: nvidia-h200 or nvidia-h100-x1): one PPO arm from session 13's prior
# (bench/results/learning_s13/prior.sh; carried as .learn/s13/prior_s13.tar.xz), 120 iterations (230 k env steps,
# the blog's budget), then its test cells and bench/demo_likelihood.py. Session 11 (from session 9's prior, now
# lost) measured that PPO with trainable towers (LoRA lr 1e-4, --train-vision at 5e-5, 24 envs, sparse reward)
# lifts `train` (0.42 -> 0.74 sampled) by sending the cube to the towel whatever the instruction says (plate 0.315
# -> 0.03); session 12 that PPO-ptx at coefficient 1 on all three SFT variants' demonstrations pins the whole
# policy (nothing lifted, nothing lost), and that RL's gain lies ~1.7 nats per action away from the expert on
# `train` while the tower arm's damage sits under the plate instruction (+2.9 nats). The arms ($ARM):
#   ptxplate (default): ptx coefficient 1 on the plate demonstrations only (--ptx-variants unseen_target): pin the
#     behaviour that broke and leave the towel instruction free for RL (red_cube's demonstrations would pin
#     `train`'s behaviour too: the colour hardly steers the policy, KL(red || green) ~0.05 nats);
#   ptx01: coefficient 0.1 on all three; towers: no ptx (session 11's arm, RL alone: the blog's claim).
# Session 13 ran ARM=towers: its new prior (0.29 greedy / 0.295 sampled on `train`, plate 0.08, red cube 0.005)
# fails `train` mostly by grasping (cube held in 0.66 of episodes, left on the plate in 0.09), not by choosing the
# receptacle, as session 9's did; RL alone on it asks whether a gain in grasping carries to the siblings, and a
# ptx arm's sibling cells would mix RL's transfer with the demonstrations' own behaviour cloning.
# Demonstrations first (64 per SFT variant, seeds from 1,000,000, expert noise 0.1: a subset of the prior's SFT
# data, so ptx adds no layout the prior did not see; ~3.5 min), then the arm, then its last checkpoint on 200
# greedy and 200 sampled (T = 1) episodes of `train` and 200 greedy of each sibling (-> /tmp/out/eval_<arm>.tar.xz),
# and the NLL of the demonstrations under the prior and the arm (-> /tmp/out/demo_likelihood.json).
# One call, carry [".device", ".learn/s13/prior_s13.tar.xz"]; the brief's prefix, then
#   (setsid bash bench/results/learning_s13/arm.sh </dev/null >/tmp/drive.out 2>&1 &); sleep 540; cat /tmp/out/driver.log
# and poll until DONE (~26 minutes held); copy /tmp/out/* to $OUT.
# Session 14 ran ARM=ptxplate from the prior remade with HOLD=3500 (0.545 on `train`, failing it by grasping):
# `train` flat, the plate up 0.24 -> 0.36. Its controls, side by side on an nvidia-h200-x2 (one arm per GPU):
#   ARM="towers bcplate": towers (RL alone: was the plate term what held `train`?) and bcplate, the plate term
#   without RL (--pg-coef 0: is the plate's gain the demonstrations' own?).
# ARM may list several arms: the i-th runs on GPU i (modulo the GPUs there are), all at once, and demo_likelihood
# compares them all. Session 15 ran ARM=towers on one nvidia-h200 and, when its training ended, bcplate by hand on
# the same GPU with this script's settings (BENCHMARKS.md section 4): RL alone lifted the plate (0.24 -> 0.38), the
# plate's demonstrations alone did not (0.315, n.s.) and cost `train` (0.43). Both arms on one 16-core machine at
# once would not finish in one 30-minute hold. Session 16 ran ARM=vlr1e5 (towers at 1e-5 instead of 5e-5) on one
# nvidia-h200: the grasps held and `train` rose 0.545 -> 0.62 (n.s.; BENCHMARKS.md section 4).
# Session 17 ran ARM=vlr1e5s2 LIKELIHOOD=0 (vlr1e5's second seed) from bench/results/learning_s17/drive.sh: `train`
# 0.535, the prior's level (seed 1: 0.62; BENCHMARKS.md section 4).
# Session 18 (BENCHMARKS.md section 4): vlr1e5s2 resumed to 460 k env steps stayed at the prior's level, with fewer
# cubes held and not placed, a change that hybrid checkpoints place in the LM's adapter; at its iteration 240 the
# gradient of `progress` advantages at GAE lambda 0 resolved (B_noise ~120 episodes) where PPO's sparse ones did not
# (>= 640). It proposed, side by side on an nvidia-h200-x2 (LIKELIHOOD=0 ARM="progress0 progress"): vlr1e5 with
# `--reward progress` (the grasp milestone and the distances give the grasp, this prior's main failure, credit of
# its own) at lambda 0 and at PPO's 0.95 (lmonly, the LoRA alone, is the arm after those).
# Session 19 ran ARM=progress0 LIKELIHOOD=0 alone on one nvidia-h200 (no nvidia-h200-x2 was lent): `train` down
# (0.40 sampled, p = 0.0026), the plate up (0.35, p = 0.021), grasps lost (never held 39 -> 74; BENCHMARKS.md section 4).
# Session 20 proposed ARM=state LIKELIHOOD=0: vlr1e5 with the critic on the simulator's state (ppo_openvla --critic
# state, deviation 9), so that GAE takes the later steps' noise out of each step's credit (states2: its second seed),
# and ran it on one nvidia-h100-x1 (6.4 s per iteration): the critic explained 0.75 of the return's variance (the
# head: 0.55), `train` 0.585 greedy / 0.615 sampled (n.s.; BENCHMARKS.md section 4).
# Session 21 ran ARM=state LIKELIHOOD=0 PRIOR_TAR=.learn/s21/prior_s21.tar.xz: the same arm from session 21's prior,
# whose towers SFT taught the scene's geometry (sft_openvla --state-aux-coef 1; bench/results/learning_s21/prior.sh).
# Session 23 ran ARM=state LIKELIHOOD=0 PRIOR_TAR=<the detour prior> (bench/results/learning_s23/machine1.sh's header):
# `train` 0.405 -> 0.64, plate 0.355 -> 0.255; its hybrids put the plate's loss in the towers (BENCHMARKS.md section
# 4). Next: ARM=lmstate from the same prior, remade (the `state` arm with the towers frozen: the blog's setting).
# Session 24 remade that prior (same recipe, a different draw: `train` 0.81, plate 0.74, red cube 0.90) and ran
# ARM=lmstate LIKELIHOOD=0 PRIOR_TAR=/tmp/stash/prior_det05.tar.xz from it (bench/results/learning_s24/machine2.sh):
# no cell moved (BENCHMARKS.md section 4). That prior is in git history: `git show
# 239dbb7:bench/results/learning_s24/artifacts/prior_det05.tar.xz > .learn/s24/prior_det05.tar.xz`; next from it:
# ARM=state (towers at 1e-5) beside lmstate, the controlled comparison (two arms: ARM="state lmstate" on an
# nvidia-h200-x2, or one machine each).
# CPU smoke run (2 cores): LEARN_SMOKE=1 EP=2 EVAL_ENVS=2 DEMOS_PTX=1 DEMO_ENVS=1, from a copy in /tmp/job.
source "$(dirname "$0")/../drive_common.sh"  # /tmp/job, log, evalv, pack_run, arm, ptx_demos, stop_and_wait
STOP_S=${STOP_S:-1100}  # a safety net on a machine held at most 30 minutes
EP=${EP:-200}  # test episodes per evaluation
ARM=${ARM:-ptxplate}
export LEARN_DIR=/tmp/learn_s13 EVAL_ENVS=${EVAL_ENVS:-8} ARM_ITERS=${ARM_ITERS:-120}
PRIOR_TAR=${PRIOR_TAR:-.learn/s13/prior_s13.tar.xz}  # session 14's prior; session 21's: .learn/s21/prior_s21.tar.xz
mkdir -p "$LEARN_DIR" && tar -C "$LEARN_DIR" -xJf "$PRIOR_TAR"  # -> $LEARN_DIR/prior
log start
TOWERS="--train-vision --vision-learning-rate 5e-5"
PTX="$TOWERS --ptx-demos $LEARN_DIR/ptx_demos.npz"
flags() {  # arm -> its PPO flags
  case $1 in
    ptxplate) echo "$PTX --ptx-coef 1 --ptx-variants unseen_target" ;;
    bcplate) echo "$PTX --ptx-coef 1 --ptx-variants unseen_target --pg-coef 0" ;;
    ptx01) echo "$PTX --ptx-coef 0.1" ;;
    towers) echo "$TOWERS" ;;  # the demonstrations then serve demo_likelihood below only
    vlr1e5) echo "--train-vision --vision-learning-rate 1e-5" ;;  # towers at a fifth of the rate (session 16)
    vlr1e5s2) echo "--train-vision --vision-learning-rate 1e-5 --seed 2" ;;  # its second seed (session 17)
    progress) echo "--train-vision --vision-learning-rate 1e-5 --reward progress" ;;  # per-step signal (session 18)
    progress0) echo "--train-vision --vision-learning-rate 1e-5 --reward progress --gae-lambda 0" ;;  # its TD(0) credit
    lmonly) echo "--seed 1" ;;  # LoRA on the LM alone, the blog's setting
    state) echo "--train-vision --vision-learning-rate 1e-5 --critic state --value-learning-rate 1e-3" ;;  # session 20
    states2) echo "--train-vision --vision-learning-rate 1e-5 --critic state --value-learning-rate 1e-3 --seed 2" ;;
    lmstate) echo "--critic state --value-learning-rate 1e-3" ;;  # `state` with the towers frozen (session 23's next)
    *) return 1 ;;
  esac
}
for a in $ARM; do flags "$a" > /dev/null || { log "unknown arm $a"; exit 2; }; done
LIKELIHOOD=${LIKELIHOOD:-1}  # 0: no demonstrations and no demo_likelihood (~4 GPU minutes saved; arms without ptx only)
[ "$LIKELIHOOD" = 1 ] && ptx_demos  # -> $LEARN_DIR/ptx_demos.npz
# the i-th arm on GPU i modulo the GPUs there are. bcplate's rollouts do not enter its policy's loss (--pg-coef 0,
# no entropy bonus, no KL stop: each of its 16 minibatches per iteration is one ptx step, as in ptxplate), so it
# runs 4 envs instead of 24, which leaves the CPU to the other arm, and is tested on `train` and the plate only
ngpu=$(nvidia-smi -L 2>/dev/null | wc -l); [ "$ngpu" -ge 1 ] || ngpu=1
i=0; for a in $ARM; do
  if [ "$a" = bcplate ]; then envs=4 cells="key plate"; else envs=24 cells="key t1 sib"; fi
  ARM_ENVS=$envs ARM_EVALS=$cells arm $((i % ngpu)) ppo "$a" "$(flags "$a")" & i=$((i + 1))
done
stop_and_wait
# how far each arm moved from the demonstrations, per variant, and the instruction's pull
[ "$LIKELIHOOD" = 1 ] || { log DONE; exit 0; }
runs=(); for a in $ARM; do runs+=("$(ls -d "$LEARN_DIR"/ppo/train__ppo_"$a"__*/ | tail -1)"); done
python3 bench/demo_likelihood.py --demos "$LEARN_DIR/ptx_demos.npz" --checkpoints "$LEARN_DIR/prior" \
  "${runs[@]}" --labels prior $ARM --out /tmp/out/demo_likelihood.json > /tmp/out/demo_likelihood.log 2>&1
log "demo_likelihood rc=$?"
log DONE
