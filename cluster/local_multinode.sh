#!/usr/bin/env bash
# A multi-node Ray cluster on one machine: one head plus N worker nodes, each its own raylet with
# its own metrics export port. Used by the tests to run prep and training across two Ray nodes, and
# by anyone who wants to try `ray job submit` and the monitoring stack without a cloud account.
#
#   cluster/local_multinode.sh start     # head + $WEAKSOUND_RAY_WORKERS worker nodes (default 1)
#   cluster/local_multinode.sh status    # `ray status` of that cluster
#   cluster/local_multinode.sh stop      # stops exactly the nodes this script started
#
# After `start`:
#   export RAY_ADDRESS=http://127.0.0.1:8265        # printed by start; `ray job submit` uses it
#   ray job submit --working-dir . -- python trainer/main.py ...
#   cluster/start_monitoring.sh start                # Prometheus scraping the metrics ports below
#
# Every node runs `ray start --block` in its own process group, and `stop` signals only those
# (their pids are in the state folder): other Ray instances on the machine are left alone, unlike
# `ray stop`, which stops every Ray process of the user.
#
# Access: the dashboard / job API is bound to 127.0.0.1, but the GCS, the raylets, the object
# managers and the Ray client server listen on the machine's routable address (Ray maps a loopback
# node address back to it), so this cluster is reachable from the network. It therefore runs with
# Ray's token authentication: `start` creates ~/.ray/auth_token (64 hex digits, mode 0600) when no
# token is configured (RAY_AUTH_TOKEN / RAY_AUTH_TOKEN_PATH / that file), and every client on this
# machine (`ray job submit`, `ray status`, ray.init) finds it there. Elsewhere pass the same token:
#   RAY_AUTH_MODE=token RAY_AUTH_TOKEN="$(cat ~/.ray/auth_token)" ray job submit ...
#
# Settings (environment variables, defaults in brackets):
#   WEAKSOUND_RAY_STATE          state folder: pid files, logs, env file, Ray temp dir
#                                [${TMPDIR:-/tmp}/weaksound-ray]; keep it short (Unix socket paths
#                                inside must stay under 107 characters)
#   WEAKSOUND_RAY_WORKERS        extra worker nodes [1]
#   WEAKSOUND_RAY_HEAD_CPUS      logical CPUs of the head [1] (a cloud head uses 0)
#   WEAKSOUND_RAY_WORKER_CPUS    logical CPUs per worker node [1]
#   WEAKSOUND_RAY_OBJECT_STORE_MB  object store per node, MiB [512]
#   WEAKSOUND_RAY_PORT           GCS port of the head [6379]
#   WEAKSOUND_RAY_DASHBOARD_PORT dashboard / job API port, bound to 127.0.0.1 [8265]
#   WEAKSOUND_RAY_CLIENT_PORT    Ray client server port [10001]
#   WEAKSOUND_RAY_METRICS_PORT   metrics export port of the head; worker i uses this + i [8080]
#   WEAKSOUND_RAY_AGENT_PORT     dashboard agent HTTP port of the head; worker i uses this + i [52365]
#   RAY                          the ray executable [.venv/bin/ray if present, else ray on PATH]
#   RAY_AUTH_MODE                [token]: `disabled` turns authentication off (tests on a private
#                                machine only: anyone who reaches the ports can then run code)
#   RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S  drain time on stop [5] (Ray's default is 30)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
state="${WEAKSOUND_RAY_STATE:-${TMPDIR:-/tmp}/weaksound-ray}"
workers="${WEAKSOUND_RAY_WORKERS:-1}"
head_cpus="${WEAKSOUND_RAY_HEAD_CPUS:-1}"
worker_cpus="${WEAKSOUND_RAY_WORKER_CPUS:-1}"
store_mb="${WEAKSOUND_RAY_OBJECT_STORE_MB:-512}"
gcs_port="${WEAKSOUND_RAY_PORT:-6379}"
dashboard_port="${WEAKSOUND_RAY_DASHBOARD_PORT:-8265}"
client_port="${WEAKSOUND_RAY_CLIENT_PORT:-10001}"
metrics_port="${WEAKSOUND_RAY_METRICS_PORT:-8080}"
agent_port="${WEAKSOUND_RAY_AGENT_PORT:-52365}"
if [ -z "${RAY:-}" ]; then
    if [ -x "$root/.venv/bin/ray" ]; then RAY="$root/.venv/bin/ray"; else RAY="ray"; fi
fi
export RAY_AUTH_MODE="${RAY_AUTH_MODE:-token}"
export RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="${RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S:-5}"

log() { echo "[local_multinode] $*"; }

