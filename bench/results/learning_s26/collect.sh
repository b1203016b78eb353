#!/usr/bin/env bash
# Poll a session-26 driver on the GPU machine for up to $POLL_S seconds (540), then print its log; once the marker
# file /tmp/out/$1 exists, copy what came back to $OUT (at most 8 files of <= 16 MiB: the tarballs as they are, the
# logs in one tar) and print DONE.
marker=/tmp/out/$1
for _ in $(seq 1 $(( ${POLL_S:-540} / 10 ))); do [ -f "$marker" ] && break; sleep 10; done
tail -n 8 /tmp/out/driver.log 2>/dev/null; ls /tmp/out
tail -n 2 /tmp/out/ppo_*.log 2>/dev/null | cut -c1-300
[ -f "$marker" ] || { echo "not yet $(date +%T)"; exit 0; }
cd /tmp/out && cp ./*.tar.xz "$OUT"/ 2>/dev/null
tar -cf "$OUT/logs.tar" ./*.log ./*.json 2>/dev/null
ls -la "$OUT"; echo DONE
