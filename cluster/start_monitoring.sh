#!/usr/bin/env bash
# Prometheus (and Grafana, when installed) on loopback, watching a local weaksound run.
#
#   cluster/local_multinode.sh start         # a Ray cluster on this machine (optional)
#   cluster/start_monitoring.sh start        # Prometheus on http://127.0.0.1:9090 (+ Grafana :3000)
#   cluster/start_monitoring.sh status
#   cluster/start_monitoring.sh stop
#
# What gets scraped (static loopback targets, see cluster/prometheus/prometheus.yml):
# - Ray's metrics export ports: taken from $WEAKSOUND_RAY_METRICS_TARGETS, else from the env file
#   written by cluster/local_multinode.sh, else 127.0.0.1:8080,127.0.0.1:8081;
# - processes serving runtime.telemetry with backend "prometheus" (e.g. `weaksound prep
#   --metrics-port 9105`): $WEAKSOUND_APP_TARGETS [127.0.0.1:9105].
# Rules: cluster/prometheus/rules.yml. The rendered config is checked with `promtool check config`
# before Prometheus starts.
#
# Prometheus: Debian's package (`apt-get install -y --no-install-recommends prometheus`) or any
# `prometheus` on PATH ($PROMETHEUS overrides). No systemd unit is used; the process runs in the
# background with its pid in the state folder, and `stop` ends only that process.
# Grafana (optional): if `grafana` or `grafana-server` is on PATH (Grafana's own apt repo or
# tarball; Debian does not package it) it is started with a provisioning folder that adds the
# Prometheus data source and the dashboards of cluster/grafana. Otherwise the script prints the
# command to run Grafana in a container with the same provisioning.
#
# Settings (environment variables, defaults in brackets):
#   WEAKSOUND_MONITORING_STATE  state folder [${TMPDIR:-/tmp}/weaksound-monitoring]
#   WEAKSOUND_RAY_STATE         where local_multinode.sh keeps its env file [${TMPDIR:-/tmp}/weaksound-ray]
#   WEAKSOUND_PROMETHEUS_PORT   [9090]      WEAKSOUND_GRAFANA_PORT [3000]
#   WEAKSOUND_SCRAPE_INTERVAL   [5s]        WEAKSOUND_GRAFANA [auto]: "no" skips Grafana
#   PYTHON                      [.venv/bin/python if present, else python3] (needs PyYAML)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
state="${WEAKSOUND_MONITORING_STATE:-${TMPDIR:-/tmp}/weaksound-monitoring}"
ray_state="${WEAKSOUND_RAY_STATE:-${TMPDIR:-/tmp}/weaksound-ray}"
prom_port="${WEAKSOUND_PROMETHEUS_PORT:-9090}"
grafana_port="${WEAKSOUND_GRAFANA_PORT:-3000}"
interval="${WEAKSOUND_SCRAPE_INTERVAL:-5s}"
app_targets="${WEAKSOUND_APP_TARGETS-127.0.0.1:9105}"
if [ -z "${PYTHON:-}" ]; then
    if [ -x "$root/.venv/bin/python" ]; then PYTHON="$root/.venv/bin/python"; else PYTHON=python3; fi
fi
PROMETHEUS="${PROMETHEUS:-prometheus}"

log() { echo "[monitoring] $*"; }
alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

ray_targets() {
    if [ -n "${WEAKSOUND_RAY_METRICS_TARGETS:-}" ]; then
        echo "$WEAKSOUND_RAY_METRICS_TARGETS"
    elif [ -f "$ray_state/env" ] && grep -q '^WEAKSOUND_RAY_METRICS_TARGETS=' "$ray_state/env"; then
        sed -n 's/^WEAKSOUND_RAY_METRICS_TARGETS=//p' "$ray_state/env"
    else
        echo "127.0.0.1:8080,127.0.0.1:8081"
    fi
}

