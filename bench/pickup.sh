#!/usr/bin/env bash
# Customer landing-page throughput and email delivery rate.
#
#   bench/pickup.sh            SEED=N messages (default 10000), DURATION=s (default 20)
#
# Builds release and seeds SEED messages (each with its pickup email queued)
# into a fresh SQLite data folder. Starts an SMTP sink (examples/smtp_sink.rs) and `sealpost serve` pointed at it, and times the outbox
# draining: emails per second. Then loads one message's landing page with
# wrk (Debian package, installed if missing) at 64 connections for DURATION
# seconds. Ends with one line:
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

cargo build --release --quiet --manifest-path "$here/Cargo.toml" --bin sealpost --example pickup_seed --example smtp_sink
bin="$here/target/release/sealpost"
seeder="$here/target/release/examples/pickup_seed"

work=$(mktemp -d "${TMPDIR:-/var/tmp}/sealpost-pickup.XXXXXX")
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
base="http://127.0.0.1:$port"
export SEALPOST_DATA_DIR="$work/data" SEALPOST_BIND="127.0.0.1:$port" SEALPOST_PUBLIC_URL="$base" SEALPOST_LOG=warn
smtp_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export SEALPOST_SMTP_URL="smtp://127.0.0.1:$smtp_port"
server_pid=""; sink_pid=""
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null
  [ -n "$sink_pid" ] && kill "$sink_pid" 2>/dev/null
  wait 2>/dev/null; rm -rf "$work"
}
trap cleanup EXIT

echo "seeding $seed messages..."
start=$(date +%s)
"$seeder" "$work/data" "$seed" "$base" > "$work/links"
echo "seeded in $(( $(date +%s) - start )) s"

sink="$here/target/release/examples/smtp_sink"
"$sink" "127.0.0.1:$smtp_port" &
sink_pid=$!
sleep 1

pending() {
  python3 - "$work/data/sealpost.db" <<'PY'
import sqlite3, sys
db = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True, timeout=10)
print(db.execute("SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL AND failed_at IS NULL").fetchone()[0])
PY
}
t0=$(date +%s.%N)
"$bin" serve > "$work/serve.log" 2>&1 &
server_pid=$!
for _ in $(seq 1 100); do curl -fs "$base/healthz" >/dev/null && break; sleep 0.1; done
while [ "$(pending)" -gt 0 ]; do sleep 0.2; done
t1=$(date +%s.%N)
emails=$(python3 -c "print(round($seed / ($t1 - $t0)))")
failed=$(python3 - "$work/data/sealpost.db" <<'PY'
import sqlite3, sys
db = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True)
print(db.execute("SELECT COUNT(*) FROM outbox WHERE failed_at IS NOT NULL").fetchone()[0])
PY
)
echo "outbox: $seed emails in $(python3 -c "print(round($t1 - $t0, 1))") s (server start included), $failed failed"

link=$(sed -n "$(( seed / 2 + 1 ))p" "$work/links")
curl -fs -o /dev/null "$link"   # first visit: the one write a landing page does
echo "wrk: 64 connections, ${duration}s, one message's landing page"
wrk -t2 -c64 -d"${duration}s" --latency "$link" | tee "$work/wrk.txt"

rps=$(awk '/Requests\/sec/ {printf "%d", $2}' "$work/wrk.txt")
p99=$(awk '$1 == "99%" {v=$2; if (v ~ /us$/) {sub(/us$/,"",v); v=v/1000} else if (v ~ /ms$/) {sub(/ms$/,"",v)} else if (v ~ /s$/) {sub(/s$/,"",v); v=v*1000}; printf "%.2f", v}' "$work/wrk.txt")
errors=$(awk '/Non-2xx|Socket errors/ {print}' "$work/wrk.txt")
[ -n "$errors" ] && echo "errors: $errors"

echo "landing_rps=$rps landing_p99_ms=$p99 emails_per_s=$emails"
