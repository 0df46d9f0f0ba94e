#!/usr/bin/env bash
# A node-shaped project of 30,000 small files (1-8 KiB, about 147 MB, generated the same way
# every time; nothing generated is committed), built by kiln and by BuildKit (dockerd 20.10)
# side by side in one hyperfine run per mode:
#   warm  nothing changed since the last build;
#   touch one file's mtime changed;
#   edit  one file's content changed;
#   cold  empty cache (kiln: a fresh store holding only the base; BuildKit: pruned);
# then kiln's peak memory (max RSS, GNU time) on a warm build.
#
#   bash bench/big-context.sh          # as root, after the peers' setup script (SHARED=DIR: docs/benchmarks.md)
#   RUNS=5 MODES="warm touch" bash bench/big-context.sh
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
KILN=${KILN:-$REPO/target/release/kiln}
WORK=${WORK:-/tmp/kiln-bench-bigctx}
RUNS=${RUNS:-3}
MODES=${MODES:-"warm touch edit cold"}
DOCKER=${DOCKER:-/usr/bin/docker}
export DOCKER_BUILDKIT=1
[ -x "$KILN" ] || (cd "$REPO" && cargo build --release -q)
command -v hyperfine >/dev/null || { echo "hyperfine missing: run the peers' setup script" >&2; exit 1; }
mkdir -p "$WORK"
CTX=$WORK/ctx
if [ ! -f "$CTX/.generated" ]; then
  rm -rf "$CTX"
  python3 - "$CTX" <<'PY'
import os, random, sys
root = sys.argv[1]
rng = random.Random(30000)  # the same tree every time
words = [''.join(rng.choice('abcdefghijklmnopqrstuvwxyz') for _ in range(rng.randint(3, 9))) for _ in range(2000)]
os.makedirs(root)
for i in range(30000):
    d = os.path.join(root, "src", f"pkg{i % 300:03d}", f"mod{(i // 300) % 10}")
    os.makedirs(d, exist_ok=True)
    size = rng.randint(1024, 8192)
    text = []
    n = 0
    while n < size:
        w = rng.choice(words)
        text.append(w)
        n += len(w) + 1
    with open(os.path.join(d, f"file{i:05d}.js"), "w") as f:
        f.write(" ".join(text)[:size] + "\n")
with open(os.path.join(root, "package.json"), "w") as f:
    f.write('{"name": "bench", "version": "1.0.0"}\n')
with open(os.path.join(root, "Dockerfile"), "w") as f:
    f.write("FROM kiln.local/busybox\nWORKDIR /app\nCOPY package.json ./\nRUN echo installed > /deps\nCOPY . .\nRUN find . -type f | wc -l > /count\n")
open(os.path.join(root, ".generated"), "w").close()
PY
fi
echo "context: $(find "$CTX" -type f | wc -l) files, $(du -sh "$CTX" | cut -f1)"
R=$WORK/store
fresh="rm -rf $R && $KILN --root $R load -i $REPO/testdata/base/busybox-oci >/dev/null"
eval "$fresh"
$KILN --root "$R" save kiln.local/busybox -o "$WORK/busybox.tar"
$DOCKER load -i "$WORK/busybox.tar" >/dev/null
KB="$KILN --root $R build -q -t bigctx $CTX"
DB="$DOCKER build -q -t bigctx $CTX"
# Both warm before the timed runs.
$KB >/dev/null; $DB >/dev/null
EDIT=$CTX/src/pkg000/mod0/file00000.js
for m in $MODES; do
  case $m in
    warm)  prep="true" ;;
    touch) prep="touch $EDIT" ;;
    edit)  prep="echo edit-\$RANDOM >> $EDIT" ;;
    cold)  prep="" ;;
  esac
  if [ "$m" = cold ]; then
    hyperfine --runs "$RUNS" --export-json "$WORK/$m.json" \
      -n kiln --prepare "$fresh; sync" "$KB" \
      -n buildkit --prepare "$DOCKER rmi -f bigctx >/dev/null 2>&1; $DOCKER builder prune -af >/dev/null 2>&1; sync" "$DB" >/dev/null
  else
    hyperfine --runs "$RUNS" --export-json "$WORK/$m.json" \
      -n kiln --prepare "$prep" "$KB" -n buildkit --prepare "$prep" "$DB" >/dev/null
  fi
done
$KB >/dev/null
rss=$(/usr/bin/time -f %M $KB 2>&1 >/dev/null | tail -1)
python3 - "$WORK" "$MODES" "$rss" <<'PY'
import json, sys
work, modes, rss = sys.argv[1], sys.argv[2].split(), int(sys.argv[3])
print("| mode | kiln s | BuildKit s | kiln/BuildKit |")
print("|---|---|---|---|")
for m in modes:
    r = {x["command"]: x["median"] for x in json.load(open(f"{work}/{m}.json"))["results"]}
    print(f"| {m} | {r['kiln']:.3f} | {r['buildkit']:.3f} | {r['kiln'] / r['buildkit']:.2f} |")
print(f"\nkiln warm build peak memory: {rss / 1024:.1f} MiB (max RSS)")
PY
