# Sourced by the scripts beside it (after they cd to the checkout): what they all need.

# A free TCP port on loopback, for a process the script starts.
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# The commit the binaries are built from, as a report records it. Call it right after the
# build: HEAD may move while a long run goes on.
commit_label() {
    echo "$(git rev-parse --short=12 HEAD)$(git diff --quiet HEAD -- . ':!results' || echo ' (with uncommitted changes)')"
}

# Waits (up to 5 s) until BASE-URL/healthz answers; fails naming the URL.
wait_healthy() {
    for _ in $(seq 50); do curl -sf "$1/healthz" >/dev/null && return 0; sleep 0.1; done
    echo "no answer from $1/healthz in 5 s" >&2
    return 1
}

# Starts a private redis-server (no persistence) on a free loopback port and waits until it
# answers: up to 5 s, or 30 s under a WRAPPER command (valgrind starts it slowly). Sets `redis`
# (its pid, or the wrapper's; the caller's EXIT trap kills it) and `redis_port`.
# Usage: start_redis LOG [WRAPPER...]
start_redis() {
    local log=$1 tries=50
    shift
    [ $# -eq 0 ] || tries=300
    redis_port=$(port)
    "$@" redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no >"$log" 2>&1 &
    redis=$!
    for _ in $(seq "$tries"); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && return 0; sleep 0.1; done
    echo "redis-server on port $redis_port did not answer in $((tries / 10)) s (log: $log)" >&2
    return 1
}

# Starts a service on two free loopback ports and waits until it answers. Sets `service` (its
# pid; the caller's EXIT trap kills it), `grpc_port` and `http_port`.
# Usage: start_service LOG [--binary PATH] [RATELIMITER-FLAGS...]
start_service() {
    local log=$1 binary=target/release/ratelimiter
    shift
    if [ "${1:-}" = --binary ]; then binary=$2; shift 2; fi
    grpc_port=$(port); http_port=$(port)
    "$binary" --grpc-addr "127.0.0.1:$grpc_port" --http-addr "127.0.0.1:$http_port" "$@" 2>"$log" &
    service=$!
    wait_healthy "http://127.0.0.1:$http_port"
}

# CPU clock ticks (user + system) PID has used so far; divide by `getconf CLK_TCK` for seconds.
process_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

# One value from a run's summary.json: a Python expression over `s`, the parsed summary.
# Usage: summary_value DIR EXPRESSION   e.g. summary_value "$work/run1" 'round(s["throughput_rps"])'
summary_value() {
    python3 -c 'import json, sys; s = json.load(open(sys.argv[1] + "/summary.json")); print(eval(sys.argv[2]))' "$1" "$2"
}
