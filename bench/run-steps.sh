#!/usr/bin/env bash
# The sandbox's figures, side by side in one run (medians, then ratios):
#   1. ten RUN steps, cold (--no-cache), no network: kiln (`RUN --network=none`) against BuildKit
#      (`docker build --network none`, dockerd 20.10), by hyperfine;
#   2. start latency, medians of runs taken in turn: `kiln run --rm IMAGE true` against `crun
#      run` of the same image unpacked as a bundle by umoci, and `podman run --rm`; then kiln
#      against crun again with the kernel's cgroup migration lock kept warm (each tool's own
#      cost, without the grace period either pays at random).
#
#   bash bench/run-steps.sh            # as root, after ../shared/bench/peers-setup.sh, once
#   RUNS=20 bash bench/run-steps.sh
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
SHARED=${SHARED:-$(cd "$REPO/../shared/bench" && pwd)}
KILN=${KILN:-$REPO/target/release/kiln}
WORK=${WORK:-/tmp/kiln-bench-run}
RUNS=${RUNS:-10}
[ -x "$KILN" ] || (cd "$REPO" && cargo build --release -q)
for t in hyperfine crun umoci podman; do
  command -v $t >/dev/null || { echo "$t missing: run $SHARED/peers-setup.sh first" >&2; exit 1; }
done
export DOCKER_BUILDKIT=1
DOCKER=${DOCKER:-/usr/bin/docker}
rm -rf "$WORK" && mkdir -p "$WORK/ctx-kiln" "$WORK/ctx-bk"
# The binary as `cargo install` leaves it: a copy. The file the linker wrote in
# target/release started a container 0.5-1 ms slower than byte-identical copies of itself on
# this machine (taken in turn, 80 rounds; still 0.5 ms after its page cache was dropped).
install -m 0755 "$KILN" "$WORK/kiln"
KILN=$WORK/kiln
{ echo "FROM localhost/busybox"; for i in $(seq 1 10); do echo "RUN --network=none echo step $i > /s$i"; done; } > "$WORK/ctx-kiln/Dockerfile"
{ echo "FROM localhost/busybox"; for i in $(seq 1 10); do echo "RUN echo step $i > /s$i"; done; } > "$WORK/ctx-bk/Dockerfile"
"$KILN" --root "$WORK/store" load -i "$SHARED/busybox-oci.tar" >/dev/null
# Warm the unpacked base layer once: both tools keep theirs between builds.
"$KILN" --root "$WORK/store" build -q "$WORK/ctx-kiln" >/dev/null
"$DOCKER" build -q --network none "$WORK/ctx-bk" >/dev/null

hyperfine -N --warmup 1 --runs "$RUNS" --export-json "$WORK/steps.json" \
  -n kiln "$KILN --root $WORK/store build -q --no-cache $WORK/ctx-kiln" \
  -n buildkit "$DOCKER build -q --no-cache --network none $WORK/ctx-bk" >/dev/null

# An OCI bundle of the same image for crun.
skopeo copy -q "oci-archive:$SHARED/busybox-oci.tar" "oci:$WORK/layout:latest" 2>/dev/null \
  || (mkdir -p "$WORK/layout" && tar -xf "$SHARED/busybox-oci.tar" -C "$WORK/layout")
umoci unpack --image "$WORK/layout:latest" "$WORK/bundle" >/dev/null
python3 - "$WORK/bundle/config.json" <<'PY'
import json, sys
p = sys.argv[1]; c = json.load(open(p))
c["process"]["args"] = ["true"]; c["process"]["terminal"] = False
json.dump(c, open(p, "w"))
PY
# crun 1.8 refuses hybrid cgroups: as ../shared/bench/peers-setup.sh does, hide the cgroup2
# "unified" mount in a private mount namespace (the host is untouched); all three run there.
# The same start with the kernel's cgroup migration lock kept warm: a process moving itself
# between two pids cgroups every 3 ms, so no run waits for the RCU grace period the first
# migration after a quiet spell costs (7.5-13 ms here, paid by either tool at random). What is
# left is each tool's own cost.
cat > "$WORK/warm.py" <<'PY'
import os, sys, time
me, cg = str(os.getpid()), sys.argv[1]
os.makedirs(cg, exist_ok=True)
while True:
    open(cg + "/cgroup.procs", "w").write(me)
    open(os.path.dirname(cg) + "/cgroup.procs", "w").write(me)
    time.sleep(0.003)
PY
# Start latency is timed with the commands taken in turn (bench/lib/interleave.py): run one
# after the other, hyperfine's blocks saw the machine change under them (podman's cleanup
# after its block, a burst elsewhere) and gave ratios from 1.1 to 1.5 for the same binaries.
# Timed on a settled file system: the store and bundle were just written and the last run's
# tree just deleted (this machine's ext4 discards freed blocks at its journal commits, every
# 5 s). Without this, one binary measured 0.98 and 1.19 against crun in two runs in a row.
sync
sleep 6
TURNS="python3 $HERE/lib/interleave.py"
KRUN="$KILN --root $WORK/store run --rm --network none localhost/busybox true"
CRUN="crun run --bundle $WORK/bundle kiln-bench-$$"
unshare -m --propagation private sh -c "umount /sys/fs/cgroup/unified && \
  $TURNS $WORK/start.json $((RUNS * 6)) 3 'kiln=$KRUN' 'crun=$CRUN' && \
  { python3 $WORK/warm.py /sys/fs/cgroup/pids/kiln-bench-warm & WARM=\$!; sleep 0.3; \
  $TURNS $WORK/start-warm.json $((RUNS * 6)) 3 'kiln=$KRUN' 'crun=$CRUN'; kill \$WARM; } && \
  $TURNS $WORK/start-podman.json $RUNS 2 'kiln=$KRUN' \
    'podman=podman run --rm --network none localhost/busybox true'" >/dev/null
rmdir /sys/fs/cgroup/pids/kiln-bench-warm 2>/dev/null || true

python3 - "$WORK/steps.json" "$WORK/start.json" "$WORK/start-warm.json" "$WORK/start-podman.json" <<'PY'
import json, sys
def med(path):
    return {r["command"]: r["median"] for r in json.load(open(path))["results"]}
s, t, w, p = (med(a) for a in sys.argv[1:5])
print("| measure | kiln | peer | kiln/peer |")
print("|---|---|---|---|")
print(f"| ten RUN steps, cold, no network (s) | {s['kiln']:.3f} | BuildKit {s['buildkit']:.3f} | {s['kiln']/s['buildkit']:.2f} |")
print(f"| per RUN step (ms, cold build / 10) | {s['kiln']*100:.1f} | BuildKit {s['buildkit']*100:.1f} | {s['kiln']/s['buildkit']:.2f} |")
print(f"| run --rm IMAGE true (ms) | {t['kiln']*1000:.1f} | crun {t['crun']*1000:.1f} | {t['kiln']/t['crun']:.2f} |")
print(f"| run --rm IMAGE true (ms) | {p['kiln']*1000:.1f} | podman {p['podman']*1000:.1f} | {p['kiln']/p['podman']:.2f} |")
print(f"| run --rm IMAGE true, cgroup lock warm (ms) | {w['kiln']*1000:.1f} | crun {w['crun']*1000:.1f} | {w['kiln']/w['crun']:.2f} |")
PY
