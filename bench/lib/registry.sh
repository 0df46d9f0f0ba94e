# Sourced by the bench scripts: Debian's docker-registry on a free loopback port, its storage
# under $WORK/registry, stopped when the script exits. Sets REG (127.0.0.1:PORT).
start_bench_registry() {
  local port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  REG=127.0.0.1:$port
  cat >"$WORK/registry.yml" <<YML
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $WORK/registry}}
http: {addr: $REG}
YML
  docker-registry serve "$WORK/registry.yml" >"$WORK/registry.log" 2>&1 &
  BENCH_REGISTRY_PID=$!
  trap 'kill $BENCH_REGISTRY_PID 2>/dev/null' EXIT
  for _ in $(seq 50); do (echo >/dev/tcp/127.0.0.1/"$port") 2>/dev/null && return; sleep 0.1; done
  echo "docker-registry did not start (see $WORK/registry.log)" >&2
  exit 1
}
