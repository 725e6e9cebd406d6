//! Runtime configuration.
//!
//! Layers, later ones winning: built-in defaults, then an optional TOML file,
//! then `SEALPOST_*` environment variables. Derived defaults (`database_url`,
//! `blob_dir`, `master_key_file`, `public_url`) follow the final `data_dir`
//! and `bind`: settings load in declaration order, after layering.
//!
//! Every secret setting `x` can instead be read from a file named by `x_file`
//! (TOML) or `SEALPOST_X_FILE` (env), the way container secret stores mount
//! them. Setting both forms in one layer is an error. Across layers the higher
//! layer replaces the setting whichever form it uses, so an env `_FILE` overrides
//! a TOML value and vice versa; an overridden `_FILE` is never read.
//!
//! A layer replaces a setting as a whole: an env `SEALPOST_ESCROW_RECIPIENTS`
//! replaces the file's list rather than adding to it, and an empty value means
//! "no escrow recipients". Only effective values are validated.
//!
//! Env names are `SEALPOST_` + the key uppercased; any other `SEALPOST_*`
//! variable is an error, except `SEALPOST_TEST_*` (reserved for tests).
//!
//! Error messages name the setting and where it came from, never its value:
//! a secret put into the wrong setting by mistake must not end up in a log.
//!
//! **Adding a setting** is one entry in the [`settings!`](declare::settings)
//! declaration below: its field, key, kind, README text and how it loads.
//! Name lookup, `_file` forms, redaction, the README table and
//! `deploy/settings.txt` (what `deploy/validate.py` checks against) follow
//! from it; `config::docs` tests say when the two files need regenerating.
//! The layering is hand-written rather than `figment`'s: unknown keys and
//! both forms of a secret are errors, and no error ever quotes a value.

mod declare;
pub mod docs;
mod error;
mod layers;
mod net;
mod s3;
mod secrets;
mod smtp_url;
mod values;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use age::x25519::Recipient;

pub use declare::{Kind, Setting};
pub use error::{ConfigError, Origin};
pub use net::TrustedProxies;
pub use s3::S3Location;
/// Re-exported so callers can name and read secret fields without a direct
/// `secrecy` dependency.
pub use secrecy::{ExposeSecret, SecretString};
pub use smtp_url::{SmtpCredentials, SmtpTls, SmtpUrl, SmtpUrlError};
pub use values::LogFormat;

use declare::settings;
use secrets::{hide_url_password, read_secret};

/// The pool size before it was a setting: SQLite has one writer anyway.
const DEFAULT_DB_MAX_CONNECTIONS: u64 = 10;

