#!/usr/bin/env bash
# A customer's upload through a document request, against the `age` CLI
# encrypting the same file in the same run (issue 13).
#
#   bench/upload.sh [SIZE]     SIZE in MiB (default 1024); REPS=N rounds (default 5),
#                              KEEP=1 keeps the work folder (server log, data)
#
# Builds release and starts `sealpost serve` on loopback with a fresh SQLite
# data folder, local blobs and the dev mailbox (no SMTP). An admin raises
# the size limit to SIZE MiB through /admin/settings. Then, for each of
# REPS rounds:
#   an agent sends a request (/requests/new: one item, PDF, max SIZE MiB,
#   access code); its link comes from the dev mailbox; the customer opens
#   it, verifies with the code, takes the form token from /pickup/{id} and
#   uploads the file with curl (multipart: csrf, body, item-0). Timed from
#   the first byte sent to the 303 to /pickup/sent, which the server gives
#   only after the file is sealed, fsync'd and committed.
#   `age -r RECIPIENT -o out input && sync out` on the same file.
# The file is `%PDF-1.7\n` and random bytes (judged a PDF by content).
# Reports the best round of each (disks and VMs are noisy) and the server's
# peak RSS: VmHWM from /proc/PID/status, read and reset (clear_refs) around
# each upload so the upload's own peak shows beside the rest (sign-ins,
# sending the request, the access code's argon2); the final figure is the
# largest, i.e. the whole run's peak. Every upload's blob stays (REPS x SIZE
# on disk until the end). Ends with:
#   upload_vs_age_cli=R peak_rss_mib=N
# Goal: upload_vs_age_cli >= 0.6, peak_rss_mib <= 128.
set -euo pipefail

size_mib=${1:-1024}
reps=${REPS:-5}
here=$(cd "$(dirname "$0")/.." && pwd)

if ! command -v age >/dev/null || ! command -v curl >/dev/null; then
  sudo_=""; [ "$(id -u)" -eq 0 ] || sudo_="sudo"
  $sudo_ apt-get install -y -qq age curl >/dev/null
fi
if (( size_mib < 1 || size_mib > 10240 )); then
  echo "SIZE must be 1 to 10240 MiB (the largest size limit the settings allow)" >&2; exit 2
fi

cargo build --release --quiet --manifest-path "$here/Cargo.toml" --bin sealpost
bin="$here/target/release/sealpost"

