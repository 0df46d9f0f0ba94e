#!/usr/bin/env bash
# Records testdata/interop/docker-buildkit: an image as dockerd 20.10's BuildKit builds it and
# `docker save` writes it (its config has `"OnBuild": null`, as every image it builds), on
# kiln's bundled busybox base. The base's layer.tar is left out (the test puts back the same
# bytes from testdata/base: its diff_id is the base's), so the fixture stays a few kB.
#
#   bash bench/record-docker-image.sh     # as root, dockerd running (bench/ peers setup)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
KILN=${KILN:-$REPO/target/release/kiln}
DOCKER=${DOCKER:-/usr/bin/docker}
OUT=$REPO/testdata/interop/docker-buildkit
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
[ -x "$KILN" ] || (cd "$REPO" && cargo build --release -q)
"$KILN" --root "$WORK/store" load -i "$REPO/testdata/base/busybox-oci" >/dev/null
"$KILN" --root "$WORK/store" save kiln.local/busybox | "$DOCKER" load >/dev/null
mkdir -p "$WORK/ctx"
printf 'FROM kiln.local/busybox\nENV GREETING=hello\nRUN echo docker-built > /from-docker\nCMD ["cat", "/from-docker"]\n' \
  > "$WORK/ctx/Dockerfile"
DOCKER_BUILDKIT=1 "$DOCKER" build -q -t kiln-interop/docker-built:1 "$WORK/ctx" >/dev/null
mkdir -p "$WORK/saved"
"$DOCKER" save kiln-interop/docker-built:1 | tar -x -C "$WORK/saved"
base=$(python3 -c "import json; print(json.load(open('$WORK/saved/manifest.json'))[0]['Layers'][0])")
rm "$WORK/saved/$base"
rm -rf "$OUT" && mkdir -p "$OUT" && cp -a "$WORK/saved/." "$OUT/"
echo "recorded $OUT (base layer $base left out)"
