#!/usr/bin/env bash
# 50 cycles of: start mcpd with 3 servers that fork npx-style trees (sh -> sleep & sleep),
# wait until all are ready, SIGKILL the daemon. Then count processes left from those trees.
set -u
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
B=${B:-$root/target/release}
[ -x "$B/mcpd" ] && [ -x "$B/mcpd-fixture" ] || { echo "build first: cargo build --release --workspace --bins" >&2; exit 1; }
T=$(mktemp -d /tmp/orph-XXXX); mkdir -p $T/cfg/mcpd $T/run; chmod 700 $T/run
tag="orphan-probe-$$"
cat > $T/cfg/mcpd/config.json <<JSON
{"mcpServers":{
 "a":{"command":"sh","args":["-c","exec $B/mcpd-fixture --fork-grandchildren --name $tag"]},
 "b":{"command":"$B/mcpd-fixture","args":["--fork-grandchildren","--ignore-sigterm","--name","$tag"]},
 "c":{"command":"sh","args":["-c","sh -c 'sleep 600 & sleep 600' & exec $B/mcpd-fixture --name $tag"]}}}
JSON
export XDG_RUNTIME_DIR=$T/run XDG_CONFIG_HOME=$T/cfg XDG_CACHE_HOME=$T/cache XDG_STATE_HOME=$T/state
count() { ps -eo pid,stat,args | awk -v t="$tag" '$2 !~ /^Z/ && ($0 ~ t || $0 ~ /sleep 600/)' | grep -v awk | wc -l; }
before=$(count)
for i in $(seq 50); do
  $B/mcpd >>$T/log 2>&1 &
  d=$!
  for _ in $(seq 200); do
    n=$($B/mcpctl status --json 2>/dev/null | grep -c '"state": "ready"'); [ "$n" = 3 ] && break; sleep 0.02
  done
  kill -9 $d; wait $d 2>/dev/null
done
$B/mcpd >>$T/log 2>&1 & d=$!; sleep 1
during=$(count)
kill -TERM $d; wait $d
sleep 0.5
after=$(count)
echo "processes from the probe trees: before=$before, with the 51st daemon running=$during (3 servers' trees), after its SIGTERM=$after"
grep -c "killed what a previous mcpd left running" $T/log | xargs echo "groups swept at start:"
rm -rf $T
