#!/usr/bin/env bash
# Builds each ../shared/bench workload with kiln and with BuildKit (dockerd 20.10) and compares
# the results: every file of the final root filesystem (path, type, mode, owner, size, content
# sha256, link target; not mtimes) and the image config (Env, Cmd, Entrypoint, WorkingDir, User,
# Labels, ExposedPorts). Prints one line per workload and exits non-zero on any difference.
#
#   bash bench/same-as-buildkit.sh                 # as root, after ../shared/bench/peers-setup.sh
#   WORKLOADS="small multistage" bash bench/same-as-buildkit.sh
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
SHARED=${SHARED:-$(cd "$REPO/../shared/bench" && pwd)}
KILN=${KILN:-$REPO/target/release/kiln}
DOCKER=${DOCKER:-/usr/bin/docker}
WORK=${WORK:-/tmp/kiln-same}
WORKLOADS=${WORKLOADS:-"small multistage incremental bigctx"}
export DOCKER_BUILDKIT=1
[ -x "$KILN" ] || (cd "$REPO" && cargo build --release -q)
rm -rf "$WORK" && mkdir -p "$WORK"
"$KILN" --root "$WORK/store" load -i "$SHARED/busybox-oci.tar" >/dev/null
for w in $WORKLOADS; do
  d="$SHARED/workloads/$w"
  [ -x "$d/gen.sh" ] && [ ! -e "$d/.generated" ] && (cd "$d" && bash gen.sh >/dev/null) || true
  for f in "$d/bench-edit.txt" "$d/files/bench-edit.txt"; do [ -d "$(dirname "$f")" ] && [ ! -e "$f" ] && echo edit > "$f"; done
  "$KILN" --root "$WORK/store" build -q -t "same-$w" -o "type=tar,dest=$WORK/$w-kiln.tar" "$d" >/dev/null
  "$KILN" --root "$WORK/store" build -q -t "same-$w" "$d" >/dev/null
  "$DOCKER" build -q -t "same-$w" "$d" >/dev/null
  "$DOCKER" build -q -o "type=tar,dest=$WORK/$w-bk.tar" "$d" >/dev/null
  "$KILN" --root "$WORK/store" inspect "same-$w" >"$WORK/$w-kiln.json"
  "$DOCKER" inspect "same-$w" >"$WORK/$w-bk.json"
  python3 - "$w" "$WORK" <<'PY'
import hashlib, json, sys, tarfile
w, work = sys.argv[1], sys.argv[2]
def files(path):
    out = {}
    with tarfile.open(path) as t:
        for m in t:
            name = m.name.lstrip("./").rstrip("/")
            if not name:
                continue
            digest = hashlib.sha256(t.extractfile(m).read()).hexdigest() if m.isfile() else ""
            out[name] = (m.type, oct(m.mode & 0o7777), m.uid, m.gid, m.size if m.isfile() else 0, digest, m.linkname)
    return out
def config(path):
    c = json.load(open(path))[0]["Config"]
    return {k: c.get(k) or None for k in ["Env", "Cmd", "Entrypoint", "WorkingDir", "User", "Labels", "ExposedPorts"]}
k, b = files(f"{work}/{w}-kiln.tar"), files(f"{work}/{w}-bk.tar")
diffs = [p for p in sorted(set(k) | set(b)) if k.get(p) != b.get(p)]
ck, cb = config(f"{work}/{w}-kiln.json"), config(f"{work}/{w}-bk.json")
cfg = [f for f in ck if ck[f] != cb[f]]
print(f"{w}: {len(k)} paths, {len(diffs)} differ; config fields differing: {cfg or 'none'}")
for p in diffs[:15]:
    print(f"  {p}: kiln {k.get(p)} buildkit {b.get(p)}")
for f in cfg:
    print(f"  {f}: kiln {ck[f]} buildkit {cb[f]}")
sys.exit(1 if diffs or cfg else 0)
PY
done
