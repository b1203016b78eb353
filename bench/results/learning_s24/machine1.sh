#!/usr/bin/env bash
# Session 24, machine 1 (one nvidia-h100-x1, 22 minutes held): session 23's machine 1 again, unchanged
# (bench/results/learning_s23/machine1.sh: DETOUR=0.5 CANDS="det05:0.3:1" bench/results/learning_s22/priors.sh), to
# remake its git-ignored prior for session 24's lmstate arm. The same 1,200 demonstrations (37,521 steps, as in
# session 23), the same SFT seed and schedule, and a different prior: `train` 0.81 (session 23: 0.405), plate 0.74
# (0.355), red cube 0.90 (0.905); BENCHMARKS.md section 4, session 24. One call, carry [".device"]; the prefix, then
#   rm -rf /tmp/job /tmp/out && cp -r . /tmp/job && (setsid bash /tmp/job/bench/results/learning_s24/machine1.sh \
#   </dev/null >/tmp/drive.out 2>&1 &); sleep 540
# and poll until /tmp/out/machine1.done; tar /tmp/out (the prior's tarball apart: the device returns 8 files a call).
exec bash "$(dirname "$0")/../learning_s23/machine1.sh"