start_prometheus() {
    if ! command -v "$PROMETHEUS" >/dev/null 2>&1; then
        log "error: prometheus not found. Install it: apt-get install -y --no-install-recommends prometheus"
        exit 1
    fi
    local targets
    targets="$(ray_targets)"
    "$PYTHON" "$root/cluster/monitoring.py" prometheus --out "$state" --ray-targets "$targets" \
        --app-targets "$app_targets" --scrape-interval "$interval"
    if command -v promtool >/dev/null 2>&1; then
        promtool check config "$state/prometheus.yml" >"$state/logs/promtool.log" 2>&1 \
            || { cat "$state/logs/promtool.log" >&2; exit 1; }
    fi
    mkdir -p "$state/data"
    setsid "$PROMETHEUS" --config.file="$state/prometheus.yml" --storage.tsdb.path="$state/data" \
        --web.listen-address="127.0.0.1:$prom_port" --web.enable-lifecycle \
        >"$state/logs/prometheus.log" 2>&1 </dev/null &
    echo $! >"$state/prometheus.pid"
    local i
    for i in $(seq 1 60); do
        alive "$state/prometheus.pid" || { tail -n 20 "$state/logs/prometheus.log" >&2; exit 1; }
        if "$PYTHON" -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1], timeout=2)" \
            "http://127.0.0.1:$prom_port/-/ready" >/dev/null 2>&1; then
            log "Prometheus http://127.0.0.1:$prom_port  (Ray targets $targets; app targets ${app_targets:-none})"
            return 0
        fi
        sleep 0.5
    done
    log "error: Prometheus not ready after 30 s; see $state/logs/prometheus.log"
    exit 1
}

start_grafana() {
    local bin=""
    if [ "${WEAKSOUND_GRAFANA:-auto}" = "no" ]; then return 0; fi
    "$PYTHON" "$root/cluster/monitoring.py" grafana --out "$state/grafana/provisioning" \
        --prometheus-url "http://127.0.0.1:$prom_port"
    if command -v grafana >/dev/null 2>&1; then bin="grafana server"
    elif command -v grafana-server >/dev/null 2>&1; then bin="grafana-server"
    fi
    if [ -z "$bin" ]; then
        log "Grafana not installed. To view the dashboards, either import cluster/grafana/*.json into"
        log "your Grafana, or run it in a container with the generated provisioning:"
        "$PYTHON" "$root/cluster/monitoring.py" grafana --out "$state/grafana/container" \
            --prometheus-url "http://127.0.0.1:$prom_port" --dashboards /var/lib/grafana/dashboards/weaksound
        log "  docker run --rm --network host -e GF_SERVER_HTTP_ADDR=127.0.0.1 -e GF_SERVER_HTTP_PORT=$grafana_port \\"
        log "    -v $state/grafana/container:/etc/grafana/provisioning:ro \\"
        log "    -v $root/cluster/grafana:/var/lib/grafana/dashboards/weaksound:ro grafana/grafana"
        return 0
    fi
    local home="${GRAFANA_HOME:-/usr/share/grafana}"
    mkdir -p "$state/grafana/data" "$state/grafana/logs" "$state/grafana/plugins"
    GF_PATHS_PROVISIONING="$state/grafana/provisioning" GF_PATHS_DATA="$state/grafana/data" \
    GF_PATHS_LOGS="$state/grafana/logs" GF_PATHS_PLUGINS="$state/grafana/plugins" \
    GF_SERVER_HTTP_ADDR=127.0.0.1 GF_SERVER_HTTP_PORT="$grafana_port" \
        setsid $bin --homepath "$home" >"$state/logs/grafana.log" 2>&1 </dev/null &
    echo $! >"$state/grafana.pid"
    log "Grafana http://127.0.0.1:$grafana_port (admin/admin on first login; folder 'weaksound')"
}

stop_one() {  # stop_one PIDFILE
    local pid i
    [ -f "$1" ] || return 0
    pid="$(cat "$1")"
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -KILL -- "-$pid" 2>/dev/null || true
    rm -f "$1"
}

case "${1:-}" in
    start)
        mkdir -p "$state/logs"
        if alive "$state/prometheus.pid"; then
            log "already running (pid $(cat "$state/prometheus.pid")); '$0 stop' first"; exit 1
        fi
        start_prometheus
        start_grafana
        ;;
    stop)
        stop_one "$state/grafana.pid"
        stop_one "$state/prometheus.pid"
        log "stopped"
        ;;
    status)
        for name in prometheus grafana; do
            if alive "$state/$name.pid"; then log "$name running (pid $(cat "$state/$name.pid"))"
            else log "$name not running"; fi
        done
        ;;
    *) echo "usage: $0 start|stop|status (settings: see the header of this file)" >&2; exit 2 ;;
esac
