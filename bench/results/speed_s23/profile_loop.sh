#!/usr/bin/env bash
# Issue 13, session 23: where the host time of tiny PPO's rollout step goes. Session 22 measured a 44 ms step
# (16 envs, --env-parts 2) of which the model is ~10-12 ms and the env wait 2.4 ms; this runs the real script
# under cProfile (the main process only: the CPU env workers are separate processes) on the throughput bench's
# tiny random checkpoint, 3 iterations of 16 envs x 80 steps, for --env-parts 1 and 2, and prints the functions
# by own time and by cumulative time (/tmp/out/ppo_parts<p>.txt, the raw profile in ppo_parts<p>.prof).
# cProfile adds a few microseconds per Python call: read shares, not absolute times; the run's own SPS without
# the profiler is session 22's (BENCHMARKS.md section 1).
# On the GPU machine, from a copy of the tree in /tmp/job (the brief's prefix first): bash bench/results/speed_s23/profile_loop.sh
set -u
cd "$(dirname "$0")/../../.."
mkdir -p /tmp/out
python3 -c "import openvla_patch as ovp; ovp.make_tiny_openvla('/tmp/tiny_prof', seed=0)"
for parts in ${PARTS:-1 2}; do
  # runpy rather than `python -m cProfile script`: under the latter the script's globals are not `__main__`'s, and
  # tyro cannot resolve the Args annotations
  python3 -c 'import cProfile, runpy, sys; sys.argv = sys.argv[1:]; cProfile.run("runpy.run_path(sys.argv[0], run_name=\"__main__\")", sys.argv.pop(1))' \
    ppo_openvla.py /tmp/out/ppo_parts$parts.prof --vla-path /tmp/tiny_prof --num-envs 16 \
    --num-steps 80 --num-minibatches 16 --num-iterations "${ITERS:-3}" --save-every 1000 --env-parts "$parts" \
    --eval-every 0 --env-backend cpu --output-dir /tmp/runs_prof_$parts > /tmp/out/ppo_parts$parts.log 2>&1
  echo "parts $parts rc=$?"
  python3 - "$parts" > /tmp/out/ppo_parts$parts.txt <<'PY'
import pstats, sys
p = sys.argv[1]
stats = pstats.Stats(f"/tmp/out/ppo_parts{p}.prof")
stats.sort_stats("tottime").print_stats(35)
stats.sort_stats("cumulative").print_stats(60)
PY
done
