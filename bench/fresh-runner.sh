#!/usr/bin/env bash
# A fresh CI runner building from a cache another runner pushed to a registry, side by side:
# kiln (--cache-to type=registry,mode=max,mounts=true, then --cache-from on an empty store),
# BuildKit (dockerd 20.10, BUILDKIT_INLINE_CACHE=1 pushed with the image, then --cache-from on
# a pruned builder) and buildah (--layers --cache-to, then --cache-from on a pruned store, its
# cache mounts in /var/tmp/buildah-cache removed, as a fresh runner has none).
# Each tool's runner A builds and exports once; runner B's build is timed (hyperfine, medians),
# each run on an emptied cache. Workloads: the kit's (small, multistage, incremental, bigctx)
# unchanged, and `cachemount`, whose RUN fills a cache mount with 100 MB as a package manager
# would (a 2 s download, simulated; random bytes, as packages do not compress) and whose file edited on runner B makes that RUN run again.
#
#   SHARED=../shared/bench bash bench/fresh-runner.sh      # as root, after the kit's peers-setup.sh
#
# Needs: docker-registry (Debian), hyperfine, jq, the kit's dockerd and buildah.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
SHARED=${SHARED:-$HERE/../../shared/bench}
KILN=${KILN:-$HERE/../target/release/kiln}
WORK=${WORK:-/tmp/kiln-fresh-runner}
RUNS=${RUNS:-3}
WORKLOADS=${WORKLOADS:-"small multistage incremental bigctx cachemount"}
DOCKER=/usr/bin/docker
BASE=$SHARED/busybox-oci.tar
rm -rf "$WORK" && mkdir -p "$WORK/results"
cp -r "$SHARED/workloads" "$WORK/workloads"
WL=$WORK/workloads
sh "$WL/bigctx/gen.sh" >/dev/null
sh "$WL/incremental/gen.sh" >/dev/null
for f in "$WL/small/files/bench-edit.txt" "$WL/bigctx/bench-edit.txt" "$WL/multistage/bench-edit.txt"; do
  [ -f "$f" ] || echo 0 >"$f"
done
mkdir -p "$WL/cachemount"
cat >"$WL/cachemount/Dockerfile" <<'EOF'
FROM localhost/busybox
COPY bench-edit.txt /edit
RUN --mount=type=cache,target=/var/cache/pkgs \
    if [ ! -f /var/cache/pkgs/archive ]; then sleep 2; head -c 100000000 /dev/urandom > /var/cache/pkgs/archive; fi; \
    sha256sum /var/cache/pkgs/archive /edit > /installed
EOF
echo 0 >"$WL/cachemount/bench-edit.txt"

# The registry, on loopback only.
. "$HERE/lib/registry.sh"
start_bench_registry

median() { jq -r '.results[0].median*1000|round/1000' "$1" 2>/dev/null; }
time_it() { # name prepare command
  local j=$WORK/results/$1.json
  if hyperfine --style none --runs "$RUNS" --prepare "$2" --export-json "$j" "$3" \
      >"$WORK/results/$1.log" 2>&1; then median "$j"; else echo FAIL; fi
}
ratio() { [[ $1 =~ ^[0-9.]+$ && $2 =~ ^[0-9.]+$ ]] && python3 -c "print(f'{$1/$2:.2f}')" || echo NA; }

echo "| workload | kiln s | BuildKit s | kiln/BuildKit | buildah s | kiln/buildah |"
echo "|---|---|---|---|---|---|"
for w in $WORKLOADS; do
  ctx=$WL/$w
  edit=""
  [ "$w" = cachemount ] && edit="date +%s%N > $ctx/bench-edit.txt;"
  # Runner A of each tool builds and exports.
  rm -rf "$WORK/kiln-a" && "$KILN" --root "$WORK/kiln-a" load -i "$BASE" >/dev/null
  "$KILN" --root "$WORK/kiln-a" build -q -t "$w" \
    --cache-to "type=registry,ref=$REG/kiln/$w:cache,mode=max,mounts=true" "$ctx" >/dev/null 2>&1
  DOCKER_BUILDKIT=1 $DOCKER build -q --build-arg BUILDKIT_INLINE_CACHE=1 -t "$REG/bk/$w:cache" "$ctx" >/dev/null 2>&1
  $DOCKER push -q "$REG/bk/$w:cache" >/dev/null 2>&1
  buildah build -q --layers --tls-verify=false --cache-to "$REG/bh/$w-cache" -t "bh-$w" "$ctx" >/dev/null 2>&1
  # Runner B: an empty cache each time, the base image only.
  k=$(time_it "kiln-$w" \
    "$edit rm -rf $WORK/kiln-b && $KILN --root $WORK/kiln-b load -i $BASE >/dev/null; sync" \
    "$KILN --root $WORK/kiln-b build -q -t $w --cache-from type=registry,ref=$REG/kiln/$w:cache $ctx")
  b=$(time_it "bk-$w" \
    "$edit $DOCKER rmi -f $REG/bk/$w:cache bk-$w >/dev/null 2>&1; $DOCKER builder prune -af >/dev/null 2>&1; sync" \
    "DOCKER_BUILDKIT=1 $DOCKER build -q --cache-from $REG/bk/$w:cache -t bk-$w $ctx")
  h=$(time_it "bh-$w" \
    "$edit buildah rmi -f bh-$w >/dev/null 2>&1; buildah rmi --prune >/dev/null 2>&1; rm -rf /var/tmp/buildah-cache; sync" \
    "buildah build -q --layers --tls-verify=false --cache-from $REG/bh/$w-cache -t bh-$w $ctx")
  echo "| $w | $k | $b | $(ratio "$k" "$b") | $h | $(ratio "$k" "$h") |"
done
