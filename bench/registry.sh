#!/usr/bin/env bash
# Pull and push of a 4-layer image of about 200 MB through a local registry (Debian's
# docker-registry on 127.0.0.1, plain HTTP), kiln against skopeo, podman and docker (dockerd
# 20.10) side by side in one hyperfine run; then a cold build whose base must be pulled, kiln
# against `docker build` (BuildKit). Every tool starts each timed run from nothing: its own
# store emptied of the image, and for pushes a registry with empty storage.
#
#   bash bench/registry.sh      # as root, after the peers' setup script (SHARED=DIR: docs/benchmarks.md)
#   RUNS=5 PEERS="docker podman" bash bench/registry.sh
#
# The image: busybox plus four layers of 50 MB each, two of AES-CTR keystream (incompressible,
# the same bytes every time: a fixed key) and two of its base64 (text, compresses to ~75 %).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
KILN=${KILN:-$REPO/target/release/kiln}
WORK=${WORK:-/tmp/kiln-bench-registry}
RUNS=${RUNS:-3}
PEERS=${PEERS:-"skopeo podman docker"}
DOCKER=${DOCKER:-/usr/bin/docker}
PORT=${PORT:-5099}
REG=127.0.0.1:$PORT
[ -x "$KILN" ] || (cd "$REPO" && cargo build --release -q)
for t in hyperfine docker-registry skopeo podman openssl; do
  command -v "$t" >/dev/null || { echo "$t missing: run the peers' setup script" >&2; exit 1; }
done
rm -rf "$WORK" && mkdir -p "$WORK"

# ---- a registry whose storage the push runs empty between runs
cat > "$WORK/registry.yml" <<YML
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $WORK/registry-data
  delete:
    enabled: true
http:
  addr: $REG
YML
start_registry() {
  docker-registry serve "$WORK/registry.yml" >/dev/null 2>&1 &
  echo $! > "$WORK/registry.pid"
  for _ in $(seq 100); do curl -sf "http://$REG/v2/" >/dev/null && return; sleep 0.05; done
  echo "docker-registry did not start" >&2; exit 1
}
stop_registry() { kill "$(cat "$WORK/registry.pid")" 2>/dev/null || true; sleep 0.2; }
trap stop_registry EXIT
start_registry

# ---- the image, built by kiln from generated data, pushed once as the pull source
CTX=$WORK/ctx
mkdir -p "$CTX"
# (a process substitution: head closing the pipe early is not an error under pipefail)
keystream() { head -c "$2" < <(openssl enc -aes-128-ctr -nosalt \
  -K 000102030405060708090a0b0c0d0e0f -iv "$1" < /dev/zero 2>/dev/null); }
keystream 00000000000000000000000000000001 52428800 > "$CTX/a.bin"
keystream 00000000000000000000000000000002 52428800 > "$CTX/b.bin"
keystream 00000000000000000000000000000003 39321600 | base64 > "$CTX/c.txt"
keystream 00000000000000000000000000000004 39321600 | base64 > "$CTX/d.txt"
cat > "$CTX/Dockerfile" <<'DF'
FROM kiln.local/busybox
COPY a.bin /data/
COPY b.bin /data/
COPY c.txt /data/
COPY d.txt /data/
DF
SRC=$WORK/kiln-src
$KILN --root "$SRC" load -i "$REPO/testdata/base/busybox-oci" >/dev/null
$KILN --root "$SRC" build -q -t "$REG/bench/big:1" "$CTX" >/dev/null
$KILN --root "$SRC" push -q "$REG/bench/big:1" >/dev/null
IMG=$REG/bench/big:1
echo "image: $(du -sh "$WORK/registry-data" | cut -f1) in the registry"

# ---- pull: each tool from an empty store
KP=$WORK/kiln-pull
pull_cmds=(-n kiln --prepare "rm -rf $KP" "$KILN --root $KP pull -q $IMG")
for p in $PEERS; do case $p in
  skopeo) pull_cmds+=(-n skopeo --prepare "rm -rf $WORK/skopeo-oci"
            "skopeo copy -q --src-tls-verify=false docker://$IMG oci:$WORK/skopeo-oci:x") ;;
  podman) pull_cmds+=(-n podman --prepare "podman rmi -f $IMG >/dev/null 2>&1 || true"
            "podman pull -q --tls-verify=false $IMG") ;;
  docker) pull_cmds+=(-n docker --prepare "$DOCKER rmi -f $IMG >/dev/null 2>&1 || true"
            "$DOCKER pull -q $IMG") ;;
