#!/usr/bin/env bash
# Published ports, side by side in one run, kiln against docker (dockerd, its default bridge and
# userland proxy) and podman (netavark):
#   1. start: `run -d -p 127.0.0.1:PORT:80 IMAGE httpd` until the port answers an HTTP request
#      (then the container is removed, outside the timing); the median of RUNS starts;
#   2. throughput: requests per second through the published port from the host's loopback
#      (`ab -k -n REQUESTS -c 32`, busybox httpd serving a small file), the median of 3.
#
#   bash bench/ports.sh            # as root, after ../shared/bench/peers-setup.sh, once
#   RUNS=20 REQUESTS=50000 bash bench/ports.sh
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
SHARED=${SHARED:-$(cd "$REPO/../shared/bench" && pwd)}
KILN=${KILN:-$REPO/target/release/kiln}
WORK=${WORK:-/tmp/kiln-bench-ports}
RUNS=${RUNS:-10}
REQUESTS=${REQUESTS:-20000}
DOCKER=${DOCKER:-/usr/bin/docker}
[ -x "$KILN" ] || (cd "$REPO" && cargo build --release -q)
for t in ab podman python3; do
  command -v $t >/dev/null || { echo "$t missing: run $SHARED/peers-setup.sh first (ab: apache2-utils)" >&2; exit 1; }
done
"$DOCKER" info >/dev/null 2>&1 || { echo "dockerd is not running: run $SHARED/peers-setup.sh" >&2; exit 1; }
rm -rf "$WORK" && mkdir -p "$WORK"
"$KILN" --root "$WORK/store" load -i "$SHARED/busybox-oci.tar" >/dev/null
"$DOCKER" image inspect localhost/busybox >/dev/null 2>&1 || "$DOCKER" load -i "$SHARED/busybox-oci.tar" >/dev/null
podman image exists localhost/busybox || podman load -i "$SHARED/busybox-oci.tar" >/dev/null

SERVE='mkdir -p /w && echo hello > /w/index.html && exec httpd -f -p 80 -h /w'
PORT=18480
now() { date +%s%N; }
# One HTTP request to the published port, in bash itself (no process started per try): true
# once a status line comes back. docker's proxy accepts connections before the server runs,
# so only an answer counts.
answers() {
  local line
  exec 3<>"/dev/tcp/127.0.0.1/$PORT" 2>/dev/null || return 1
  printf 'GET / HTTP/1.0\r\n\r\n' >&3 2>/dev/null || { exec 3<&-; return 1; }
  IFS= read -r -t 2 line <&3 || true
  exec 3<&-
  [[ $line == HTTP/1.* ]]
}
# Seconds from `run -d` to the first answer on the published port.
start_once() { # tool-command-prefix
  local t0 t1
  t0=$(now)
  "$@" run -d --name kiln-bench-web -p 127.0.0.1:$PORT:80 localhost/busybox sh -c "$SERVE" >/dev/null
  until answers; do :; done
  t1=$(now)
  "$@" rm -f kiln-bench-web >/dev/null 2>&1
  echo "$(( (t1 - t0) / 1000 ))"
}
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
declare -A START RPS
for tool in kiln docker podman; do
  case $tool in
    kiln) cmd=("$KILN" --root "$WORK/store") ;;
    docker) cmd=("$DOCKER") ;;
    podman) cmd=(podman) ;;
  esac
  "${cmd[@]}" rm -f kiln-bench-web >/dev/null 2>&1 || true
  start_once "${cmd[@]}" >/dev/null # warm-up
  START[$tool]=$(for i in $(seq "$RUNS"); do start_once "${cmd[@]}"; done | median)
  "${cmd[@]}" run -d --name kiln-bench-web -p 127.0.0.1:$PORT:80 localhost/busybox sh -c "$SERVE" >/dev/null
  until answers; do :; done
  RPS[$tool]=$(for i in 1 2 3; do
    ab -q -k -n "$REQUESTS" -c 32 "http://127.0.0.1:$PORT/" 2>/dev/null | awk '/Requests per second/ {print $4}'
  done | median)
  "${cmd[@]}" rm -f kiln-bench-web >/dev/null 2>&1
done

python3 - "${START[kiln]}" "${START[docker]}" "${START[podman]}" "${RPS[kiln]}" "${RPS[docker]}" "${RPS[podman]}" <<'PY'
import sys
sk, sd, sp, rk, rd, rp = map(float, sys.argv[1:])
print("| measure | kiln | docker | podman | kiln/docker | kiln/podman |")
print("|---|---|---|---|---|---|")
print(f"| `run -d -p` until the port answers (ms) | {sk/1000:.0f} | {sd/1000:.0f} | {sp/1000:.0f} | {sk/sd:.2f} | {sk/sp:.2f} |")
print(f"| requests/s through the published port (loopback) | {rk:.0f} | {rd:.0f} | {rp:.0f} | {rk/rd:.2f} | {rk/rp:.2f} |")
PY
