#!/usr/bin/env bash
# Hostile load: does a legitimate customer and agent still get through?
#
#   bench/abuse.sh            PHASE=s (default 20) seconds per phase
#
# Builds release; seeds a fresh SQLite data folder (an agent, 400 messages
# with a 256 KiB attachment, one with a 30 MiB attachment, a dozen for wrong
# answers) with examples/abuse.rs; starts `sealpost serve` trusting
# 127.0.0.1 as a proxy, so each simulated client has its own address in
# X-Forwarded-For. Then, while a legitimate customer (visit, verify, read,
# download) and agent (sign-in) repeat their steps, four phases run:
#   quiet              no attack (the reference, measured in the same run)
#   sign_in_flood      400 concurrent sign-ins, 400 addresses, unknown accounts
#   stalled_downloads  200 downloads of the 30 MiB file from one session, unread
#   wrong_answers      bursts of 50 parallel wrong answers on one link
# Prints per phase the legitimate operations' p50/p99, the responses by
# class (503 with Retry-After is deliberate shedding, counted apart) and the
# server's peak RSS, then one line:
#   legit_p99_ms=X errors_5xx=N peak_rss_mib=N
# Goal (2 cores): errors_5xx=0, peak_rss_mib <= 256, legit_p99_ms <= 2000.
set -euo pipefail

phase=${PHASE:-20}
here=$(cd "$(dirname "$0")/.." && pwd)

cargo build --release --quiet --manifest-path "$here/Cargo.toml" --bin sealpost --example abuse
bin="$here/target/release/sealpost"
abuse="$here/target/release/examples/abuse"

work=$(mktemp -d "${TMPDIR:-/var/tmp}/sealpost-abuse.XXXXXX")
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
base="http://127.0.0.1:$port"
export SEALPOST_DATA_DIR="$work/data" SEALPOST_BIND="127.0.0.1:$port" SEALPOST_PUBLIC_URL="$base" SEALPOST_LOG=warn
server_pid=""
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null
  wait 2>/dev/null; [ -n "${KEEP:-}" ] && echo "kept $work" || rm -rf "$work"
}
trap cleanup EXIT

echo "seeding..."
"$abuse" seed "$work/data" "$base" "$work/seed.txt"

SEALPOST_TRUSTED_PROXIES=127.0.0.1 "$bin" serve > "$work/serve.log" 2>&1 &
server_pid=$!
for _ in $(seq 1 100); do curl -fs "$base/healthz" >/dev/null && break; sleep 0.1; done
echo "server up: pid $server_pid, rss $(awk '/VmRSS/ {print int($2/1024)}' /proc/$server_pid/status) MiB; $phase s per phase"

ulimit -n 65536 2>/dev/null || true
"$abuse" run "$base" "$server_pid" "$work/seed.txt" "$phase" 2> "$work/abuse.err" | tee "$work/abuse.out"
if [ -s "$work/abuse.err" ]; then
  echo "legitimate failures (first 10):"; head -10 "$work/abuse.err"
fi
if grep -q '" 5[0-9][0-9] \|status=5[0-9][0-9]\|panicked' "$work/serve.log"; then
  echo "server log (5xx/panics, first 10):"; grep '5[0-9][0-9]\|panicked' "$work/serve.log" | head -10
fi