work=$(mktemp -d "${TMPDIR:-/var/tmp}/sealpost-upload.XXXXXX")
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
base="http://127.0.0.1:$port"
unset SEALPOST_SMTP_URL SEALPOST_SMTP_URL_FILE
export SEALPOST_DATA_DIR="$work/data" SEALPOST_BIND="127.0.0.1:$port" SEALPOST_PUBLIC_URL="$base" SEALPOST_LOG=warn
server_pid=""
cleanup() {
  if [ -n "$server_pid" ]; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  if [ -n "${KEEP:-}" ]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fail() { echo "upload bench: $*" >&2; [ -f "$work/serve.log" ] && tail -5 "$work/serve.log" >&2; exit 1; }

# The input, and the page cache warmed for the files a round keeps at once
# (on a VM the first touch of guest memory costs a host fault per page,
# which would charge whichever side runs first).
input="$work/input.pdf"
{ printf '%%PDF-1.7\n'; head -c "$((size_mib * 1024 * 1024 - 9))" /dev/urandom; } > "$input"
bytes=$(stat -c %s "$input")
for ((w = 0; w < 4; w++)); do cat "$input"; done > "$work/warm.bin"
rm -f "$work/warm.bin"
age-keygen -o "$work/age-key.txt" 2>/dev/null
recipient=$(age-keygen -y "$work/age-key.txt")

# Staff: an admin for the settings, an agent who asks for the documents.
password="upload bench $(date +%s%N)"
printf '%s\n' "$password" > "$work/password"
"$bin" migrate > "$work/setup.log" 2>&1 || { cat "$work/setup.log" >&2; exit 1; }
for role in admin agent; do
  "$bin" admin create-user --email "$role@example.com" --role "$role" --password-file "$work/password" \
    >> "$work/setup.log" 2>&1 || { cat "$work/setup.log" >&2; exit 1; }
done

"$bin" serve > "$work/serve.log" 2>&1 &
server_pid=$!
for _ in $(seq 1 300); do curl -fs "$base/readyz" >/dev/null && break; sleep 0.1; done
curl -fs "$base/readyz" >/dev/null || fail "server did not become ready"
rss_start=$(awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$server_pid/status")

# curl with a cookie jar; prints the body, -w extras go after it.
web() { local jar=$1; shift; curl -sS -b "$jar" -c "$jar" "$@"; }
# The value of the first <input name="csrf">.
csrf_of() { grep -o 'name="csrf" value="[^"]*"' | head -n1 | sed 's/.*value="//; s/"$//'; }

sign_in() {
  local jar=$1 email=$2 token to
  token=$(web "$jar" "$base/sign-in" | csrf_of)
  to=$(web "$jar" -o /dev/null -w '%{http_code} %{redirect_url}' \
        --data-urlencode "csrf=$token" --data-urlencode "email=$email" \
        --data-urlencode "password=$password" "$base/sign-in")
  [[ $to == "303 $base/sent" ]] || fail "sign-in of $email: $to"
}

admin="$work/admin.jar" agent="$work/agent.jar"
sign_in "$admin" admin@example.com
sign_in "$agent" agent@example.com

# Raise the size limit through the settings form: every field as the page
# has it (checked boxes only), size_limit_mib replaced.
web "$admin" "$base/admin/settings" > "$work/settings.html"
python3 - "$work/settings.html" "$size_mib" > "$work/settings.form" <<'PY'
import html.parser, sys, urllib.parse
class Form(html.parser.HTMLParser):
    def __init__(self):
        super().__init__(); self.pairs = []; self.inside = False; self.done = False
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form" and a.get("action") == "/admin/settings" and not self.done:
            self.inside = True
        elif tag == "input" and self.inside and a.get("name"):
            if a.get("type") == "checkbox" and "checked" not in a:
                return
            self.pairs.append((a["name"], a.get("value") or ""))
    def handle_endtag(self, tag):
        if tag == "form" and self.inside:
            self.inside = False; self.done = True
f = Form(); f.feed(open(sys.argv[1], encoding="utf-8").read())
pairs = [(k, sys.argv[2] if k == "size_limit_mib" else v) for k, v in f.pairs]
print(urllib.parse.urlencode(pairs), end="")
PY
to=$(web "$admin" -o "$work/settings.out" -w '%{http_code} %{redirect_url}' --data-binary "@$work/settings.form" \
      -H 'Content-Type: application/x-www-form-urlencoded' "$base/admin/settings")
[[ $to == "303 "*"/admin/settings?done=saved" ]] || fail "saving settings: $to"

# One request sent and verified; prints "MESSAGE_ID CUSTOMER_JAR".
code="Bench-$RANDOM-4711"
open_request() {
  local round=$1 token to id mail_path link i
  local jar="$work/customer-$round.jar" to_addr="customer-$round@example.org"
  token=$(web "$agent" "$base/requests/new" | csrf_of)
  to=$(web "$agent" -o "$work/request.out" -w '%{http_code} %{redirect_url}' \
        --data-urlencode "csrf=$token" --data-urlencode "recipient=$to_addr" \
        --data-urlencode "title=Upload bench $round" \
        --data-urlencode "body=Please send the large file." \
        --data-urlencode "items=Large file" --data-urlencode "kind=pdf" \
        --data-urlencode "max_mib=$size_mib" --data-urlencode "expiry_hours=72" \
        --data-urlencode "method=access_code" --data-urlencode "access_code=$code" \
        "$base/requests/new")
  [[ $to =~ ^303\ .*/messages/([^?]+)\?sent=1$ ]] || fail "sending the request: $to $(grep -o '<li>[^<]*' "$work/request.out" | head -3)"
  id=${BASH_REMATCH[1]}
  # The outbox worker puts the email in the dev mailbox shortly after.
  mail_path=""
  for ((i = 0; i < 200; i++)); do
    mail_path=$(curl -fsS "$base/dev/mailbox" | tr -d '\n' | sed 's/<tr>/\n/g' \
      | grep -F "<td>$to_addr</td>" | grep -o 'href="/dev/mailbox/[0-9]*"' | head -n1 | sed 's/^href="//; s/"$//') || true
    [ -n "$mail_path" ] && break
    sleep 0.05
  done
  [ -n "$mail_path" ] || fail "no email to $to_addr in the dev mailbox"
  link=$(curl -fsS "$base$mail_path" | grep -o "$base/p/[^\"<[:space:]]*" | head -n1)
  [ -n "$link" ] || fail "no /p/ link in $mail_path"
  rm -f "$jar"
  web "$jar" -o /dev/null -f "$link" || fail "landing page"
  to=$(web "$jar" -o /dev/null -w '%{http_code} %{redirect_url}' --data-urlencode "access_code=$code" "$link/verify")
  [[ $to == 303* ]] || fail "verifying: $to"
  echo "$id $jar"
}

# Times one upload; prints "SECONDS" (first byte sent to the 303 read).
upload() {
  local id=$1 jar=$2 token out status where t_pre t_total sent
  token=$(web "$jar" -f "$base/pickup/$id" | csrf_of)
  [ -n "$token" ] || fail "no upload form on /pickup/$id"
  sync  # start with no earlier writeback pending, as for age
  # No `Expect: 100-continue` (browsers do not send it); the time from
  # pretransfer (connected, request about to go) to the end of the response.
  out=$(web "$jar" -o "$work/upload.out" -H 'Expect:' \
         -w '%{http_code} %{redirect_url} %{time_pretransfer} %{time_total} %{size_upload}' \
         -F "csrf=$token" -F "body=" -F "item-0=@$input;type=application/pdf;filename=statement.pdf" \
         "$base/pickup/$id/submit")
  read -r status where t_pre t_total sent <<<"$out"
  if [ "$status" != 303 ] || [ "$where" != "$base/pickup/sent" ]; then
    fail "upload: HTTP $status to '$where' after $sent bytes: $(sed 's/<[^>]*>//g' "$work/upload.out" | grep -v '^\s*$' | head -5 | tr '\n' ' ')"
  fi
  awk -v a="$t_pre" -v b="$t_total" 'BEGIN { printf "%.3f", b - a }'
}

time_age() {
  local start end
  rm -f "$work/out.age"
  sync
  start=$EPOCHREALTIME
  age -r "$recipient" -o "$work/out.age" "$input" && sync "$work/out.age"
  end=$EPOCHREALTIME
  rm -f "$work/out.age"
  awk -v s="$start" -v e="$end" 'BEGIN { printf "%.3f", e - s }'
}

# The server's peak RSS since the last call (KiB, in $peak_kib), kept in
# $overall_kib; then the peak is reset (clear_refs 5), so each phase's
# own peak shows. Without the reset the figures are cumulative, and
# overall_kib is still the process's peak.
overall_kib=0 peak_kib=0
take_peak() {
  peak_kib=$(awk '/VmHWM/ {print $2}' "/proc/$server_pid/status")
  (( peak_kib > overall_kib )) && overall_kib=$peak_kib
  echo 5 2>/dev/null > "/proc/$server_pid/clear_refs" || true
}
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

declare -a t_up t_age peak_up peak_other
run_upload() {
  local opened id jar t
  opened=$(open_request "$1")
  read -r id jar <<<"$opened"
  take_peak; peak_other+=("$peak_kib")
  t=$(upload "$id" "$jar")
  take_peak; peak_up+=("$peak_kib")
  t_up+=("$t")
}
run_age() { local t; t=$(time_age); t_age+=("$t"); }

take_peak
echo "size: $size_mib MiB, $reps rounds; server pid $server_pid, RSS at start $rss_start MiB, peak during setup (sign-ins, settings) $(mib "$peak_kib") MiB"
# Alternate which goes first: on a VM, whoever first writes into memory the
# guest has not touched pays for it, which is noise, not speed.
for ((i = 1; i <= reps; i++)); do
  if ((i % 2)); then run_age; run_upload "$i"; else run_upload "$i"; run_age; fi
  echo "round $i: upload ${t_up[-1]}s | age ${t_age[-1]}s | server peak RSS: upload $(mib "${peak_up[-1]}") MiB, request + verify $(mib "${peak_other[-1]}") MiB"
done
take_peak

best() { printf '%s\n' "$@" | sort -g | head -n1; }
b_up=$(best "${t_up[@]}")
b_age=$(best "${t_age[@]}")
up_kib=$(printf '%s\n' "${peak_up[@]}" | sort -g | tail -n1)
# Every upload left one blob of the file's size or more (its ciphertext).
stored=$(find "$work/data/blobs" -name '*.age' -size +"${bytes}c" | wc -l)
[ "$stored" -eq "$reps" ] || fail "$stored full-size blobs stored for $reps uploads"
grep -q 'panicked\|ERROR' "$work/serve.log" && { echo "server log errors:"; grep 'panicked\|ERROR' "$work/serve.log" | head -5; }

awk -v b="$bytes" -v up="$b_up" -v ag="$b_age" -v peak="$overall_kib" -v up_peak="$up_kib" -v mib="$size_mib" -v reps="$reps" 'BEGIN {
  printf "size: %d MiB, best of %d rounds, output durable in both cases\n", mib, reps
  printf "%-34s %10s %10s\n", "operation", "seconds", "MiB/s"
  printf "%-34s %10.3f %10.1f\n", "age CLI encrypt + sync", ag, b / ag / 1048576
  printf "%-34s %10.3f %10.1f\n", "customer upload (curl, to the 303)", up, b / up / 1048576
  printf "server peak RSS (VmHWM): %.1f MiB over the run, %.1f MiB during uploads\n", peak / 1024, up_peak / 1024
  printf "upload_vs_age_cli=%.2f peak_rss_mib=%d\n", ag / up, int(peak / 1024 + 0.999)
}'
