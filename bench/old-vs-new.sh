#!/usr/bin/env bash
# Times the kiln of this working tree against the kiln of an earlier commit, side by side in one
# hyperfine run, on builds that go through every part of the build engine: 2,000 ENV lines and a
# RUN (the dispatch of many instructions), and a COPY of 300 files with WORKDIR, LABEL and CMD;
# each warm (everything cached) and with --no-cache. A refactoring of the engine must show no
# slowdown here. Needs root (RUN steps run in the sandbox) and hyperfine.
#
#   bash bench/old-vs-new.sh REV       # e.g. bash bench/old-vs-new.sh HEAD~5
set -euo pipefail
rev=${1:?usage: old-vs-new.sh REV}
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/kiln-old-vs-new.XXXXXX)
trap 'git -C "$repo" worktree remove --force "$work/old" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT

git -C "$repo" worktree add -q "$work/old" "$rev"
(cd "$work/old" && CARGO_TARGET_DIR="$work/old-target" cargo build --release -q)
(cd "$repo" && cargo build --release -q)
old="$work/old-target/release/kiln"
new="$repo/target/release/kiln"

mkdir -p "$work/envs" "$work/copy"
{
  echo "FROM kiln.local/busybox"
  for i in $(seq 1 2000); do echo "ENV V$i=value$i"; done
  echo "RUN echo done"
} >"$work/envs/Dockerfile"
printf 'FROM kiln.local/busybox\nCOPY . /app\nRUN ls /app | wc -l > /count\nWORKDIR /app\nLABEL a=b\nCMD ["sh"]\n' \
  >"$work/copy/Dockerfile"
for i in $(seq 1 300); do echo "file $i" >"$work/copy/f$i.txt"; done

for b in old new; do
  "${!b}" --root "$work/store-$b" load -i "$repo/testdata/base/busybox-oci" >/dev/null
  for ctx in envs copy; do "${!b}" --root "$work/store-$b" build -q -t "$ctx" "$work/$ctx" >/dev/null; done
done

for ctx in envs copy; do
  for flags in "" "--no-cache"; do
    hyperfine -N -w 2 -r 15 \
      -n "old $ctx ${flags:-warm}" "$old --root $work/store-old build -q $flags -t $ctx $work/$ctx" \
      -n "new $ctx ${flags:-warm}" "$new --root $work/store-new build -q $flags -t $ctx $work/$ctx"
  done
done
