#!/usr/bin/env bash
# A two-platform build (linux/amd64 + linux/arm64) of a small Go program, side by side with
# buildah (`build --platform linux/amd64,linux/arm64 --manifest`), in one run:
#   cross     the Go program cross-compiled on the build platform (FROM --platform=$BUILDPLATFORM,
#             GOARCH=$TARGETARCH), copied into a scratch image per platform: the usual pattern;
#   emulated  the program compiled in each platform's own image, arm64's under QEMU;
#   shell     a RUN of busybox shell work per platform (the arm64 one under QEMU): what a
#             Dockerfile of package installs and scripts does, without a compiler.
# buildah 1.28 (Debian 12's) runs a `FROM --platform=$BUILDPLATFORM` stage for the target
# platform instead (checked: `uname -m` there says aarch64), so its cross row compiles under QEMU;
# kiln's compiles natively, as BuildKit's does.
# Each tool builds from an empty cache every time (kiln --no-cache, buildah --no-cache --layers=false),
# its base images already local (kiln's store; buildah's storage, pulled before timing), so what
# is timed is the build itself: both run the same QEMU (Debian's qemu-user-static, registered
# with binfmt_misc by `kiln system binfmt --install`).
#
#   bash bench/multiplatform.sh       # as root; RUNS=5 for more runs
#
# The Go toolchain images are made from Debian's own packages (golang-1.19-go and libc6 for each
# architecture, golang-1.19-src, busybox-static), downloaded with apt-get into $CACHE once.
# Needs: qemu-user-static, buildah, docker-registry, hyperfine, jq, dpkg-deb; kiln built with
# `cargo build --release`.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
KILN=${KILN:-$HERE/../target/release/kiln}
WORK=${WORK:-/tmp/kiln-multiplatform}
CACHE=${CACHE:-/var/cache/kiln-bench/multiplatform}
RUNS=${RUNS:-3}
rm -rf "$WORK" && mkdir -p "$WORK/results" "$CACHE"
"$KILN" system binfmt --install >/dev/null

# Debian's packages, for both architectures.
if ! ls "$CACHE"/golang-1.19-go_*_arm64.deb >/dev/null 2>&1; then
  dpkg --print-foreign-architectures | grep -qx arm64 || dpkg --add-architecture arm64
  apt-get update -qq
  (cd "$CACHE" && apt-get download -qq golang-1.19-go golang-1.19-go:arm64 golang-1.19-src \
    libc6 libc6:arm64 busybox-static busybox-static:arm64 2>&1 | grep -v '^W:' || true)
fi

# One root filesystem per architecture: busybox, libc, the Go toolchain.
for arch in amd64 arm64; do
  root=$WORK/rootfs-$arch
  mkdir -p "$root"
  for p in golang-1.19-go libc6 busybox-static; do
    dpkg-deb -x "$(ls "$CACHE"/${p}_*_${arch}.deb)" "$root"
  done
  dpkg-deb -x "$(ls "$CACHE"/golang-1.19-src_*_all.deb)" "$root"
  mkdir -p "$root/usr/bin" "$root/tmp"
  ln -sf /usr/lib/go-1.19/bin/go "$root/usr/bin/go"
  for a in sh uname echo cat sha256sum seq; do ln -sf /bin/busybox "$root/bin/$a"; done
  if [ "$arch" = amd64 ]; then
    # The other architecture's standard library compiled too, as a cross-compiling toolchain
    # image (or a warm GOCACHE mount) has it: the cross row then times the build, not
    # compiling Go's std for arm64 from nothing on every run.
    GOROOT=$root/usr/lib/go-1.19 GOARCH=arm64 CGO_ENABLED=0 GOCACHE=$WORK/gocache \
      "$root/usr/lib/go-1.19/bin/go" install std
  fi
  tar -C "$root" -cf "$WORK/rootfs-$arch.tar" .
done

# The base images: kiln's store, and a registry buildah pulls them from.
export KILN_ROOT=$WORK/kiln-store
for arch in amd64 arm64; do
  "$KILN" import --platform "linux/$arch" -c 'ENV PATH=/usr/bin:/bin' \
    -c 'ENV GOCACHE=/tmp/gocache' -c 'ENV CGO_ENABLED=0' \
    "$WORK/rootfs-$arch.tar" "bench/go:$arch" >/dev/null
done
. "$HERE/lib/registry.sh"
start_bench_registry
BASE=$REG/bench/go:1.19
"$KILN" manifest create "$BASE" bench/go:amd64 bench/go:arm64 >/dev/null 2>&1
"$KILN" push -q "$BASE" >/dev/null
BUILDAH="buildah --root $WORK/buildah --runroot $WORK/buildah-run --storage-driver overlay"
for arch in amd64 arm64; do
  $BUILDAH pull -q --tls-verify=false --platform "linux/$arch" "$BASE" >/dev/null
done

# The workloads.
mkdir -p "$WORK/ctx"
cat >"$WORK/ctx/main.go" <<'EOF'
package main

import (
	"fmt"
	"runtime"
)

func main() { fmt.Printf("hello from %s/%s\n", runtime.GOOS, runtime.GOARCH) }
EOF
cat >"$WORK/ctx/cross.Dockerfile" <<EOF
FROM --platform=\$BUILDPLATFORM $BASE AS build
ARG TARGETARCH
WORKDIR /src
COPY main.go .
RUN GOARCH=\$TARGETARCH go build -o /hello main.go
FROM scratch
COPY --from=build /hello /hello
ENTRYPOINT ["/hello"]
EOF
cat >"$WORK/ctx/emulated.Dockerfile" <<EOF
FROM $BASE AS build
WORKDIR /src
COPY main.go .
RUN go build -o /hello main.go
FROM scratch
COPY --from=build /hello /hello
ENTRYPOINT ["/hello"]
EOF
cat >"$WORK/ctx/shell.Dockerfile" <<EOF
FROM $BASE
RUN for i in \$(seq 1 300); do echo "\$i \$(uname -m)" | sha256sum; done > /sums && mkdir -p /app && cp /sums /app/
EOF

median() { jq -r '.results[0].median*1000|round/1000' "$1" 2>/dev/null; }
time_it() { # name command
  local j=$WORK/results/$1.json
  if hyperfine --style none --runs "$RUNS" --export-json "$j" "$2" >"$WORK/results/$1.log" 2>&1; then
    median "$j"
  else
    echo FAIL
  fi
}

printf '%-10s %10s %10s %8s\n' workload kiln buildah ratio
for w in cross emulated shell; do
  k=$(time_it "kiln-$w" "$KILN build -q --no-cache --platform linux/amd64,linux/arm64 -t bench/$w:multi -f $WORK/ctx/$w.Dockerfile $WORK/ctx")
  b=$(time_it "buildah-$w" "$BUILDAH build -q --no-cache --layers=false --tls-verify=false --platform linux/amd64,linux/arm64 --manifest bench-$w-\$(date +%s%N) -f $WORK/ctx/$w.Dockerfile $WORK/ctx")
  ratio=$(python3 -c "print(f'{$k/$b:.2f}x')" 2>/dev/null || echo "-")
  printf '%-10s %9ss %9ss %8s\n' "$w" "$k" "$b" "$ratio"
done

# What each built runs where it should (the arm64 image under QEMU).
for w in cross emulated; do
  for p in linux/amd64 linux/arm64; do
    printf '%s %s: ' "$w" "$p"
    "$KILN" run --rm --platform "$p" "bench/$w:multi"
  done
done
