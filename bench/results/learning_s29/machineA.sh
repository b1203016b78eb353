#!/usr/bin/env bash
# Prepared in session 28 for the next device session (one nvidia-h100-x1, ~27 minutes held). Not yet run.
# Issue 13 first (~5 min): decode="cuda_graph_all" (session 28, tested on the CPU only) checked and timed against the
# prefill graph on the GPU (greedy tokens equal, log-probs' largest difference, two sampled calls drawing
# differently, host and synchronised time per call), then tiny PPO at 16 envs with either decode.
# Issue 12 then: session 28's `state48` arm (48 envs per update; `train` 0.70 at iteration 663, 1.42 M env steps;
# rollout success still rising ~0.02 per 100 k env steps) resumed exactly until SIGTERM at $DEADLINE_S seconds after
# this script started (~110 iterations at 9.2 s, ~420 k env steps); no evaluation here (a machine B tests the last
# checkpoint on the three cells, as learning_s28/machineB.sh's `cells`).
# Calls back to back, never idle 30 s (nothing else between them):
# (a) carry [".learn/s25/prior_pick.tar.xz", ".learn/s28/run_state48_it663.tar.xz"] (learning_s25/ and
#     learning_s28/artifacts/README.md say how to get them):
#     mkdir -p /tmp/stash && cp .learn/s25/prior_pick.tar.xz .learn/s28/run_state48_it663.tar.xz /tmp/stash/
# (b) carry [".device"]: the brief's prefix, then
#     rm -rf /tmp/job /tmp/out && cp -r . /tmp/job && (setsid bash /tmp/job/bench/results/learning_s29/machineA.sh \
#     </dev/null >/tmp/drive.out 2>&1 &); sleep 530
# (c) POLL_S=540 bash bench/results/learning_s26/collect.sh machineA.done  (repeat until DONE)
source "$(dirname "$0")/../drive_common.sh"  # /tmp/job, log, tp, arm, pack_run, stop_and_wait, unstash, state_run
tp tiny_rollout_16 --sections tiny_rollout --tiny-ppo-envs 16
tp tiny_ppo_16 --sections tiny_ppo --tiny-ppo-envs 16 --tiny-ppo-env-parts 2 --tiny-ppo-decode auto cuda_graph_all
unstash machineA.done prior_pick.tar.xz run_state48_it663.tar.xz
run=$(state_run state48)
export ARM_EVALS=none ARM_ITERS=2000 ARM_ENVS=48 STOP_S=$(( ${DEADLINE_S:-1380} - ($(date +%s) - start) ))
log "resume $run until SIGTERM in ${STOP_S}s"
arm 0 ppo state48 "--train-vision --vision-learning-rate 1e-5 --critic state --value-learning-rate 1e-3 --env-parts 2 --resume $run" &
stop_and_wait
log DONE
touch /tmp/out/machineA.done
