#!/usr/bin/env bash
# Detached containers side by side with docker (dockerd 20.10) and podman, in one hyperfine run
# each: `run -d` until the process runs (then the container is removed, outside the timing),
# `stop` of a container whose process 1 exits on SIGTERM, and the log path (a container writing
# 100 MB to stdout, then `logs` of all of it). Then the monitor's memory (RSS, PSS, USS).
#
#   bash bench/containers.sh     # as root, after the peers' setup script (SHARED=DIR: docs/benchmarks.md)
#   RUNS=10 PEERS="docker" bash bench/containers.sh
# (docker's commands go to dockerd 20.10's client, /usr/bin/docker)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
KILN=${KILN:-$REPO/target/release/kiln}
WORK=${WORK:-/tmp/kiln-bench-containers}
RUNS=${RUNS:-10}
PEERS=${PEERS:-"docker podman"}
DOCKER=${DOCKER:-/usr/bin/docker}
[ -x "$KILN" ] || (cd "$REPO" && cargo build --release -q)
command -v hyperfine >/dev/null || { echo "hyperfine missing: run the peers' setup script" >&2; exit 1; }
rm -rf "$WORK" && mkdir -p "$WORK"
R=$WORK/store
K="$KILN --root $R"
$K load -i "$REPO/testdata/base/busybox-oci" >/dev/null
# The same busybox for every tool.
$K save kiln.local/busybox -o "$WORK/busybox.tar"
for p in $PEERS; do case $p in
  docker) $DOCKER load -i "$WORK/busybox.tar" >/dev/null ;;
  podman) podman load -i "$WORK/busybox.tar" >/dev/null ;;
esac; done
IMG=kiln.local/busybox

peer() { # TOOL -> its command
  case $1 in docker) echo "$DOCKER" ;; podman) echo "podman" ;; esac; }

# 1. run -d (the previous container removed before each run, outside the timing)
cmds=(-n kiln --prepare "$K rm -f bench >/dev/null 2>&1 || true" "$K run -d --name bench $IMG sleep 600")
for p in $PEERS; do c=$(peer "$p")
  cmds+=(-n "$p" --prepare "$c rm -f bench >/dev/null 2>&1 || true" "$c run -d --name bench --network none $IMG sleep 600")
done
hyperfine --runs "$RUNS" --export-json "$WORK/run-d.json" "${cmds[@]}" >/dev/null

# 2. exec of `true` in a running container
$K rm -f bench >/dev/null 2>&1 || true
$K run -d --name bench $IMG sleep 600 >/dev/null
cmds=(-n kiln "$K exec bench true")
for p in $PEERS; do c=$(peer "$p")
  $c rm -f bench >/dev/null 2>&1 || true
  $c run -d --name bench --network none $IMG sleep 600 >/dev/null
  cmds+=(-n "$p" "$c exec bench true")
done
hyperfine -N --runs "$RUNS" --export-json "$WORK/exec.json" "${cmds[@]}" >/dev/null

# 3. stop of a process 1 that exits on SIGTERM
trap_cmd="trap 'exit 0' TERM; while true; do sleep 0.05; done"
cmds=(-n kiln --prepare "$K rm -f bench >/dev/null 2>&1; $K run -d --name bench $IMG sh -c \"$trap_cmd\" >/dev/null"
      "$K stop bench")
for p in $PEERS; do c=$(peer "$p")
  cmds+=(-n "$p" --prepare "$c rm -f bench >/dev/null 2>&1; $c run -d --name bench --network none $IMG sh -c \"$trap_cmd\" >/dev/null"
         "$c stop bench")
done
hyperfine --runs "$RUNS" --export-json "$WORK/stop.json" "${cmds[@]}" >/dev/null

# 4. the log path: 100 MB of lines to stdout, waited for, then all of it read back
writer="head -c 75000000 /dev/zero | base64"
cmds=(-n kiln --prepare "$K rm -f bench >/dev/null 2>&1 || true"
      "sh -c '$K run -d --name bench $IMG sh -c \"$writer\" >/dev/null && $K wait bench >/dev/null && $K logs bench | wc -c'")
for p in $PEERS; do c=$(peer "$p")
  cmds+=(-n "$p" --prepare "$c rm -f bench >/dev/null 2>&1 || true"
         "sh -c '$c run -d --name bench --network none $IMG sh -c \"$writer\" >/dev/null && $c wait bench >/dev/null && $c logs bench | wc -c'")
done
hyperfine --runs 3 --export-json "$WORK/logs.json" "${cmds[@]}" >/dev/null
$K rm -f bench >/dev/null 2>&1 || true
for p in $PEERS; do $(peer "$p") rm -f bench >/dev/null 2>&1 || true; done

# 5. the monitor's memory: ten detached containers; of each monitor its RSS (which counts the
# pages of kiln's binary that all monitors share), its PSS (shared pages divided among their
# users) and its USS (pages no other process has: what one more container costs). The binary's
# pages are written back first, so that they count as the shared page cache they are.
sync
for i in $(seq 10); do $K run -d --name "mem$i" $IMG sleep 600 >/dev/null; done
# mem PATTERN: the median over the monitors of the sum of the smaps_rollup fields it matches.
mem() {
  for pid in $(pgrep -f "kiln --root $R run -d --name mem"); do
    awk -v k="$1" '$1 ~ k {s += $2} END {print s}' "/proc/$pid/smaps_rollup"
  done | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'
}
rss=$(mem '^Rss:')
pss=$(mem '^Pss:')
uss=$(mem '^Private_(Clean|Dirty):')
for i in $(seq 10); do $K rm -f "mem$i" >/dev/null; done

python3 - "$WORK" "$rss" "$pss" "$uss" <<'PY'
import json, sys
work, rss, pss, uss = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
print("| operation | tool | median (s) | kiln/tool |")
print("|---|---|---|---|")
for op in ["run-d", "exec", "stop", "logs"]:
    r = {x["command"]: x["median"] for x in json.load(open(f"{work}/{op}.json"))["results"]}
    k = r["kiln"]
    for tool, t in r.items():
        print(f"| {op} | {tool} | {t:.3f} | {'' if tool == 'kiln' else f'{k / t:.2f}'} |")
print(f"\nmonitor memory, median of 10: RSS {int(rss) / 1024:.1f} MiB, "
      f"PSS {int(pss) / 1024:.1f} MiB, USS {int(uss) / 1024:.1f} MiB")
PY
