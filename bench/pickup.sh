#!/usr/bin/env bash
# Customer landing-page throughput (and, with the outbox, email delivery rate).
#
#   bench/pickup.sh            SEED=N messages (default 10000), DURATION=s (default 20)
#
# Builds release, seeds SEED messages into a fresh SQLite data folder, starts
# `sealpost serve`, and loads one message's landing page with wrk at 64
# connections for DURATION seconds (wrk is installed from Debian if
# missing). Ends with one line:
#   landing_rps=N landing_p99_ms=X emails_per_s=N
# Goal on a 2-core machine: >= 20000 req/s, p99 <= 5 ms, >= 500 emails/s.
set -euo pipefail

seed=${SEED:-10000}
duration=${DURATION:-20}
here=$(cd "$(dirname "$0")/.." && pwd)

if ! command -v wrk >/dev/null; then
  sudo_=""; [ "$(id -u)" -eq 0 ] || sudo_="sudo"
  $sudo_ apt-get install -y -qq wrk >/dev/null
fi

cargo build --release --quiet --manifest-path "$here/Cargo.toml" --bin sealpost --example pickup_seed
bin="$here/target/release/sealpost"
seeder="$here/target/release/examples/pickup_seed"

work=$(mktemp -d "${TMPDIR:-/var/tmp}/sealpost-pickup.XXXXXX")
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
base="http://127.0.0.1:$port"
export SEALPOST_DATA_DIR="$work/data" SEALPOST_BIND="127.0.0.1:$port" SEALPOST_PUBLIC_URL="$base" SEALPOST_LOG=warn
server_pid=""
cleanup() { [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

echo "seeding $seed messages..."
start=$(date +%s)
"$seeder" "$work/data" "$seed" "$base" > "$work/links"
echo "seeded in $(( $(date +%s) - start )) s"

"$bin" serve > "$work/serve.log" 2>&1 &
server_pid=$!
for _ in $(seq 1 100); do curl -fs "$base/healthz" >/dev/null && break; sleep 0.1; done

link=$(sed -n "$(( seed / 2 + 1 ))p" "$work/links")
curl -fs -o /dev/null "$link"   # first visit: the one write a landing page does
echo "wrk: 64 connections, ${duration}s, one message's landing page"
wrk -t2 -c64 -d"${duration}s" --latency "$link" | tee "$work/wrk.txt"

rps=$(awk '/Requests\/sec/ {printf "%d", $2}' "$work/wrk.txt")
p99=$(awk '$1 == "99%" {v=$2; if (v ~ /us$/) {sub(/us$/,"",v); v=v/1000} else if (v ~ /ms$/) {sub(/ms$/,"",v)} else if (v ~ /s$/) {sub(/s$/,"",v); v=v*1000}; printf "%.2f", v}' "$work/wrk.txt")
errors=$(awk '/Non-2xx|Socket errors/ {print}' "$work/wrk.txt")
[ -n "$errors" ] && echo "errors: $errors"

emails="n/a"
echo "landing_rps=$rps landing_p99_ms=$p99 emails_per_s=$emails"
