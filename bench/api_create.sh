#!/usr/bin/env bash
# Creating messages through the API (issue 14).
#
#   bench/api_create.sh        ROUNDS=N (default 3), DURATION=s per round (default 10),
#                              BACKENDS="sqlite postgres" (default both),
#                              SEALPOST_BENCH_PG_URL (default postgres://postgres@127.0.0.1:5432/postgres)
#
# Builds release. For each backend: a fresh SQLite data folder (or a fresh
# PostgreSQL database), local blobs, an SMTP sink (examples/smtp_sink.rs)
# taking the pickup emails while the run goes on. An operator creates an
# agent and a `messages:send` token with the CLI, then `sealpost serve`
# starts and wrk drives POST /api/v1/messages with 32 connections: JSON, a
# 1 KB body, email-code verification, no attachment. Each 201 means the
# sealed body's blob was written and fsync'd, and the message row, its
# audit event and its pickup email (outbox) were committed in one
# transaction. In the same run and against the same server, wrk loads
# /healthz with 32 connections: the reference for what this machine's HTTP
# path costs at the moment. Each figure is the best of ROUNDS rounds
# (machines here are noisy). Checks that every 201 left one message and
# that no request failed. Ends with one line per backend:
#   backend=sqlite create_per_s=N create_p99_ms=X healthz_rps=N
# Goal on a 2-core machine: create_per_s >= 500 on SQLite.
set -euo pipefail

rounds=${ROUNDS:-3}
duration=${DURATION:-10}
backends=${BACKENDS:-sqlite postgres}
pg_admin=${SEALPOST_BENCH_PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}
here=$(cd "$(dirname "$0")/.." && pwd)

need=()
command -v wrk >/dev/null || need+=(wrk)
command -v curl >/dev/null || need+=(curl)
[[ " $backends " == *" postgres "* ]] && ! command -v psql >/dev/null && need+=(postgresql-client)
if [ ${#need[@]} -gt 0 ]; then
  sudo_=""; [ "$(id -u)" -eq 0 ] || sudo_="sudo"
  $sudo_ apt-get install -y -qq "${need[@]}" >/dev/null
fi

cargo build --release --quiet --manifest-path "$here/Cargo.toml" --bin sealpost --example smtp_sink
bin="$here/target/release/sealpost"
sink="$here/target/release/examples/smtp_sink"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

work=$(mktemp -d "${TMPDIR:-/var/tmp}/sealpost-api-create.XXXXXX")
server_pid=""; sink_pid=""; db=""
stop_server() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  server_pid=""
}
cleanup() {
  stop_server
  [ -n "$sink_pid" ] && kill "$sink_pid" 2>/dev/null
  [ -n "$db" ] && psql -q "$pg_admin" -c "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1
  wait 2>/dev/null; rm -rf "$work"
}
trap cleanup EXIT

smtp_port=$(free_port)
"$sink" "127.0.0.1:$smtp_port" > "$work/sink.log" 2>&1 &
sink_pid=$!

# 1 KB of body text, the same in every request (the server seals each anew).
body=$(python3 -c 'print(("Your statement for November is attached below. " * 30)[:1024])')
cat > "$work/create.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_TOKEN")
wrk.body = '{"to":"customer@example.org","title":"Statement","body":"$body","verify":{"email_code":{}}}'
LUA

# wrk's figures: requests/s, p99 in ms, and the count of non-2xx answers
# and socket errors.
rps_of() { awk '/Requests\/sec/ {printf "%d", $2}' "$1"; }
p99_of() {
  awk '$1 == "99%" {v=$2; if (v ~ /us$/) {sub(/us$/,"",v); v=v/1000} else if (v ~ /ms$/) {sub(/ms$/,"",v)} else if (v ~ /s$/) {sub(/s$/,"",v); v=v*1000}; printf "%.2f", v}' "$1"
}
failures_of() { awk '/Non-2xx or 3xx responses|Socket errors/ {print}' "$1"; }
requests_of() { awk '/requests in/ {print $1}' "$1"; }

