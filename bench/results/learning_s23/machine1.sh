#!/usr/bin/env bash
# Session 23, machine 1 (one nvidia-h100-x1): issue 13's host profile of tiny PPO first (~2.5 minutes,
# bench/results/speed_s23/profile_loop.sh, alone on the machine so its times are clean), then issue 12's detour
# prior (bench/results/learning_s22/priors.sh with DETOUR=0.5 CANDS="det05:0.3:1": session 22's aux 0.3 prior made
# again on demonstrations of which half carry the held cube past the other receptacle first, sft_openvla deviation 8;
# ~22 minutes). -> /tmp/out/ (the profiles, then priors.sh's outputs); /tmp/out/machine1.done at the end.
# One call, carry [".device"]; the brief's prefix, then
#   rm -rf /tmp/job /tmp/out && cp -r . /tmp/job && (setsid bash /tmp/job/bench/results/learning_s23/machine1.sh \
#   </dev/null >/tmp/drive.out 2>&1 &); sleep 540
# and poll with calls back to back until /tmp/out/machine1.done; copy /tmp/out/* to $OUT.
set -u
cd /tmp/job
mkdir -p /tmp/out
timeout 240 bash bench/results/speed_s23/profile_loop.sh > /tmp/out/profile_loop.out 2>&1
DETOUR=${DETOUR:-0.5} CANDS=${CANDS:-"det05:0.3:1"} bash bench/results/learning_s22/priors.sh
touch /tmp/out/machine1.done
