#!/usr/bin/env bash
# Flat with growth: the same operations on a small and a large history.
#
#   bench/growth.sh      SMALL=N (default 1000), LARGE=N (default 100000),
#                        BACKEND=sqlite|postgres (default sqlite),
#                        ROUNDS=N (default 5), WRK_ROUNDS=N (default 3),
#                        WRK_SECONDS=s (default 10), CUSTOMER_ROUNDS=N (default 3),
#                        VISITS=N first visits per client per round (default 8),
#                        ROTATE_ROUNDS=N (default 2),
#                        KEEP=1 keeps the work folder (and the databases)
#
# Builds release, then seeds SMALL and LARGE messages (examples/growth_seed.rs:
# one agent, a year of history with a realistic spread of outcomes, a hash-
# chained audit log, fresh links for the customer side) into two data sets:
# SQLite data folders, or with BACKEND=postgres two fresh databases on
# SEALPOST_BENCH_PG_URL (default postgres://postgres@127.0.0.1:5432/postgres),
# VACUUM ANALYZEd after seeding as autovacuum would leave them. SQLite is not
# analysed: statistics are Sealpost's own business.
#
# Starts an SMTP sink and one `sealpost serve` per data set, signs in as the
# agent on both (form token + session cookie) and measures them alternately
# (operation by operation, the first server swapping every round), keeping
# the best of the rounds, as the machine is noisy:
#   staff:    /sent page 1, /sent last page (found from the pager's links),
#             exact-address search, status filters locked and emailed,
#             wrk -c8 on /sent page 1 with the session cookie;
#   customer: the landing page of a fresh link (and of the same link again),
#             first visits of fresh links by 8 concurrent clients (p99 per
#             round; each link visited once);
# then, servers stopped: the expiry job's pass, `sealpost audit verify` and
# `sealpost keys rotate` (each adds a master key and re-wraps every live
# message key), alternately.
# Prints a table and ends with one line:
#   worst_page_growth=X rotate_growth=Y first_visit_p99_ms=Z
# worst_page_growth is the largest LARGE/SMALL time of the single-request
# staff and customer pages; first_visit_p99_ms is LARGE's.
# Goal (issue 17): worst_page_growth <= 1.5, rotate_growth <= 120 for 100x
# the data, first_visit_p99_ms <= 100.
set -euo pipefail

small=${SMALL:-1000}
large=${LARGE:-100000}
backend=${BACKEND:-sqlite}
rounds=${ROUNDS:-5}
wrk_rounds=${WRK_ROUNDS:-3}
wrk_seconds=${WRK_SECONDS:-10}
rotate_rounds=${ROTATE_ROUNDS:-2}
customer_rounds=${CUSTOMER_ROUNDS:-3}
clients=8 visits=${VISITS:-8} landing=3
# Each link is visited once: these many messages are just-emailed ones.
fresh=$(( customer_rounds * (clients * visits + landing) ))
here=$(cd "$(dirname "$0")/.." && pwd)
pg_admin=${SEALPOST_BENCH_PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}
measure="python3 $here/bench/growth_measure.py"
agent=bench-agent@example.com
export GROWTH_PASSWORD="growth bench $(date +%s%N)"

case "$backend" in sqlite|postgres) ;; *) echo "BACKEND must be sqlite or postgres" >&2; exit 2 ;; esac
if ! command -v wrk >/dev/null; then
  sudo_=""; [ "$(id -u)" -eq 0 ] || sudo_="sudo"
  $sudo_ apt-get install -y -qq wrk >/dev/null
fi
if [ "$backend" = postgres ] && ! command -v psql >/dev/null; then
  sudo_=""; [ "$(id -u)" -eq 0 ] || sudo_="sudo"
  $sudo_ apt-get install -y -qq postgresql-client >/dev/null
fi

cargo build --release --quiet --manifest-path "$here/Cargo.toml" --bin sealpost --example growth_seed --example smtp_sink
bin="$here/target/release/sealpost"
seeder="$here/target/release/examples/growth_seed"

work=$(mktemp -d "${TMPDIR:-/var/tmp}/sealpost-growth.XXXXXX")
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
pids=(); dbs=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ -n "${KEEP:-}" ]; then
    echo "kept $work${dbs[*]:+ and databases ${dbs[*]}}"
  else
    for d in "${dbs[@]}"; do psql -q "$pg_admin" -c "DROP DATABASE IF EXISTS $d" >/dev/null 2>&1 || true; done
    rm -rf "$work"
  fi
}
trap cleanup EXIT

smtp_port=$(free_port)
"$here/target/release/examples/smtp_sink" "127.0.0.1:$smtp_port" >"$work/sink.log" 2>&1 &
pids+=($!)

# Each data set's settings, as `sealpost` reads them, in $work/<size>/env.
declare -A base
for size in "$small" "$large"; do
  mkdir -p "$work/$size"
  port=$(free_port)
  base[$size]="http://127.0.0.1:$port"
  {
    echo "export SEALPOST_DATA_DIR='$work/$size/data' SEALPOST_BIND='127.0.0.1:$port'"
    echo "export SEALPOST_PUBLIC_URL='${base[$size]}' SEALPOST_LOG=warn"
    echo "export SEALPOST_SMTP_URL='smtp://127.0.0.1:$smtp_port'"
  } > "$work/$size/env"
  if [ "$backend" = postgres ]; then
    db="sealpost_growth_${size}_$$"
    psql -q "$pg_admin" -c "CREATE DATABASE $db"
    dbs+=("$db")
    echo "export SEALPOST_DATABASE_URL='${pg_admin%/*}/$db'" >> "$work/$size/env"
  fi