results=()
for backend in $backends; do
  port=$(free_port)
  base="http://127.0.0.1:$port"
  data="$work/$backend/data"
  mkdir -p "$work/$backend"
  export SEALPOST_DATA_DIR="$data" SEALPOST_BIND="127.0.0.1:$port" SEALPOST_PUBLIC_URL="$base"
  export SEALPOST_LOG=warn SEALPOST_SMTP_URL="smtp://127.0.0.1:$smtp_port"
  unset SEALPOST_DATABASE_URL
  if [ "$backend" = postgres ]; then
    db="sealpost_api_create_$$"
    psql -q "$pg_admin" -c "CREATE DATABASE $db"
    export SEALPOST_DATABASE_URL="${pg_admin%/*}/$db"
  fi

  printf 'bench-password-%s\n' "$$" > "$work/password"
  "$bin" admin create-user --email agent@example.com --role agent --password-file "$work/password" > /dev/null
  "$bin" admin create-token --email agent@example.com --scope messages:send,messages:read \
    --out "$work/$backend/token" > /dev/null
  BENCH_TOKEN=$(cat "$work/$backend/token")
  export BENCH_TOKEN

  "$bin" serve > "$work/$backend/serve.log" 2>&1 &
  server_pid=$!
  for _ in $(seq 1 100); do curl -fs "$base/healthz" >/dev/null && break; sleep 0.1; done
  curl -fs "$base/healthz" >/dev/null || { cat "$work/$backend/serve.log" >&2; exit 1; }

  best_create=0; best_p99=""; best_health=0; created=0
  for round in $(seq 1 "$rounds"); do
    wrk -t2 -c32 -d"${duration}s" --latency "$base/healthz" > "$work/health.txt"
    wrk -t2 -c32 -d"${duration}s" --latency -s "$work/create.lua" "$base/api/v1/messages" > "$work/create.txt"
    failed=$(failures_of "$work/create.txt")
    if [ -n "$failed" ]; then
      echo "$backend round $round: $failed" >&2
      tail -20 "$work/$backend/serve.log" >&2
      exit 1
    fi
    created=$(( created + $(requests_of "$work/create.txt") ))
    rps=$(rps_of "$work/create.txt"); p99=$(p99_of "$work/create.txt"); health=$(rps_of "$work/health.txt")
    echo "$backend round $round: create ${rps}/s p99 ${p99} ms; healthz ${health}/s"
    if (( rps > best_create )); then best_create=$rps; best_p99=$p99; fi
    if (( health > best_health )); then best_health=$health; fi
  done

  # Every answer wrk counted was a 201; each must have left one message.
  messages=$(curl -fs -H "Authorization: Bearer $BENCH_TOKEN" "$base/api/v1/messages?limit=1" >/dev/null && \
    if [ "$backend" = postgres ]; then
      psql -qtA "$SEALPOST_DATABASE_URL" -c "SELECT COUNT(*) FROM messages"
    else
      python3 -c 'import sqlite3,sys; print(sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True, timeout=30).execute("SELECT COUNT(*) FROM messages").fetchone()[0])' "$data/sealpost.db"
    fi)
  # wrk may count a request cut at the end of its window that the server
  # still committed, never the other way round.
  if (( messages < created )); then
    echo "$backend: wrk saw $created created, the database holds $messages" >&2; exit 1
  fi
  echo "$backend: $messages messages stored for $created answers counted"
  stop_server
  if [ "$backend" = postgres ]; then psql -q "$pg_admin" -c "DROP DATABASE IF EXISTS $db"; db=""; fi
  results+=("backend=$backend create_per_s=$best_create create_p99_ms=$best_p99 healthz_rps=$best_health")
done

printf '%s\n' "${results[@]}"