esac; done
hyperfine --runs "$RUNS" --export-json "$WORK/pull.json" "${pull_cmds[@]}" >/dev/null
# What kiln pushed runs under docker (and podman), with the content kiln put in it.
for p in $PEERS; do case $p in
  docker) echo "docker run: $($DOCKER run --rm --network none "$IMG" wc -c /data/a.bin)" ;;
  podman) echo "podman run: $(podman run --rm --network none "$IMG" wc -c /data/d.txt)" ;;
esac; done

# ---- push: each tool holds the pulled image; the registry's storage is emptied first
fresh_registry="kill \$(cat $WORK/registry.pid) 2>/dev/null || true; sleep 0.2; rm -rf $WORK/registry-data; \
docker-registry serve $WORK/registry.yml >/dev/null 2>&1 & echo \$! > $WORK/registry.pid; \
for i in \$(seq 100); do curl -sf http://$REG/v2/ >/dev/null && break; sleep 0.05; done"
$KILN --root "$KP" pull -q "$IMG" >/dev/null
PUSHED=$REG/bench/pushed:1
$KILN --root "$KP" tag "$IMG" "$PUSHED"
push_cmds=(-n kiln --prepare "$fresh_registry" "$KILN --root $KP push -q $PUSHED")
for p in $PEERS; do case $p in
  skopeo) skopeo copy -q --src-tls-verify=false "docker://$IMG" "oci:$WORK/skopeo-oci:x" >/dev/null
          push_cmds+=(-n skopeo --prepare "$fresh_registry"
            "skopeo copy -q --dest-tls-verify=false oci:$WORK/skopeo-oci:x docker://$PUSHED") ;;
  podman) podman pull -q --tls-verify=false "$IMG" >/dev/null; podman tag "$IMG" "$PUSHED"
          push_cmds+=(-n podman --prepare "$fresh_registry"
            "podman push -q --tls-verify=false $PUSHED") ;;
  docker) $DOCKER pull -q "$IMG" >/dev/null; $DOCKER tag "$IMG" "$PUSHED"
          push_cmds+=(-n docker --prepare "$fresh_registry" "$DOCKER push -q $PUSHED") ;;
esac; done
hyperfine --runs "$RUNS" --export-json "$WORK/push.json" "${push_cmds[@]}" >/dev/null

# ---- cold build whose base is only in the registry
eval "$fresh_registry"
$KILN --root "$SRC" push -q "$IMG" >/dev/null
BCTX=$WORK/build-ctx
mkdir -p "$BCTX"
printf 'FROM %s\nRUN echo built > /built\n' "$IMG" > "$BCTX/Dockerfile"
KB=$WORK/kiln-build
hyperfine --runs "$RUNS" --export-json "$WORK/build.json" \
  -n kiln --prepare "rm -rf $KB" "$KILN --root $KB build -q -t bench-built $BCTX" \
  -n docker --prepare "$DOCKER rmi -f $IMG $PUSHED bench-built >/dev/null 2>&1; $DOCKER builder prune -af >/dev/null 2>&1" \
  "env DOCKER_BUILDKIT=1 $DOCKER build -q -t bench-built $BCTX" >/dev/null

python3 - "$WORK" <<'PY'
import json, sys
work = sys.argv[1]
print("| operation | tool | median (s) | kiln/tool |")
print("|---|---|---|---|")
for op in ["pull", "push", "build"]:
    r = {x["command"]: x["median"] for x in json.load(open(f"{work}/{op}.json"))["results"]}
    k = r["kiln"]
    for tool, t in r.items():
        ratio = "" if tool == "kiln" else f"{k / t:.2f}"
        print(f"| {op} | {tool} | {t:.3f} | {ratio} |")
PY