done
in_env() { (. "$work/$1/env"; shift; exec "$@"); }

for size in "$small" "$large"; do
  echo "seeding $size messages ($backend)..."
  t0=$(date +%s.%N)
  in_env "$size" "$seeder" seed "$size" "$fresh" "${base[$size]}" > "$work/$size/links" 2> "$work/$size/seed.log" \
    || { cat "$work/$size/seed.log" >&2; exit 1; }
  if [ "$backend" = postgres ]; then
    in_env "$size" sh -c 'psql -q "$SEALPOST_DATABASE_URL" -c "VACUUM ANALYZE"'
  fi
  echo "  seeded in $(python3 -c "print(round($(date +%s.%N) - $t0))") s"
done

results="$work/results.jsonl"
: > "$results"
start_servers() {
  for size in "$small" "$large"; do
    # A subshell that execs: $! is the server itself.
    (. "$work/$size/env"; exec "$bin" serve) > "$work/$size/serve.log" 2>&1 &
    pids+=($!)
    echo $! > "$work/$size/pid"
  done
  for size in "$small" "$large"; do
    for _ in $(seq 1 300); do curl -fs "${base[$size]}/readyz" >/dev/null && break; sleep 0.1; done
    curl -fs "${base[$size]}/readyz" >/dev/null || { cat "$work/$size/serve.log" >&2; exit 1; }
  done
}
stop_servers() {
  for size in "$small" "$large"; do
    local pid; pid=$(cat "$work/$size/pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
}

start_servers
for size in "$small" "$large"; do
  $measure signin "${base[$size]}" "$agent" "$GROWTH_PASSWORD" > "$work/$size/cookie"
done

echo "staff pages: $rounds rounds"
$measure staff "$rounds" "$results" \
  "$small=${base[$small]}=$work/$small/cookie" "$large=${base[$large]}=$work/$large/cookie"

echo "wrk -c8 on /sent: $wrk_rounds rounds of ${wrk_seconds}s"
for r in $(seq 1 "$wrk_rounds"); do
  order=("$small" "$large"); [ $((r % 2)) -eq 0 ] && order=("$large" "$small")
  for size in "${order[@]}"; do
    wrk -t2 -c8 -d"${wrk_seconds}s" -H "Cookie: $(cat "$work/$size/cookie")" "${base[$size]}/sent" > "$work/wrk.txt"
    rps=$(awk '/Requests\/sec/ {print $2}' "$work/wrk.txt")
    bad=$(awk '/Non-2xx/ {print $NF}' "$work/wrk.txt")
    [ -n "$bad" ] && echo "  $size: $bad non-2xx responses" >&2
    echo "{\"size\": \"$size\", \"op\": \"wrk_sent_rps\", \"value\": $rps, \"unit\": \"rps\"}" >> "$results"
  done
done

echo "customer side: $customer_rounds rounds, $clients clients x $visits first visits"
$measure customer "$customer_rounds" "$clients" "$visits" "$landing" "$results" \
  "$small=${base[$small]}=$work/$small/links" "$large=${base[$large]}=$work/$large/links"
stop_servers

echo "maintenance: expiry pass, audit verify x$rounds, keys rotate x$rotate_rounds"
add() { echo "{\"size\": \"$1\", \"op\": \"$2\", \"value\": $3, \"unit\": \"$4\"}" >> "$results"; }
for size in "$small" "$large"; do
  line=$(in_env "$size" "$seeder" expiry 5)
  add "$size" expiry_first_ms "$(sed -E 's/.*first_ms=([0-9.]+).*/\1/' <<<"$line")" ms
  add "$size" expiry_best_ms "$(sed -E 's/.*best_ms=([0-9.]+).*/\1/' <<<"$line")" ms
done
timed() { # seconds a command takes; its output goes to $work/cli.log
  local t0; t0=$(date +%s.%N)
  "$@" >> "$work/cli.log" 2>&1 || { tail -5 "$work/cli.log" >&2; exit 1; }
  python3 -c "print(round($(date +%s.%N) - $t0, 3))"
}
for r in $(seq 1 "$rounds"); do
  order=("$small" "$large"); [ $((r % 2)) -eq 0 ] && order=("$large" "$small")
  for size in "${order[@]}"; do
    secs=$(timed in_env "$size" "$bin" audit verify)
    add "$size" audit_verify_s "$secs" s
  done
done
for r in $(seq 1 "$rotate_rounds"); do
  order=("$small" "$large"); [ $((r % 2)) -eq 0 ] && order=("$large" "$small")
  for size in "${order[@]}"; do
    secs=$(timed in_env "$size" "$bin" keys rotate)
    add "$size" keys_rotate_s "$secs" s
  done
done
grep -h "audit log intact\|re-wrapped" "$work/cli.log" | sort | uniq -c | sed 's/^/  /'

echo
$measure report "$results" "$small" "$large"