settings! {
    layer: layer;

    /// Root of local state. Key `data_dir`, default `./data`.
    data_dir: PathBuf {
        kind: Text,
        default: "`./data`",
        about: "local state",
        load: |set| values::path(set)?.unwrap_or_else(|| PathBuf::from("./data")),
    }
    /// Secret. Key `database_url`, default `sqlite://{data_dir}/sealpost.db`.
    database_url: SecretString {
        kind: Secret(hide_url_password),
        default: "`sqlite://<data dir>/sealpost.db`",
        about: "or `postgres://user:pass@host/db`",
        load: |set| match set {
            Some(set) => values::database_url(read_secret(set)?)?,
            None => format!("sqlite://{}", data_dir.join("sealpost.db").display()).into(),
        },
    }
    /// Encrypted blob store. Key `blob_dir`, default `{data_dir}/blobs`.
    /// Not used when `blob_url` is set.
    blob_dir: PathBuf {
        kind: Text,
        default: "`<data dir>/blobs`",
        about: "ciphertext files (unused with `BLOB_URL`)",
        load: |set| values::path(set)?.unwrap_or_else(|| data_dir.join("blobs")),
    }
    /// An S3 bucket (and optional key prefix) for the encrypted blobs instead
    /// of `blob_dir`. Key `blob_url`, `s3://bucket` or `s3://bucket/prefix`;
    /// default none (the local folder).
    blob_url: Option<S3Location> {
        kind: Text,
        default: "none: the local `BLOB_DIR`",
        about: "`s3://bucket` or `s3://bucket/prefix`: ciphertext in an S3-compatible bucket \
                (see *Blobs in S3*)",
        load: |set| set.map(s3::parse_blob_url).transpose()?,
    }
    /// The S3 API endpoint, for S3-compatible stores (MinIO, Ceph, …). Key
    /// `s3_endpoint`, e.g. `https://minio.internal:9000`; default none
    /// (AWS). Plain HTTP is allowed only when written as `http://`.
    s3_endpoint: Option<String> {
        kind: Text,
        default: "none: AWS",
        about: "e.g. `https://minio.internal:9000`; plain HTTP only when written `http://` \
                (a local test server)",
        load: |set| s3::needs_bucket(set, blob_url.as_ref())?
            .map(s3::parse_endpoint)
            .transpose()?,
    }
    /// Key `s3_region`, default `us-east-1`.
    s3_region: String {
        kind: Text,
        default: "`us-east-1`",
        about: "",
        load: |set| match s3::needs_bucket(set, blob_url.as_ref())? {
            Some(set) => s3::check_region(set)?,
            None => s3::DEFAULT_REGION.to_owned(),
        },
        // Only means something with a bucket, like the other S3 settings.
        show_if: |config| config.blob_url.is_some(),
    }
    /// Key `s3_access_key_id`; default none: with neither key set, the
    /// instance's role credentials (EC2/ECS metadata) are used.
    s3_access_key_id: Option<String> {
        kind: Text,
        default: "none: the instance role",
        about: "set together with the secret key",
        load: |set| s3::needs_bucket(set, blob_url.as_ref())?
            .map(|set| s3::access_key_id(set, layer.is_set("s3_secret_access_key")))
            .transpose()?,
    }
    /// Secret. Key `s3_secret_access_key`; set together with the key id.
    s3_secret_access_key: Option<SecretString> {
        kind: Secret,
        default: "none",
        about: "",
        load: |set| s3::needs_bucket(set, blob_url.as_ref())?
            .map(|set| s3::secret_access_key(set, s3_access_key_id.as_ref()))
            .transpose()?,
    }
    /// Path of the master key (an ordinary path, not a secret). Key
    /// `master_key_file`, default `{data_dir}/master.key`.
    master_key_file: PathBuf {
        kind: Text,
        default: "`<data dir>/master.key`",
        about: "age identity file, mode 0600",
        load: |set| values::path(set)?.unwrap_or_else(|| data_dir.join("master.key")),
    }
    /// Extra recipients every message is also encrypted to. Key
    /// `escrow_recipients`, default none.
    escrow_recipients: Vec<Recipient> {
        kind: List,
        default: "none",
        about: "comma-separated `age1…` public keys",
        load: |set| set.map(values::recipients).transpose()?.unwrap_or_default(),
    }
    /// Listen address. Key `bind`, default `127.0.0.1:8080`.
    bind: SocketAddr {
        kind: Text,
        default: "`127.0.0.1:8080`",
        about: "listen address",
        load: |set| match set {
            Some(set) => net::socket_addr(
                set,
                "a socket address such as 127.0.0.1:8080 or [::1]:8080",
            )?,
            None => SocketAddr::from((Ipv4Addr::LOCALHOST, 8080)),
        },
    }
    /// Base URL for links, without a trailing slash. Key `public_url`,
    /// default `http://{bind}`.
    public_url: String {
        kind: Text,
        default: "`http://<bind>`",
        about: "the address customers use",
        load: |set| match set {
            Some(set) => net::public_url(set)?,
            None => format!("http://{bind}"),
        },
    }
    /// A `tracing` `EnvFilter` directive. Key `log`, default `info`.
    log: String {
        kind: Text,
        default: "`info`",
        about: "tracing filter",
        load: |set| set.map(values::log_filter).transpose()?.unwrap_or_else(|| "info".to_owned()),
    }
    /// Secret (may hold a password). Key `smtp_url`, e.g.
    /// `smtp://user:pass@host:587?tls=starttls`, `smtps://host`,
    /// `smtp://host:25`. Default none: mail goes to the local dev mailbox.
    smtp_url: Option<SmtpUrl> {
        kind: Secret(hide_url_password),
        default: "none: the dev mailbox",
        about: "`smtp://user:pass@host:587?tls=starttls` (STARTTLS required; \
                `tls=opportunistic` also works), `smtps://user:pass@host` (TLS from the start, \
                port 465), `smtp://host:25` (plain, for a local relay)",
        load: |set| match set {
            Some(set) => {
                let set = read_secret(set)?;
                // The message never echoes the URL (it may hold a password).
                Some(SmtpUrl::parse(set.value.expose_secret()).map_err(|_| {
                    set.invalid(
                        "an smtp:// or smtps:// URL with a host, such as \
                         smtp://user:pass@host:587?tls=starttls, smtps://host or smtp://host:25",
                    )
                })?)
            }
            None => None,
        },
    }
    /// The `From:` of every email. Key `mail_from`, default
    /// `Sealpost <sealpost@localhost>`.
    mail_from: String {
        kind: Text,
        default: "`Sealpost <sealpost@localhost>`",
        about: "the `From:` of every email",
        load: |set| match set {
            Some(set) => values::mail_from(set)?,
            None => "Sealpost <sealpost@localhost>".to_owned(),
        },
    }
    /// Where Prometheus scrapes `/metrics`: a listener of its own, so the
    /// public one never serves it. Key `metrics_bind`, e.g. `127.0.0.1:9090`;
    /// default none (no metrics listener).
    metrics_bind: Option<SocketAddr> {
        kind: Text,
        default: "none: no metrics",
        about: "listen address for Prometheus `/metrics`, e.g. `127.0.0.1:9090`; a listener of \
                its own, never the public one",
        load: |set| set.map(|set| net::metrics_bind(set, bind)).transpose()?,
    }
    /// A ClamAV daemon that scans every file customers send before it is
    /// accepted. Key `clamd_url`: `tcp://host:port` or
    /// `unix:///run/clamav/clamd.ctl`; default none (no scan). While it is
    /// set and unreachable, customer uploads are refused (fail closed).
    clamd_url: Option<String> {
        kind: Text,
        default: "none: no malware scan",
        about: "`tcp://127.0.0.1:3310` or `unix:///run/clamav/clamd.ctl`: scan customer uploads \
                with clamd (`INSTREAM`); uploads are refused while it is unreachable",
        load: |set| set.map(values::clamd_url).transpose()?,
    }
    /// Log line format. Key `log_format`: `text` (default) or `json`.
    log_format: LogFormat {
        kind: Text,
        default: "`text`",
        about: "`json`: one JSON object per line on stderr",
        load: |set| set.map(LogFormat::parse).transpose()?.unwrap_or(LogFormat::Text),
    }
    /// How long a stopping server waits for requests in flight (and the
    /// mail worker for sends in flight). Key `shutdown_timeout_secs`, default 30.
    shutdown_timeout: Duration {
        key: "shutdown_timeout_secs",
        kind: Number,
        default: "`30`",
        about: "on SIGTERM/SIGINT, how long requests and email sends in flight may take to finish",
        load: |set| Duration::from_secs(values::number(
            set,
            0..=3600,
            30,
            "a whole number of seconds from 0 to 3600",
        )?),
    }
    /// How long a client may take to send a request's headers (slowloris).
    /// It also starts as soon as a kept-alive connection falls idle, so it
    /// bounds idle keep-alive too. Key `header_read_timeout_secs`, default 10.
    header_read_timeout: Duration {
        key: "header_read_timeout_secs",
        kind: Number,
        default: "`10`",
        about: "how long a client may take to send a request's headers (slowloris); a \
                kept-alive connection that falls idle is closed after this long too",
        load: |set| Duration::from_secs(values::number(
            set,
            1..=300,
            10,
            "a whole number of seconds from 1 to 300",
        )?),
    }
    /// A connection on which no byte moves either way for this long is
    /// closed: a client that stops reading a download or stops sending a
    /// request body. Key `idle_timeout_secs`, default 60.
    idle_timeout: Duration {
        key: "idle_timeout_secs",
        kind: Number,
        default: "`60`",
        about: "a connection on which no byte moves either way for this long is closed (a \
                client that stopped reading a download or sending a body)",
        load: |set| Duration::from_secs(values::number(
            set,
            1..=3600,
            60,
            "a whole number of seconds from 1 to 3600",
        )?),
    }
    /// Reverse proxies whose `X-Forwarded-For` is believed. Key
    /// `trusted_proxies`: IP addresses or CIDR ranges; default none.
    trusted_proxies: TrustedProxies {
        kind: List,
        default: "none",
        about: "comma-separated IPs or CIDR ranges (`10.0.0.0/8,192.0.2.7`) of reverse proxies \
                whose `X-Forwarded-For` is believed",
        load: |set| set.map(TrustedProxies::parse).transpose()?.unwrap_or_default(),
    }
    /// Largest database pool. Key `db_max_connections`, default 10.
    db_max_connections: u32 {
        kind: Number,
        default: "`10`",
        about: "largest database pool (a second pool for sessions and the landing page takes at \
                most 8 more, never more than this)",
        load: |set| u32::try_from(values::number(
            set,
            1..=1000,
            DEFAULT_DB_MAX_CONNECTIONS,
            "a whole number from 1 to 1000",
        )?)
        .unwrap_or(u32::MAX),
    }
    /// How long a request waits for a pooled connection before failing.
    /// Key `db_acquire_timeout_secs`, default 30.
    db_acquire_timeout: Duration {
        key: "db_acquire_timeout_secs",
        kind: Number,
        default: "`30`",
        about: "how long a request waits for a free database connection",
        load: |set| Duration::from_secs(values::number(
            set,
            1..=3600,
            30,
            "a whole number of seconds from 1 to 3600",
        )?),
    }
}

