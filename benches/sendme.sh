#!/usr/bin/env bash
# One provider, one downloader, 100 MB of incompressible bytes over loopback: `agora install`
# (provider lookup, fetch, verify, unpack) against `sendme receive` of the same file from
# iroh's sendme (crates.io, ^0.37), alternating the two (taking turns going first, each after a
# sync), each on a fresh receiver.
#
# Needs release binaries (`cargo build --release --workspace`) and `sendme` on PATH or in
# $SENDME (`cargo install sendme --version '^0.37' --locked`). Runs: $RUNS (default 5).
# Usage: bash benches/sendme.sh
set -euo pipefail
cd "$(dirname "$0")/.."
agora=$PWD/target/release/agora
sendme=${SENDME:-$(command -v sendme || true)}
runs=${RUNS:-5}
[ -x "$agora" ] || { echo "no $agora: cargo build --release --workspace" >&2; exit 2; }
[ -n "$sendme" ] && [ -x "$sendme" ] || {
    echo "no sendme: cargo install sendme --version '^0.37' --locked, or set SENDME" >&2
    exit 2
}
work=$(mktemp -d)
pids=()
cleanup() {
    for home in "$work"/home-*; do
        [ -d "$home" ] && AGORA_HOME=$home "$agora" node stop >/dev/null 2>&1 || true
    done
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

node() { # node NAME ARGS...: starts agorad with its home in $work/home-NAME
    local home=$work/home-$1
    shift
    AGORA_HOME=$home "$agora" --json node start -- --listen /ip4/127.0.0.1/tcp/0 --no-mdns "$@" >/dev/null
}
on() { # on NAME ARGS...: agora against node NAME
    local home=$work/home-$1
    shift
    AGORA_HOME=$home "$agora" "$@"
}

mkdir -p "$work/pkg/templates"
head -c 100000000 /dev/urandom > "$work/pkg/templates/data.bin"
cp "$work/pkg/templates/data.bin" "$work/data.bin"
printf '[package]\nname = "hundred"\nversion = "1.0.0"\ndescription = "100 MB"\n' > "$work/pkg/package.toml"
node provider
on provider --json keygen >/dev/null
on provider --json publish "$work/pkg" >/dev/null
status=$(on provider --json status | tr -d " \n")
addr=$(printf '%s' "$status" | grep -o '"listen_addrs":\["[^"]*"' | sed 's/.*\["//; s/"$//')
peer=$(printf '%s' "$status" | grep -o '"peer_id":"[^"]*"' | sed 's/.*:"//; s/"$//')
seed=$addr/p2p/$peer

# No relay: the machine reaches no relay server, and both ends are on loopback.
# sendme keeps its store in the directory it runs in: the work directory, removed at the end.
(cd "$work" && exec "$sendme" send --relay disabled --ticket-type addresses --no-progress \
    "$work/data.bin" > "$work/sendme-send.log" 2>&1) &
pids+=($!)
ticket=""
for _ in $(seq 1 300); do
    ticket=$(grep -o 'blob[a-z0-9]\{20,\}' "$work/sendme-send.log" | head -1 || true)
    [ -n "$ticket" ] && break
    sleep 0.1
done
[ -n "$ticket" ] || { echo "sendme gave no ticket:" >&2; cat "$work/sendme-send.log" >&2; exit 1; }

now() { date +%s.%N; }
minus() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a - b }'; }
agora_times=()
sendme_times=()
agora_run() { # agora_run I: one install on a fresh node
    node "user$1" --bootstrap "$seed"
    for _ in $(seq 1 300); do on "user$1" info hundred >/dev/null 2>&1 && break; sleep 0.1; done
    mkdir -p "$work/project$1"
    sync
    local t0 t1
    t0=$(now)
    on "user$1" --json install hundred --dir "$work/project$1" >/dev/null
    t1=$(now)
    agora_times+=("$(minus "$t1" "$t0")")
    on "user$1" node stop >/dev/null
    rm -rf "$work/project$1" "$work/home-user$1"
}
sendme_run() { # sendme_run I: one receive into a fresh directory
    mkdir -p "$work/recv$1"
    sync
    local t0 t1
    t0=$(now)
    (cd "$work/recv$1" && "$sendme" receive --relay disabled --no-progress "$ticket" >/dev/null 2>&1)
    t1=$(now)
    sendme_times+=("$(minus "$t1" "$t0")")
    cmp -s "$work/recv$1/data.bin" "$work/data.bin" || { echo "sendme received other bytes" >&2; exit 1; }
    rm -rf "$work/recv$1"
}
# Each run starts with the disk's write-back done (sync), and the two take turns going first.
for i in $(seq 1 "$runs"); do
    if [ $((i % 2)) = 1 ]; then agora_run "$i"; sendme_run "$i"; else sendme_run "$i"; agora_run "$i"; fi
    echo "run $i: agora install ${agora_times[-1]} s, sendme receive ${sendme_times[-1]} s"
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
ma=$(median "${agora_times[@]}")
ms=$(median "${sendme_times[@]}")
echo "100 MB over loopback, median of $runs: agora install $ma s, sendme receive $ms s, agora / sendme $(awk -v a="$ma" -v b="$ms" 'BEGIN { printf "%.2f", a / b }')x"