alive() {  # alive PIDFILE: the recorded `ray start --block` process still runs
    [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

active_nodes() {  # number of alive nodes according to the autoscaler status
    timeout 20 "$RAY" status --address "127.0.0.1:$gcs_port" 2>/dev/null \
        | awk '/^Active:/{on=1; next} /^(Pending|Idle):/{on=0} on && /node_/{n++} END{print n+0}'
}

start_node() {  # start_node NAME ARGS...: one `ray start --block` in its own session
    local name="$1"; shift
    setsid "$RAY" start --block --disable-usage-stats --object-store-memory=$((store_mb * 1024 * 1024)) \
        --min-worker-port=0 --max-worker-port=0 "$@" >"$state/logs/$name.log" 2>&1 </dev/null &
    echo $! >"$state/$name.pid"
}

fail_with_log() {  # fail_with_log NAME MESSAGE
    log "error: $2; last lines of $state/logs/$1.log:"
    tail -n 30 "$state/logs/$1.log" >&2 || true
    stop_all
    exit 1
}

stop_one() {  # stop_one PIDFILE: SIGTERM the node (Ray drains it), then SIGKILL its process group
    local pidfile="$1" pid i
    pid="$(cat "$pidfile")"
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for i in $(seq 1 $(( ${RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S%.*} * 2 + 30 ))); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.5
        done
    fi
    # anything left in the node's own process group (raylet, workers, agents)
    kill -KILL -- "-$pid" 2>/dev/null || true
    rm -f "$pidfile"
}

stop_all() {
    local f
    shopt -s nullglob
    for f in "$state"/worker-*.pid; do stop_one "$f"; done  # workers first: they drain quickly
    if [ -f "$state/head.pid" ]; then stop_one "$state/head.pid"; fi
    shopt -u nullglob
    return 0
}

ensure_token() {  # a token for token auth, unless one is configured already
    [ "$RAY_AUTH_MODE" = token ] || return 0
    if [ -n "${RAY_AUTH_TOKEN:-}" ] || [ -n "${RAY_AUTH_TOKEN_PATH:-}" ]; then return 0; fi
    local file="$HOME/.ray/auth_token"
    [ -s "$file" ] && return 0
    (umask 077; mkdir -p "$HOME/.ray" && set -o noclobber && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$file") \
        || { log "error: could not create $file"; exit 1; }
    log "created a Ray auth token in $file (mode 0600)"
}

cmd_start() {
    mkdir -p "$state/logs" "$state/tmp"
    ensure_token
    if alive "$state/head.pid"; then
        log "already running (head pid $(cat "$state/head.pid")); run '$0 stop' first"
        exit 1
    fi
    log "head: GCS :$gcs_port, dashboard http://127.0.0.1:$dashboard_port, metrics :$metrics_port, auth $RAY_AUTH_MODE"
    start_node head --head --port="$gcs_port" --num-cpus="$head_cpus" \
        --dashboard-host=127.0.0.1 --dashboard-port="$dashboard_port" --ray-client-server-port="$client_port" \
        --metrics-export-port="$metrics_port" --dashboard-agent-listen-port="$agent_port" \
        --temp-dir="$state/tmp"
    local i up=0
    for i in $(seq 1 120); do
        alive "$state/head.pid" || fail_with_log head "the head exited"
        if [ "$(active_nodes)" -ge 1 ]; then up=1; break; fi
        sleep 1
    done
    [ "$up" = 1 ] || fail_with_log head "the head did not come up within 120 s"

    local ports="127.0.0.1:$metrics_port"
    for i in $(seq 1 "$workers"); do
        log "worker $i: metrics :$((metrics_port + i))"
        start_node "worker-$i" --address="127.0.0.1:$gcs_port" --num-cpus="$worker_cpus" \
            --metrics-export-port=$((metrics_port + i)) --dashboard-agent-listen-port=$((agent_port + i))
        ports="$ports,127.0.0.1:$((metrics_port + i))"
    done
    up=0
    for i in $(seq 1 120); do
        for f in "$state"/worker-*.pid; do
            if ! alive "$f"; then fail_with_log "$(basename "$f" .pid)" "a worker node exited"; fi
        done
        if [ "$(active_nodes)" -ge $((workers + 1)) ]; then up=1; break; fi
        sleep 1
    done
    [ "$up" = 1 ] || fail_with_log head "only $(active_nodes) of $((workers + 1)) nodes joined within 120 s"

    # what the monitoring script and the tests read
    cat >"$state/env" <<EOF
RAY_ADDRESS=http://127.0.0.1:$dashboard_port
RAY_AUTH_MODE=$RAY_AUTH_MODE
WEAKSOUND_RAY_GCS=127.0.0.1:$gcs_port
WEAKSOUND_RAY_METRICS_TARGETS=$ports
EOF
    log "up: $((workers + 1)) nodes. Next:"
    log "  export RAY_ADDRESS=http://127.0.0.1:$dashboard_port RAY_AUTH_MODE=$RAY_AUTH_MODE"
    log "  ray job submit --working-dir . -- python trainer/main.py ..."
    log "  WEAKSOUND_RAY_METRICS_TARGETS=$ports cluster/start_monitoring.sh start"
}

cmd_status() {
    if ! alive "$state/head.pid"; then log "not running (state $state)"; exit 1; fi
    "$RAY" status --address "127.0.0.1:$gcs_port"
}

case "${1:-}" in
    start) cmd_start ;;
    stop) if [ -d "$state" ]; then stop_all; fi; log "stopped" ;;
    status) cmd_status ;;
    *) echo "usage: $0 start|stop|status (settings: see the header of this file)" >&2; exit 2 ;;
esac
