#!/usr/bin/env bash
# Session 30, after machineA.sh's two arms: each arm's last checkpoint (iteration 120, 230 k env steps) on `train`
# sampled at T = 1, 200 episodes, seeds 10^7 + i, as the PPO run's `ppo_it120@T1` cell: REINFORCE's rollouts rose
# 0.31 -> 0.42 (quarter means) while its greedy cell did not move, so which policy did RL change?
# Calls back to back: (a) carry [".learn/s25/prior_pick.tar.xz", ".device/split/site.part.aa"]: copy both to
# /tmp/stash; (b) carry [".device/split/site.part.ab", ".device/gl", ".learn/s30/grpo/run_grpo_last.tar.xz",
# ".learn/s30/reinforce/run_reinforce_last.tar.xz"]: the prefix, then cp -r . /tmp/job && bash this file (~4 min).
source "$(dirname "$0")/../drive_common.sh"
unstash machineB.done prior_pick.tar.xz
for algo in grpo reinforce; do tar -C "$LEARN_DIR" -xJf ".learn/s30/$algo/run_${algo}_last.tar.xz"; done
for algo in grpo reinforce; do
  last=$(ls -d "$LEARN_DIR/$algo"/train__*/checkpoints/iter_000120)
  EXTRA="--temperature 1.0" EVAL_ENVS=8 evalv "eval_t1_$algo" 200 train -- "$last" > "/tmp/out/eval_t1_$algo.log" 2>&1 &
done
wait; log "T=1 cells done"
tar -C /tmp/learn -cJf /tmp/out/eval_t1.tar.xz eval_t1_grpo eval_t1_reinforce
touch /tmp/out/machineB.done
