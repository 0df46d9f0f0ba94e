#!/usr/bin/env bash
# The differential suite's recorder: builds every case of testdata/compat/cases/ with BuildKit
# (dockerd 20.10) and writes what it made as the case's expected.json (testdata/compat/
# flatten.py: every path's type, mode, owner, size, content digest and link target, hard-link
# groups, the config fields a user sees, the history lines), so the normal test suite
# (tests/build_compat_suite.rs) checks kiln against BuildKit without dockerd.
#
#   bash bench/same-as-buildkit.sh                    # re-record every case (as root, dockerd up)
#   bash bench/same-as-buildkit.sh 012-copy-chown     # some cases
#
# A case is a folder: Dockerfile; context/ (optional; the build context, else an empty one);
# setup.sh (optional; run in a copy of the case, with $COMPAT naming testdata/compat, to make
# what git cannot hold: fifos, sockets, xattrs, hard links, non-UTF-8 names, archives); args (optional; build flags, one per line). A case
# BuildKit refuses is recorded as {"fails": true}: kiln must refuse it too.
# Both builders start from the same base: kiln's bundled busybox, loaded into docker.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
KILN=${KILN:-$REPO/target/release/kiln}
DOCKER=${DOCKER:-/usr/bin/docker}
CASES=$REPO/testdata/compat/cases
FLATTEN=$REPO/testdata/compat/flatten.py
WORK=${WORK:-/tmp/kiln-compat-record}
export DOCKER_BUILDKIT=1
[ -x "$KILN" ] || (cd "$REPO" && cargo build --release -q)
rm -rf "$WORK" && mkdir -p "$WORK"
# The base, byte for byte kiln's: saved by kiln, loaded by docker.
"$KILN" --root "$WORK/store" load -i "$REPO/testdata/base/busybox-oci" >/dev/null
"$KILN" --root "$WORK/store" save kiln.local/busybox | "$DOCKER" load >/dev/null

# IMAGE.json for a docker image: its Config, and the History of its config blob.
image_json() { # TAG OUT
  "$DOCKER" save "$1" -o "$WORK/save.tar"
  python3 - "$WORK/save.tar" "$1" "$2" <<'PY'
import json, subprocess, sys, tarfile
save, tag, out = sys.argv[1:4]
with tarfile.open(save) as t:
    manifest = json.load(t.extractfile("manifest.json"))
    config = json.load(t.extractfile(manifest[0]["Config"]))
inspect = json.loads(subprocess.check_output(["/usr/bin/docker", "inspect", tag]))[0]
json.dump({"Config": inspect["Config"], "History": config.get("history", [])}, open(out, "w"))
PY
}

build() { # CASEDIR OUTDIR -> fs.tar, image.json in OUTDIR; non-zero when the build fails
  local c=$1 out=$2 ctx args=()
  rm -rf "$out" && mkdir -p "$out/case" && cp -a "$c/." "$out/case/"
  ctx=$out/case/context; mkdir -p "$ctx"
  if [ -f "$out/case/setup.sh" ]; then (cd "$out/case" && COMPAT=$REPO/testdata/compat sh setup.sh); fi
  if [ -f "$out/case/args" ]; then mapfile -t args < "$out/case/args"; fi
  "$DOCKER" build -q "${args[@]}" -f "$out/case/Dockerfile" -o "type=tar,dest=$out/fs.tar" "$ctx" \
    >"$out/log" 2>&1 || return 1
  "$DOCKER" build -q "${args[@]}" -f "$out/case/Dockerfile" -t kiln-compat-case "$ctx" >>"$out/log" 2>&1
  image_json kiln-compat-case "$out/image.json"
}

mkdir -p "$WORK/base-case" && printf 'FROM kiln.local/busybox\n' > "$WORK/base-case/Dockerfile"
build "$WORK/base-case" "$WORK/base"

names=("$@")
[ ${#names[@]} -gt 0 ] || mapfile -t names < <(ls "$CASES")
n=0; failed=0
for name in "${names[@]}"; do
  c=$CASES/$name
  if build "$c" "$WORK/$name"; then
    python3 "$FLATTEN" "$WORK/$name/fs.tar" "$WORK/$name/image.json" \
      "$WORK/base/fs.tar" "$WORK/base/image.json" > "$c/expected.json"
  else
    echo '{"fails": true}' > "$c/expected.json"
    failed=$((failed + 1))
  fi
  n=$((n + 1))
done
echo "recorded $n cases from BuildKit ($failed of them fail there)"
