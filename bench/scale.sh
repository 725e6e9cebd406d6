#!/usr/bin/env bash
# Two instances on PostgreSQL and an S3-compatible store, under a bounded
# mixed load.
#
#   bench/scale.sh        DURATION=s (default 60), USERS=N (default 24),
#                         KEEP=1 keeps the work folder (logs, spool)
#
# Builds release; makes a fresh PostgreSQL database (on
# SEALPOST_BENCH_PG_URL, default postgres://postgres@127.0.0.1:5432/postgres)
# and a bucket on a local moto_server; starts an SMTP sink that spools
# every email and two `sealpost serve` processes sharing database, bucket
# and key file. Locust (PyPI) then runs USERS users for DURATION seconds:
# one in three is an agent composing with a 100 KB attachment, the others
# are customers taking links from the spool, visiting and verifying with
# the access code, reading and downloading. Every request goes to a random
# instance; customers come from many addresses through a trusted proxy
# (X-Forwarded-For), as behind a load balancer. After the load the outbox
# drains, then the script checks that every composed message is stored and
# its email arrived exactly once.
# Prints per-operation figures and ends with one line:
#   mixed_ops_per_s=N p99_ms=X errors=N lost=N duplicates=N
# Goal: errors, lost and duplicates all 0.
set -euo pipefail

duration=${DURATION:-60}
users=${USERS:-24}
here=$(cd "$(dirname "$0")/.." && pwd)
pg_admin=${SEALPOST_BENCH_PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}

need_pip=()
python3 -c 'import aiosmtpd' 2>/dev/null || need_pip+=(aiosmtpd)
python3 -c 'import locust' 2>/dev/null || need_pip+=(locust)
command -v moto_server >/dev/null || need_pip+=('moto[server]==5.2.5')
((${#need_pip[@]})) && pip install --quiet "${need_pip[@]}"
if ! command -v psql >/dev/null; then
  sudo_=""; [ "$(id -u)" -eq 0 ] || sudo_="sudo"
  $sudo_ apt-get install -y -qq postgresql-client >/dev/null
fi

cargo build --release --quiet --manifest-path "$here/Cargo.toml" --bin sealpost
bin="$here/target/release/sealpost"

work=$(mktemp -d "${TMPDIR:-/var/tmp}/sealpost-scale.XXXXXX")
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
db="sealpost_bench_$(date +%s)_$$"
db_url="${pg_admin%/*}/$db"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  psql -q "$pg_admin" -c "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1 || true
  if [ -n "${KEEP:-}" ]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

psql -q "$pg_admin" -c "CREATE DATABASE $db"
s3_port=$(free_port); smtp_port=$(free_port)
moto_server -H 127.0.0.1 -p "$s3_port" >"$work/moto.log" 2>&1 &
pids+=($!)
python3 "$here/bench/scale_sink.py" 127.0.0.1 "$smtp_port" "$work/spool" >"$work/sink.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$s3_port/" >/dev/null 2>&1 && break; sleep 0.1; done
curl -fs -X PUT "http://127.0.0.1:$s3_port/sealpost-bench" >/dev/null

export SEALPOST_DATA_DIR="$work/data" SEALPOST_DATABASE_URL="$db_url" SEALPOST_LOG=warn \
  SEALPOST_SMTP_URL="smtp://127.0.0.1:$smtp_port" \
  SEALPOST_BLOB_URL="s3://sealpost-bench" SEALPOST_S3_ENDPOINT="http://127.0.0.1:$s3_port" \
  SEALPOST_TRUSTED_PROXIES=127.0.0.1/32 SEALPOST_S3_REGION=us-east-1 SEALPOST_S3_ACCESS_KEY_ID=bench SEALPOST_S3_SECRET_ACCESS_KEY=bench
password="bench password $(date +%s%N)"
printf '%s' "$password" > "$work/password"
"$bin" admin create-user --email agent@bench.example --role agent --password-file "$work/password" >/dev/null

hosts=()
for name in one two; do
  port=$(free_port)
  SEALPOST_BIND="127.0.0.1:$port" SEALPOST_PUBLIC_URL="http://127.0.0.1:$port" \
    "$bin" serve >"$work/$name.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.1; done
  curl -fs "http://127.0.0.1:$port/readyz" >/dev/null
  hosts+=("http://127.0.0.1:$port")
done

echo "locust: $users users for ${duration}s against ${hosts[*]}"
: > "$work/composed"
SCALE_HOSTS="$(IFS=,; echo "${hosts[*]}")" SCALE_SPOOL="$work/spool" SCALE_COMPOSED="$work/composed" \
  SCALE_AGENT=agent@bench.example SCALE_PASSWORD="$password" \
  locust -f "$here/bench/scale_locust.py" --headless --only-summary \
  -u "$users" -r "$users" -t "${duration}s" --csv "$work/stats" \
  Agent Customer >"$work/locust.log" 2>&1 || true

# Let the outbox drain (up to a minute) before counting.
pending() { psql -qtA "$db_url" -c "SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL AND failed_at IS NULL"; }
for _ in $(seq 1 120); do [ "$(pending)" -eq 0 ] && break; sleep 0.5; done

python3 - "$work" "$db_url" <<'PY'
import csv, email, os, subprocess, sys
work, db_url = sys.argv[1], sys.argv[2]
def sql(q):
    return subprocess.run(["psql", "-qtA", db_url, "-c", q], check=True,
                          capture_output=True, text=True).stdout.split()
rows = list(csv.DictReader(open(os.path.join(work, "stats_stats.csv"))))
print(f"{'operation':<14} {'count':>7} {'fail':>5} {'p50_ms':>7} {'p99_ms':>7}")
for r in rows:
    if r["Name"] == "Aggregated":
        continue
    print(f"{r['Name']:<14} {r['Request Count']:>7} {r['Failure Count']:>5} {r['50%']:>7} {r['99%']:>7}")
total = next(r for r in rows if r["Name"] == "Aggregated")
for r in csv.DictReader(open(os.path.join(work, "stats_failures.csv"))):
    print(f"failed {r['Name']}: {r['Occurrences']}x {r['Error']}")
composed = [l.strip() for l in open(os.path.join(work, "composed")) if l.strip()]
stored = set(sql("SELECT message_id FROM deliveries"))
expected = [m.strip("<>") for m in sql("SELECT mail_message_id FROM outbox")]
seen = {}
for name in os.listdir(os.path.join(work, "spool")):
    if ".eml" not in name:
        continue
    with open(os.path.join(work, "spool", name), "rb") as f:
        mid = email.message_from_bytes(f.read())["Message-ID"].strip().strip("<>")
    seen[mid] = seen.get(mid, 0) + 1
not_stored = sum(1 for m in composed if m not in stored)
not_received = sum(1 for m in expected if m not in seen)
unexpected = sum(1 for m in seen if m not in set(expected))
lost = not_stored + not_received
duplicates = sum(n - 1 for n in seen.values() if n > 1)
errors = int(total["Failure Count"]) + unexpected
print(f"messages composed: {len(composed)} ({not_stored} not stored), emails queued: "
      f"{len(expected)} ({not_received} not received), emails received: {sum(seen.values())} "
      f"({unexpected} not from the outbox)")
print(f"mixed_ops_per_s={float(total['Requests/s']):.0f} p99_ms={total['99%']} "
      f"errors={errors} lost={lost} duplicates={duplicates}")
PY
