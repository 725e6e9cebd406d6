#!/usr/bin/env bash
# Creates the secrets deploy/compose.yaml mounts, in deploy/secrets/ (0700).
# Never overwrites an existing file: run it again safely; delete a file to
# make a new one (never the master key of an installation holding data).
#
#   master.key            the Sealpost master key (an age identity), 0600,
#                         owned by CONTAINER_UID (default 10001). BACK IT UP.
#   postgres_password     the PostgreSQL password …
#   database_url          … and the URL Sealpost connects with (same password)
#   s3_secret_access_key  MinIO's root password = Sealpost's S3 secret key
#
# Needs age-keygen (Debian/Ubuntu: apt-get install age) for the master key.
# Sealpost reads the standard age identity format, so the file works as is.
set -euo pipefail
cd "$(dirname "$0")"

uid=${CONTAINER_UID:-10001}
gid=${CONTAINER_GID:-10001}
dir=secrets
umask 077
mkdir -p "$dir"
chmod 0700 "$dir"

random_hex() { head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n'; }

# Readable inside the containers by whatever user reads them (postgres,
# minio, sealpost); the 0700 folder keeps other host users out.
write_new() { # name value
  local file="$dir/$1"
  [ -e "$file" ] && return 0
  printf '%s' "$2" >"$file"
  chmod 0644 "$file"
  echo "created $file"
}

if [ ! -e "$dir/postgres_password" ]; then
  rm -f "$dir/database_url" # it must carry the new password
  write_new postgres_password "$(random_hex)"
fi
write_new database_url "postgres://sealpost:$(cat "$dir/postgres_password")@postgres:5432/sealpost"
write_new s3_secret_access_key "$(random_hex)"

key="$dir/master.key"
if [ ! -e "$key" ]; then
  if ! command -v age-keygen >/dev/null 2>&1; then
    echo "age-keygen not found: install the age package (apt-get install age) and run this again" >&2
    exit 1
  fi
  age-keygen -o "$key" 2>/dev/null
  chmod 0600 "$key"
  echo "created $key: back it up now, offline and apart from database backups"
fi

# Sealpost refuses a key file group or others can read, so it cannot be
# 0644 like the rest; it must belong to the UID the containers run as.
if [ "$(stat -c %u:%g "$key")" != "$uid:$gid" ]; then
  if [ "$(id -u)" -eq 0 ]; then
    chown "$uid:$gid" "$key"
  elif command -v sudo >/dev/null 2>&1; then
    sudo chown "$uid:$gid" "$key"
  else
    echo "run as root: chown $uid:$gid $PWD/$key" >&2
    exit 1
  fi
fi
chmod 0600 "$key"
echo "secrets ready in $PWD/$dir"
