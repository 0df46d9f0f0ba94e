#!/usr/bin/env bash
# Times kiln against BuildKit on COPY-only variants of the benchmark kit's workloads (the build
# engine alone, without RUN steps), with the kit's compare.sh, so both build the same
# Dockerfiles in the same run and the ratios hold on a noisy machine.
#
#   bash bench/copy-only.sh                     # after ../shared/bench/peers-setup.sh, once
#   MODES="cold warm" WORKLOADS="small" RUNS=5 bash bench/copy-only.sh
#
# The variants: every RUN instruction (with its continuation lines) is removed; in `multistage`
# each stage gets a COPY producing the /out/sN file its RUN produced, so COPY --from still works.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
SHARED=${SHARED:-$(cd "$REPO/../shared/bench" && pwd)}
KILN=${KILN:-$REPO/target/release/kiln}
WORK=${WORK:-/tmp/kiln-bench-copy}
[ -x "$KILN" ] || (cd "$REPO" && cargo build --release -q)
command -v hyperfine >/dev/null || { echo "hyperfine missing: run $SHARED/peers-setup.sh first" >&2; exit 1; }

rm -rf "$WORK/workloads" "$WORK/results"
mkdir -p "$WORK"
cp -r "$SHARED/workloads" "$WORK/workloads"
for df in "$WORK"/workloads/*/Dockerfile; do
  python3 - "$df" <<'PY'
import re, sys
path = sys.argv[1]
out, skip = [], False
for line in open(path).read().split("\n"):
    if skip:
        skip = line.rstrip().endswith("\\")
        continue
    if re.match(r"\s*RUN\b", line, re.I):
        skip = line.rstrip().endswith("\\")
        continue
    out.append(line)
    m = re.match(r"\s*FROM\s+\S+\s+AS\s+(s\d+)\s*$", line, re.I)
    if m:  # multistage: the file the stage's RUN used to produce
        out.append(f"COPY Dockerfile /out/{m.group(1)}")
open(path, "w").write("\n".join(out))
PY
done
KILN="$KILN" WORK="$WORK" PEERS="${PEERS:-docker-bk}" bash "$SHARED/compare.sh"
