#!/usr/bin/env bash
# Build time against the number of instructions (the linear-time fix): Dockerfiles of N `ENV`
# lines on `scratch`, cold (--no-cache), kiln against BuildKit (dockerd 20.10) side by side in
# one hyperfine run, then kiln alone at sizes BuildKit takes minutes for (its own cost grows
# faster than linearly), to show kiln's time grows with N, not N².
#
#   bash bench/many-instructions.sh    # as root, after ../shared/bench/peers-setup.sh, once
#   RUNS=5 SIZES="500 2000" BIG="10000 100000" bash bench/many-instructions.sh
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
KILN=${KILN:-$REPO/target/release/kiln}
WORK=${WORK:-/tmp/kiln-bench-many}
RUNS=${RUNS:-3}
SIZES=${SIZES:-"500 2000"}
BIG=${BIG:-"10000 100000"}
DOCKER=${DOCKER:-/usr/bin/docker}
export DOCKER_BUILDKIT=1
[ -x "$KILN" ] || (cd "$REPO" && cargo build --release -q)
command -v hyperfine >/dev/null || { echo "hyperfine missing: run ../shared/bench/peers-setup.sh" >&2; exit 1; }
rm -rf "$WORK" && mkdir -p "$WORK"
gen() { # gen N DIR
  mkdir -p "$2"
  python3 - "$1" > "$2/Dockerfile" <<'PY'
import sys
n = int(sys.argv[1])
print("FROM scratch")
for i in range(n):
    print(f"ENV V{i}=value{i}")
PY
}
echo "| ENV lines | kiln (s) | BuildKit (s) | kiln/BuildKit |"
echo "|---|---|---|---|"
for n in $SIZES; do
  gen "$n" "$WORK/ctx-$n"
  hyperfine -N --runs "$RUNS" --export-json "$WORK/$n.json" \
    -n kiln "$KILN --root $WORK/store build -q --no-cache $WORK/ctx-$n" \
    -n buildkit "$DOCKER build -q --no-cache $WORK/ctx-$n" >/dev/null
  python3 - "$WORK/$n.json" "$n" <<'PY'
import json, sys
r = {x["command"]: x["median"] for x in json.load(open(sys.argv[1]))["results"]}
print(f"| {sys.argv[2]} | {r['kiln']:.3f} | {r['buildkit']:.2f} | {r['kiln']/r['buildkit']:.4f} |")
PY
done
echo
echo "| ENV lines | kiln alone (s) | per 1000 lines (ms) |"
echo "|---|---|---|"
for n in $BIG; do
  gen "$n" "$WORK/ctx-$n"
  hyperfine -N --runs "$RUNS" --export-json "$WORK/$n.json" \
    -n kiln "$KILN --root $WORK/store build -q --no-cache $WORK/ctx-$n" >/dev/null
  python3 - "$WORK/$n.json" "$n" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))["results"][0]["median"]
n = int(sys.argv[2])
print(f"| {n} | {m:.3f} | {m / n * 1e6:.1f} |")
PY
done