impl Config {
    /// Whether `public_url` is HTTPS (drives `Secure` cookies, `__Host-` and HSTS).
    pub fn is_https(&self) -> bool {
        self.public_url.starts_with("https://")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_setting_is_loaded_and_shown() -> Result<(), ConfigError> {
        // debug_assert in load checks every setting is consumed.
        let env = SETTINGS.iter().map(|setting| {
            let value = match setting.key {
                "bind" => "127.0.0.1:1",
                "public_url" => "https://example.com",
                "database_url" => "sqlite::memory:",
                "escrow_recipients" => "",
                "smtp_url" => "smtp://localhost:25",
                "mail_from" => "a@example.com",
                "blob_url" => "s3://bucket/prefix",
                "s3_endpoint" => "http://127.0.0.1:9000",
                "metrics_bind" => "127.0.0.1:2",
                "clamd_url" => "tcp://127.0.0.1:3310",
                "log_format" => "json",
                "trusted_proxies" => "10.0.0.0/8,192.0.2.7",
                "shutdown_timeout_secs"
                | "header_read_timeout_secs"
                | "idle_timeout_secs"
                | "db_max_connections"
                | "db_acquire_timeout_secs" => "5",
                _ => "x",
            };
            (
                format!("SEALPOST_{}", setting.key.to_uppercase()),
                value.to_owned(),
            )
        });
        let shown = Config::load(None, env)?.to_redacted_toml();
        let keys: Vec<&str> = shown.lines().filter_map(|l| l.split(' ').next()).collect();
        let expected: Vec<&str> = SETTINGS.iter().map(|setting| setting.key).collect();
        assert_eq!(keys, expected);
        Ok(())
    }

    #[test]
    fn no_secret_is_shown_in_clear() -> Result<(), ConfigError> {
        // Every secret set to a value with a canary where a password goes,
        // and where a whole-value secret would be.
        let canary = "canary-pw-7f3a9";
        let env = SETTINGS
            .iter()
            .filter(|setting| setting.kind == Kind::Secret)
            .map(|setting| {
                let value = match setting.key {
                    "database_url" => format!("postgres://u:{canary}@h/db"),
                    "smtp_url" => format!("smtp://u:{canary}@h:587?tls=starttls"),
                    _ => canary.to_owned(),
                };
                (format!("SEALPOST_{}", setting.key.to_uppercase()), value)
            })
            .chain([
                ("SEALPOST_BLOB_URL".to_owned(), "s3://bucket".to_owned()),
                ("SEALPOST_S3_ACCESS_KEY_ID".to_owned(), "AKIA".to_owned()),
            ]);
        let config = Config::load(None, env)?;
        let shown = config.to_redacted_toml();
        assert!(!shown.contains(canary), "{shown}");
        assert!(!format!("{config:?}").contains(canary));
        for setting in SETTINGS.iter().filter(|s| s.kind == Kind::Secret) {
            assert!(
                shown.lines().any(|l| l.starts_with(setting.key)),
                "{} missing from:\n{shown}",
                setting.key
            );
        }
        Ok(())
    }
}
