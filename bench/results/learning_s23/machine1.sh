#!/usr/bin/env bash
# Session 23, machine 1 (one nvidia-h100-x1, 25 minutes held): issue 12's detour prior, bench/results/learning_s22/priors.sh
# with DETOUR=0.5 CANDS="det05:0.3:1": session 22's aux 0.3 prior made again on demonstrations of which half carry
# the held cube past the other receptacle first (sft_openvla deviation 8; demos 6 min, SFT 8,500 steps 9.7 min at
# 2,030 samples/s, the three 200-episode cells 3.5 min) -> /tmp/out/ (priors.sh's outputs); /tmp/out/machine1.done
# at the end. (Session 23 first ran a cProfile of tiny PPO here, 2.5 minutes; Python 3.12's cProfile counts other
# threads' calls into the main thread's, so its attributions were unusable: bench/throughput.py --sections tiny_loop
# replaced it, on machine 3.)
# One call, carry [".device"]; the brief's prefix, then
#   rm -rf /tmp/job /tmp/out && cp -r . /tmp/job && (setsid bash /tmp/job/bench/results/learning_s23/machine1.sh \
#   </dev/null >/tmp/drive.out 2>&1 &); sleep 540
# and poll with calls back to back until /tmp/out/machine1.done. The device returns at most 8 files per call: tar
# /tmp/out into one or two files in $OUT.
# Machine 2 (20 minutes held): the PPO arm from this prior, two calls back to back: (a) carry
# [".learn/s23/prior_det05.tar.xz"]: `mkdir -p /tmp/stash && cp .learn/s23/prior_det05.tar.xz /tmp/stash/`;
# (b) carry [".device"]: the prefix, `rm -rf /tmp/job /tmp/out && cp -r . /tmp/job && (ARM=state LIKELIHOOD=0
# PRIOR_TAR=/tmp/stash/prior_det05.tar.xz setsid bash /tmp/job/bench/results/learning_s13/arm.sh </dev/null
# >/tmp/drive.out 2>&1 &); sleep 530`, poll until DONE (~21 minutes).
set -u
cd /tmp/job
mkdir -p /tmp/out
DETOUR=${DETOUR:-0.5} CANDS=${CANDS:-"det05:0.3:1"} bash bench/results/learning_s22/priors.sh
touch /tmp/out/machine1.done
