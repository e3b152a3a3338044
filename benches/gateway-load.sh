#!/usr/bin/env bash
# The gateway under a burst of searches: one node of `agora-testnet` with 70 seeded releases
# and its gateway on, 64 wrk connections searching for 8 s. Prints requests per second, the
# process's threads before and after, and its resident memory before and after.
#
#   cargo build --release -p agora-daemon --bin agora-testnet
#   benches/gateway-load.sh [path/to/agora-testnet] [runs]
#
# Needs wrk (Debian package wrk). Binaries to compare can be given one after another by
# running the script once per binary, alternating.
set -euo pipefail
bin=${1:-target/release/agora-testnet}
runs=${2:-3}
command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install wrk)"; exit 1; }
out=$(mktemp)
trap 'rm -f "$out"' EXIT
for run in $(seq "$runs"); do
    "$bin" --nodes 1 --seed 70 --http --json > "$out" 2>/dev/null &
    pid=$!
    for _ in $(seq 100); do [ -s "$out" ] && break; sleep 0.1; done
    http=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['nodes'][0]['http'])" "$out")
    threads() { ls "/proc/$pid/task" | wc -l; }
    rss() { awk '/VmRSS/ {print $2}' "/proc/$pid/status"; }
    t0=$(threads); r0=$(rss)
    rps=$(wrk -t2 -c64 -d8s "http://$http/v1/packages?q=seed" | awk '/Requests\/sec/ {print $2}')
    echo "run $run: $rps requests/s; threads $t0 -> $(threads); RSS $r0 -> $(rss) kB"
    kill "$pid"; wait "$pid" 2>/dev/null || true
    : > "$out"
done
