//! Runtime configuration.
//!
//! Layers, later ones winning: built-in defaults, then an optional TOML file,
//! then `SEALPOST_*` environment variables. Derived defaults (`database_url`,
//! `blob_dir`, `master_key_file`, `public_url`) are computed after layering, so
//! they follow the final `data_dir` and `bind`.
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

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use age::x25519::Recipient;
use secrecy::zeroize::Zeroizing;
/// Re-exported so callers can name and read secret fields without a direct
/// `secrecy` dependency.
pub use secrecy::{ExposeSecret, SecretString};

const ENV_PREFIX: &str = "SEALPOST_";
/// Reserved for the test suite so its variables do not trip the unknown-setting check.
const IGNORED_ENV_PREFIX: &str = "SEALPOST_TEST_";
/// Guards against `_FILE` pointing at something huge or endless (`/dev/zero`).
const MAX_SECRET_FILE_BYTES: u64 = 64 * 1024;
const DEFAULT_MAIL_FROM: &str = "Sealpost <sealpost@localhost>";
const DEFAULT_S3_REGION: &str = "us-east-1";
/// The pool size before it was a setting: SQLite has one writer anyway.
const DEFAULT_DB_MAX_CONNECTIONS: u64 = 10;

/// Every setting, by TOML key. The env name is `SEALPOST_` + the key uppercased.
/// A secret also accepts `<key>_file`; adding one is one line here (plus its
/// field in [`Config`], its line in [`Config::load`] and [`Config::to_redacted_toml`]).
const SETTINGS: &[(&str, Kind)] = &[
    ("data_dir", Kind::Text),
    ("database_url", secret(hide_url_password)),
    ("blob_dir", Kind::Text),
    ("blob_url", Kind::Text),
    ("s3_endpoint", Kind::Text),
    ("s3_region", Kind::Text),
    ("s3_access_key_id", Kind::Text),
    ("s3_secret_access_key", secret(hide_all)),
    ("master_key_file", Kind::Text),
    ("escrow_recipients", Kind::List),
    ("bind", Kind::Text),
    ("public_url", Kind::Text),
    ("log", Kind::Text),
    ("smtp_url", secret(hide_url_password)),
    ("mail_from", Kind::Text),
    ("metrics_bind", Kind::Text),
    ("log_format", Kind::Text),
    ("shutdown_timeout_secs", Kind::Number),
    ("header_read_timeout_secs", Kind::Number),
    ("idle_timeout_secs", Kind::Number),
    ("trusted_proxies", Kind::List),
    ("db_max_connections", Kind::Number),
    ("db_acquire_timeout_secs", Kind::Number),
];

/// A secret setting; `show` renders it for `to_redacted_toml` (use `hide_all`
/// unless part of the value is safe and useful to show).
const fn secret(show: fn(&str) -> String) -> Kind {
    Kind::Secret { show }
}

#[derive(Clone, Copy)]
enum Kind {
    Text,
    /// A whole number: a TOML integer (or string), a string in env.
    Number,
    /// Comma-separated in env; a TOML array or comma-separated string.
    List,
    /// `show` renders the value for `to_redacted_toml`.
    Secret {
        show: fn(&str) -> String,
    },
}

/// The effective configuration.
///
/// `Debug` is safe to log: secrets are [`SecretString`]s, whose `Debug` redacts.
#[derive(Debug, Clone)]
pub struct Config {
    /// Root of local state. Key `data_dir`, default `./data`.
    pub data_dir: PathBuf,
    /// Secret. Key `database_url`, default `sqlite://{data_dir}/sealpost.db`.
    pub database_url: SecretString,
    /// Encrypted blob store. Key `blob_dir`, default `{data_dir}/blobs`.
    /// Not used when `blob_url` is set.
    pub blob_dir: PathBuf,
    /// An S3 bucket (and optional key prefix) for the encrypted blobs instead
    /// of `blob_dir`. Key `blob_url`, `s3://bucket` or `s3://bucket/prefix`;
    /// default none (the local folder).
    pub blob_url: Option<S3Location>,
    /// The S3 API endpoint, for S3-compatible stores (MinIO, Ceph, …). Key
    /// `s3_endpoint`, e.g. `https://minio.internal:9000`; default none
    /// (AWS). Plain HTTP is allowed only when written as `http://`.
    pub s3_endpoint: Option<String>,
    /// Key `s3_region`, default `us-east-1`.
    pub s3_region: String,
    /// Key `s3_access_key_id`; default none: with neither key set, the
    /// instance's role credentials (EC2/ECS metadata) are used.
    pub s3_access_key_id: Option<String>,
    /// Secret. Key `s3_secret_access_key`; set together with the key id.
    pub s3_secret_access_key: Option<SecretString>,
    /// Path of the master key (an ordinary path, not a secret). Key
    /// `master_key_file`, default `{data_dir}/master.key`.
    pub master_key_file: PathBuf,
    /// Extra recipients every message is also encrypted to. Key
    /// `escrow_recipients`, default none.
    pub escrow_recipients: Vec<Recipient>,
    /// Listen address. Key `bind`, default `127.0.0.1:8080`.
    pub bind: SocketAddr,
    /// Base URL for links, without a trailing slash. Key `public_url`,
    /// default `http://{bind}`.
    pub public_url: String,
    /// A `tracing` `EnvFilter` directive. Key `log`, default `info`.
    pub log: String,
    /// Secret (may hold a password). Key `smtp_url`, e.g.
    /// `smtp://user:pass@host:587?tls=starttls`, `smtps://host`,
    /// `smtp://host:25`. Default none: mail goes to the local dev mailbox.
    pub smtp_url: Option<SecretString>,
    /// The `From:` of every email. Key `mail_from`, default
    /// `Sealpost <sealpost@localhost>`.
    pub mail_from: String,
    /// Where Prometheus scrapes `/metrics`: a listener of its own, so the
    /// public one never serves it. Key `metrics_bind`, e.g. `127.0.0.1:9090`;
    /// default none (no metrics listener).
    pub metrics_bind: Option<SocketAddr>,
    /// Log line format. Key `log_format`: `text` (default) or `json`.
    pub log_format: LogFormat,
    /// How long a stopping server waits for requests in flight (and the
    /// mail worker for sends in flight). Key `shutdown_timeout_secs`, default 30.
    pub shutdown_timeout: Duration,
    /// How long a client may take to send a request's headers (slowloris).
    /// It also starts as soon as a kept-alive connection falls idle, so it
    /// bounds idle keep-alive too. Key `header_read_timeout_secs`, default 10.
    pub header_read_timeout: Duration,
    /// A connection on which no byte moves either way for this long is
    /// closed: a client that stops reading a download or stops sending a
    /// request body. Key `idle_timeout_secs`, default 60.
    pub idle_timeout: Duration,
    /// Reverse proxies whose `X-Forwarded-For` is believed. Key
    /// `trusted_proxies`: IP addresses or CIDR ranges; default none.
    pub trusted_proxies: TrustedProxies,
    /// Largest database pool. Key `db_max_connections`, default 10.
    pub db_max_connections: u32,
    /// How long a request waits for a pooled connection before failing.
    /// Key `db_acquire_timeout_secs`, default 30.
    pub db_acquire_timeout: Duration,
}

/// How log lines are written (`log_format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

impl LogFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

/// Where a value came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The key `key` in the TOML file at `path`.
    File {
        /// The config file.
        path: PathBuf,
        /// The key as written, e.g. `database_url_file`.
        key: String,
    },
    /// The environment variable `var`.
    Env {
        /// The variable name, e.g. `SEALPOST_BIND`.
        var: String,
    },
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File { path, key } => write!(f, "`{key}` in {}", path.display()),
            Origin::Env { var } => f.write_str(var),
        }
    }
}

/// Why the configuration could not be loaded. No variant carries a setting's value.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The TOML file could not be read.
    #[error("cannot read config file {path}: {source}")]
    ReadFile {
        /// The config file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The TOML file is not valid TOML.
    #[error("config file {path} is not valid TOML{}: {message}", at(*.position))]
    ParseFile {
        /// The config file.
        path: PathBuf,
        /// 1-based line and column of the problem, when known.
        position: Option<(usize, usize)>,
        /// The parser's message (without the source excerpt, which may hold secrets).
        message: String,
    },
    /// The TOML file has a key that is not a setting.
    #[error("unknown setting `{key}` in config file {path}")]
    UnknownFileKey {
        /// The config file.
        path: PathBuf,
        /// The unknown key.
        key: String,
    },
    /// A TOML value has the wrong type (e.g. a number where a string is needed).
    #[error("{origin} must be {expected}")]
    WrongType {
        /// Where the value is.
        origin: Origin,
        /// The accepted TOML type(s).
        expected: &'static str,
    },
    /// A `SEALPOST_*` environment variable that is not a setting.
    #[error("unknown setting {var} in the environment")]
    UnknownEnvVar {
        /// The variable name.
        var: String,
    },
    /// A secret is given both directly and via its `_file` form in one layer.
    #[error("{direct} and {file} are both set; set only one")]
    SecretConflict {
        /// Where the direct value is set.
        direct: Origin,
        /// Where the `_file` form is set.
        file: Origin,
    },
    /// The file named by a secret's `_file` form could not be read.
    #[error("cannot read {setting} from {path} (named by {origin}): {source}")]
    ReadSecretFile {
        /// The secret setting.
        setting: &'static str,
        /// The file that could not be read.
        path: PathBuf,
        /// Where the path was set.
        origin: Origin,
        /// The underlying error.
        source: io::Error,
    },
    /// A value is not acceptable for its setting.
    #[error("invalid {setting} (from {origin}): expected {expected}")]
    Invalid {
        /// The setting.
        setting: &'static str,
        /// Where the value came from (for a secret read from a file, the `_file` setting).
        origin: Origin,
        /// What would have been accepted.
        expected: &'static str,
    },
    /// A setting that only means something together with another one, which
    /// is missing: refused rather than silently ignored.
    #[error("{origin} has no effect without {needs}; set {needs} too, or remove it")]
    Needs {
        /// Where the lone setting came from.
        origin: Origin,
        /// What is missing, e.g. `blob_url = "s3://…"`.
        needs: &'static str,
    },
    /// An escrow recipient does not parse as an age X25519 recipient.
    #[error(
        "invalid escrow_recipients[{index}] (from {origin}): {reason}; \
         expected an age X25519 recipient (age1...)"
    )]
    BadRecipient {
        /// Zero-based position as written (empty entries count).
        index: usize,
        /// Where the list came from.
        origin: Origin,
        /// Why it was rejected.
        reason: &'static str,
    },
}

fn at(position: Option<(usize, usize)>) -> String {
    position.map_or_else(String::new, |(line, column)| {
        format!(" at line {line}, column {column}")
    })
}

impl Config {
    /// Loads from an optional TOML file and an injected environment (tests pass
    /// their own map; `main` passes `std::env::vars()`).
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut layer = match file {
            Some(path) => file_layer(path)?,
            None => Layer::default(),
        };
        layer.merge(env_layer(env)?);

        let data_dir = layer.path("data_dir")?.unwrap_or_else(|| "./data".into());
        let blob_dir = layer
            .path("blob_dir")?
            .unwrap_or_else(|| data_dir.join("blobs"));
        let master_key_file = layer
            .path("master_key_file")?
            .unwrap_or_else(|| data_dir.join("master.key"));
        let database_url = match layer.secrets.remove("database_url") {
            Some(set) => check_database_url(read_secret("database_url", set)?)?,
            None => format!("sqlite://{}", data_dir.join("sealpost.db").display()).into(),
        };
        let escrow_recipients = match layer.lists.remove("escrow_recipients") {
            Some(set) => parse_recipients(set)?,
            None => Vec::new(),
        };
        let bind = match layer.text.remove("bind") {
            Some(set) => set.value.parse().map_err(|_| ConfigError::Invalid {
                setting: "bind",
                origin: set.origin,
                expected: "a socket address such as 127.0.0.1:8080 or [::1]:8080",
            })?,
            None => SocketAddr::from((Ipv4Addr::LOCALHOST, 8080)),
        };
        let public_url = match layer.text.remove("public_url") {
            Some(set) => parse_public_url(set)?,
            None => format!("http://{bind}"),
        };
        let log = match layer.text.remove("log") {
            Some(set) if set.value.trim().is_empty() => {
                return Err(ConfigError::Invalid {
                    setting: "log",
                    origin: set.origin,
                    expected: "a tracing filter such as `info` or `sealpost=debug`",
                });
            }
            Some(set) => set.value,
            None => "info".to_owned(),
        };
        let smtp_url = match layer.secrets.remove("smtp_url") {
            Some(set) => Some(check_smtp_url(read_secret("smtp_url", set)?)?),
            None => None,
        };
        let mail_from = match layer.text.remove("mail_from") {
            Some(set) => check_mail_from(set)?,
            None => DEFAULT_MAIL_FROM.to_owned(),
        };
        let s3 = load_s3(&mut layer)?;
        let metrics_bind = match layer.text.remove("metrics_bind") {
            Some(set) => Some(parse_metrics_bind(set, bind)?),
            None => None,
        };
        let log_format = match layer.text.remove("log_format") {
            Some(set) => match set.value.as_str() {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                _ => {
                    return Err(ConfigError::Invalid {
                        setting: "log_format",
                        origin: set.origin,
                        expected: "`text` or `json`",
                    });
                }
            },
            None => LogFormat::Text,
        };
        let shutdown_timeout = Duration::from_secs(layer.number(
            "shutdown_timeout_secs",
            0..=3600,
            30,
            "a whole number of seconds from 0 to 3600",
        )?);
        let header_read_timeout = Duration::from_secs(layer.number(
            "header_read_timeout_secs",
            1..=300,
            10,
            "a whole number of seconds from 1 to 300",
        )?);
        let idle_timeout = Duration::from_secs(layer.number(
            "idle_timeout_secs",
            1..=3600,
            60,
            "a whole number of seconds from 1 to 3600",
        )?);
        let trusted_proxies = match layer.lists.remove("trusted_proxies") {
            Some(set) => TrustedProxies::parse(set)?,
            None => TrustedProxies::default(),
        };
        let db_max_connections = u32::try_from(layer.number(
            "db_max_connections",
            1..=1000,
            DEFAULT_DB_MAX_CONNECTIONS,
            "a whole number from 1 to 1000",
        )?)
        .unwrap_or(u32::MAX);
        let db_acquire_timeout = Duration::from_secs(layer.number(
            "db_acquire_timeout_secs",
            1..=3600,
            30,
            "a whole number of seconds from 1 to 3600",
        )?);
        debug_assert!(
            layer.is_empty(),
            "every setting in SETTINGS must be consumed"
        );

        Ok(Config {
            data_dir,
            database_url,
            blob_dir,
            blob_url: s3.blob_url,
            s3_endpoint: s3.endpoint,
            s3_region: s3.region,
            s3_access_key_id: s3.access_key_id,
            s3_secret_access_key: s3.secret_access_key,
            master_key_file,
            escrow_recipients,
            bind,
            public_url,
            log,
            smtp_url,
            mail_from,
            metrics_bind,
            log_format,
            shutdown_timeout,
            header_read_timeout,
            idle_timeout,
            trusted_proxies,
            db_max_connections,
            db_acquire_timeout,
        })
    }

    /// The effective config as TOML text with secrets redacted (used by `sealpost config`).
    pub fn to_redacted_toml(&self) -> String {
        let path = |p: &Path| toml::Value::String(p.to_string_lossy().into_owned());
        let text = |s: &str| toml::Value::String(s.to_owned());
        let secret = |key: &str, s: &SecretString| text(&show_secret(key, s.expose_secret()));
        let recipients = self
            .escrow_recipients
            .iter()
            .map(|r| toml::Value::String(r.to_string()))
            .collect();
        let head = [
            ("data_dir", path(&self.data_dir)),
            ("database_url", secret("database_url", &self.database_url)),
            ("blob_dir", path(&self.blob_dir)),
        ];
        // The S3 settings only mean something with a bucket; unset ones have
        // no TOML spelling and are left out.
        let s3 = self.blob_url.as_ref().map(|location| {
            [
                Some(("blob_url", text(&location.to_string()))),
                self.s3_endpoint
                    .as_deref()
                    .map(|e| ("s3_endpoint", text(e))),
                Some(("s3_region", text(&self.s3_region))),
                self.s3_access_key_id
                    .as_deref()
                    .map(|id| ("s3_access_key_id", text(id))),
                self.s3_secret_access_key
                    .as_ref()
                    .map(|k| ("s3_secret_access_key", secret("s3_secret_access_key", k))),
            ]
        });
        let entries = [
            ("master_key_file", path(&self.master_key_file)),
            ("escrow_recipients", toml::Value::Array(recipients)),
            ("bind", text(&self.bind.to_string())),
            ("public_url", text(&self.public_url)),
            ("log", text(&self.log)),
        ];
        // An unset SMTP URL has no TOML spelling; it is left out.
        let smtp = self
            .smtp_url
            .as_ref()
            .map(|url| ("smtp_url", secret("smtp_url", url)));
        let mail = [("mail_from", text(&self.mail_from))];
        let number = |n: u64| toml::Value::Integer(i64::try_from(n).unwrap_or(i64::MAX));
        // No metrics listener has no TOML spelling either.
        let metrics = self
            .metrics_bind
            .map(|addr| ("metrics_bind", text(&addr.to_string())));
        let operations = [
            ("log_format", text(self.log_format.as_str())),
            (
                "shutdown_timeout_secs",
                number(self.shutdown_timeout.as_secs()),
            ),
            (
                "header_read_timeout_secs",
                number(self.header_read_timeout.as_secs()),
            ),
            ("idle_timeout_secs", number(self.idle_timeout.as_secs())),
            (
                "trusted_proxies",
                toml::Value::Array(
                    self.trusted_proxies
                        .ranges()
                        .iter()
                        .map(|r| text(&r.to_string()))
                        .collect(),
                ),
            ),
            (
                "db_max_connections",
                number(u64::from(self.db_max_connections)),
            ),
            (
                "db_acquire_timeout_secs",
                number(self.db_acquire_timeout.as_secs()),
            ),
        ];
        head.into_iter()
            .chain(s3.into_iter().flatten().flatten())
            .chain(entries)
            .chain(smtp)
            .chain(mail)
            .chain(metrics)
            .chain(operations)
            .map(|(key, value)| format!("{key} = {value}\n"))
            .collect()
    }

    /// Whether `public_url` is HTTPS (drives `Secure` cookies, `__Host-` and HSTS).
    pub fn is_https(&self) -> bool {
        self.public_url.starts_with("https://")
    }
}

/// A setting name as written maps to a setting and the form it was given in.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Form {
    Value,
    File,
}

/// Finds the setting for a lowercase name. Exact keys win over `_file` forms,
/// so `master_key_file` is the path setting, not a file form of `master_key`.
fn lookup(name: &str) -> Option<(&'static str, Kind, Form)> {
    if let Some(&(key, kind)) = SETTINGS.iter().find(|(key, _)| *key == name) {
        return Some((key, kind, Form::Value));
    }
    let base = name.strip_suffix("_file")?;
    SETTINGS
        .iter()
        .find(|(key, kind)| *key == base && matches!(kind, Kind::Secret { .. }))
        .map(|&(key, kind)| (key, kind, Form::File))
}

fn show_secret(key: &str, value: &str) -> String {
    match SETTINGS.iter().find(|(k, _)| *k == key) {
        Some((_, Kind::Secret { show })) => show(value),
        _ => hide_all(value),
    }
}

fn hide_all(_: &str) -> String {
    "***".to_owned()
}

/// Shows a URL with its password (and secret-looking query values) replaced by
/// `***`, so operators can still see which database is used. Anything that is
/// not recognisably a URL is hidden entirely.
fn hide_url_password(value: &str) -> String {
    let Some((scheme, rest)) = value.split_once(':') else {
        return hide_all(value);
    };
    let valid_scheme = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !valid_scheme {
        return hide_all(value);
    }
    // SQLite URLs are a path with no userinfo; an '@' there is part of the path.
    if scheme.eq_ignore_ascii_case("sqlite") {
        return format!("{scheme}:{}", hide_query_secrets(rest));
    }
    let Some(rest) = rest.strip_prefix("//") else {
        return hide_all(value);
    };
    // Split at the last '@': passwords are not always percent-encoded, and an
    // '@' further on (e.g. in the query) only makes us hide more, never less.
    match rest.rsplit_once('@') {
        Some((userinfo, host_and_rest)) => {
            let user = match userinfo.split_once(':') {
                Some((user, _password)) => format!("{user}:***"),
                // A lone userinfo part is often a token; hide it.
                None => "***".to_owned(),
            };
            format!("{scheme}://{user}@{}", hide_query_secrets(host_and_rest))
        }
        None => format!("{scheme}://{}", hide_query_secrets(rest)),
    }
}

/// PostgreSQL accepts e.g. `?password=` and `?sslpassword=` in the query.
fn hide_query_secrets(s: &str) -> String {
    const SENSITIVE: &[&str] = &["pass", "pwd", "secret", "token", "key", "auth", "cred"];
    let Some((base, query)) = s.split_once('?') else {
        return s.to_owned();
    };
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _))
                if SENSITIVE
                    .iter()
                    .any(|w| name.to_ascii_lowercase().contains(w)) =>
            {
                format!("{name}=***")
            }
            _ => pair.to_owned(),
        })
        .collect();
    format!("{base}?{}", pairs.join("&"))
}

/// A value together with where it came from.
struct Sourced<T> {
    value: T,
    origin: Origin,
}

enum SecretSource {
    Inline(SecretString),
    File(PathBuf),
}

/// A raw value as given, before the setting's kind decides what it means.
enum Raw {
    Str(String),
    Array(Vec<String>),
}

/// One layer's (or the merged) raw settings, split by kind so each is taken
/// out with the right type.
#[derive(Default)]
struct Layer {
    text: BTreeMap<&'static str, Sourced<String>>,
    lists: BTreeMap<&'static str, Sourced<Vec<String>>>,
    secrets: BTreeMap<&'static str, Sourced<SecretSource>>,
}

impl Layer {
    /// `over` wins setting by setting; a secret's two forms share one slot, so
    /// either form in `over` replaces either form here.
    fn merge(&mut self, over: Layer) {
        self.text.extend(over.text);
        self.lists.extend(over.lists);
        self.secrets.extend(over.secrets);
    }

    fn is_empty(&self) -> bool {
        self.text.is_empty() && self.lists.is_empty() && self.secrets.is_empty()
    }

    fn set(
        &mut self,
        (key, kind, form): (&'static str, Kind, Form),
        raw: Raw,
        origin: Origin,
    ) -> Result<(), ConfigError> {
        match (kind, raw) {
            (Kind::List, Raw::Str(value)) => {
                let value = value.split(',').map(str::to_owned).collect();
                self.lists.insert(key, Sourced { value, origin });
            }
            (Kind::List, Raw::Array(value)) => {
                self.lists.insert(key, Sourced { value, origin });
            }
            (Kind::Text | Kind::Number, Raw::Str(value)) => {
                self.text.insert(key, Sourced { value, origin });
            }
            (Kind::Secret { .. }, Raw::Str(value)) => {
                let value = match form {
                    Form::Value => SecretSource::Inline(value.into()),
                    Form::File => SecretSource::File(value.into()),
                };
                if let Some(prev) = self.secrets.get(key) {
                    match (&prev.value, &value) {
                        (SecretSource::Inline(_), SecretSource::File(_)) => {
                            return Err(ConfigError::SecretConflict {
                                direct: prev.origin.clone(),
                                file: origin,
                            });
                        }
                        (SecretSource::File(_), SecretSource::Inline(_)) => {
                            return Err(ConfigError::SecretConflict {
                                direct: origin,
                                file: prev.origin.clone(),
                            });
                        }
                        // The same form twice (a repeated env var): the last one wins.
                        _ => {}
                    }
                }
                self.secrets.insert(key, Sourced { value, origin });
            }
            (_, Raw::Array(_)) => {
                return Err(ConfigError::WrongType {
                    origin,
                    expected: "a string",
                });
            }
        }
        Ok(())
    }

    /// Takes a path setting; empty is refused because it would silently mean
    /// the current directory.
    fn path(&mut self, setting: &'static str) -> Result<Option<PathBuf>, ConfigError> {
        match self.text.remove(setting) {
            Some(set) if set.value.is_empty() => Err(ConfigError::Invalid {
                setting,
                origin: set.origin,
                expected: "a non-empty path",
            }),
            Some(set) => Ok(Some(set.value.into())),
            None => Ok(None),
        }
    }

    /// Takes a whole-number setting within `range`.
    fn number(
        &mut self,
        setting: &'static str,
        range: std::ops::RangeInclusive<u64>,
        default: u64,
        expected: &'static str,
    ) -> Result<u64, ConfigError> {
        match self.text.remove(setting) {
            Some(set) => match set.value.trim().parse::<u64>() {
                Ok(n) if range.contains(&n) => Ok(n),
                _ => Err(ConfigError::Invalid {
                    setting,
                    origin: set.origin,
                    expected,
                }),
            },
            None => Ok(default),
        }
    }
}

fn file_layer(path: &Path) -> Result<Layer, ConfigError> {
    // The file may hold secrets; wipe our copy of the text when done.
    let source =
        Zeroizing::new(
            fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
                path: path.to_owned(),
                source,
            })?,
        );
    // Only the message and position are kept: the error's Display quotes the
    // offending line, which may be a secret.
    let table: toml::Table = toml::from_str(&source).map_err(|err| ConfigError::ParseFile {
        path: path.to_owned(),
        position: err.span().map(|span| line_column(&source, span.start)),
        message: err.message().trim().replace('\n', "; "),
    })?;

    let mut layer = Layer::default();
    for (name, value) in table {
        let Some(found) = lookup(&name) else {
            return Err(ConfigError::UnknownFileKey {
                path: path.to_owned(),
                key: name,
            });
        };
        let origin = Origin::File {
            path: path.to_owned(),
            key: name,
        };
        let expected = match found.1 {
            Kind::List => "a string or an array of strings",
            Kind::Number => "a whole number",
            Kind::Text | Kind::Secret { .. } => "a string",
        };
        let raw = match value {
            toml::Value::String(s) => Raw::Str(s),
            toml::Value::Integer(n) if matches!(found.1, Kind::Number) => Raw::Str(n.to_string()),
            toml::Value::Array(items) => items
                .into_iter()
                .map(|item| match item {
                    toml::Value::String(s) => Some(s),
                    _ => None,
                })
                .collect::<Option<Vec<_>>>()
                .map(Raw::Array)
                .ok_or(ConfigError::WrongType {
                    origin: origin.clone(),
                    expected,
                })?,
            _ => return Err(ConfigError::WrongType { origin, expected }),
        };
        layer.set(found, raw, origin)?;
    }
    Ok(layer)
}

fn env_layer(env: impl IntoIterator<Item = (String, String)>) -> Result<Layer, ConfigError> {
    let mut layer = Layer::default();
    for (var, value) in env {
        let Some(suffix) = var.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        if var.starts_with(IGNORED_ENV_PREFIX) {
            continue;
        }
        // Names are exactly `SEALPOST_` + the key uppercased; `SEALPOST_Bind` is a typo.
        let found = if suffix.bytes().any(|b| b.is_ascii_lowercase()) {
            None
        } else {
            lookup(&suffix.to_ascii_lowercase())
        };
        let Some(found) = found else {
            return Err(ConfigError::UnknownEnvVar { var });
        };
        layer.set(found, Raw::Str(value), Origin::Env { var })?;
    }
    Ok(layer)
}

/// Resolves a secret, reading its file if it was given as `_file`. Trailing
/// whitespace (the newline editors and `echo` add) is trimmed from files only.
fn read_secret(
    setting: &'static str,
    set: Sourced<SecretSource>,
) -> Result<Sourced<SecretString>, ConfigError> {
    let path = match set.value {
        SecretSource::Inline(value) => {
            return Ok(Sourced {
                value,
                origin: set.origin,
            });
        }
        SecretSource::File(path) => path,
    };
    if path.as_os_str().is_empty() {
        return Err(ConfigError::Invalid {
            setting,
            origin: set.origin,
            expected: "a non-empty path",
        });
    }
    let read = || -> io::Result<Zeroizing<String>> {
        let mut bytes = Zeroizing::new(Vec::new());
        File::open(&path)?
            .take(MAX_SECRET_FILE_BYTES + 1)
            .read_to_end(&mut bytes)?;
        if bytes.len() as u64 > MAX_SECRET_FILE_BYTES {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "file is larger than 64 KiB",
            ));
        }
        let text = std::str::from_utf8(&bytes)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "file is not valid UTF-8"))?;
        Ok(Zeroizing::new(text.trim_end().to_owned()))
    };
    match read() {
        Ok(text) => Ok(Sourced {
            value: text.as_str().into(),
            origin: set.origin,
        }),
        Err(source) => Err(ConfigError::ReadSecretFile {
            setting,
            path,
            origin: set.origin,
            source,
        }),
    }
}

/// Only the schemes the store supports, so a typo fails at boot, not at first query.
fn check_database_url(set: Sourced<SecretString>) -> Result<SecretString, ConfigError> {
    let scheme = set.value.expose_secret().split_once(':').map(|(s, _)| s);
    if matches!(scheme, Some("sqlite" | "postgres" | "postgresql")) {
        Ok(set.value)
    } else {
        Err(ConfigError::Invalid {
            setting: "database_url",
            origin: set.origin,
            expected: "a sqlite: or postgres:// URL",
        })
    }
}

/// Checked as lettre will read it, so a bad URL fails at boot rather than
/// at the first email. The message never echoes the URL (it may hold a password).
fn check_smtp_url(set: Sourced<SecretString>) -> Result<SecretString, ConfigError> {
    match crate::mail::transport::smtp_builder(set.value.expose_secret()) {
        Ok(_) => Ok(set.value),
        Err(_) => Err(ConfigError::Invalid {
            setting: "smtp_url",
            origin: set.origin,
            expected: "an smtp:// or smtps:// URL with a host, such as \
                       smtp://user:pass@host:587?tls=starttls, smtps://host or smtp://host:25",
        }),
    }
}

fn check_mail_from(set: Sourced<String>) -> Result<String, ConfigError> {
    match set.value.parse::<lettre::message::Mailbox>() {
        Ok(_) => Ok(set.value),
        Err(_) => Err(ConfigError::Invalid {
            setting: "mail_from",
            origin: set.origin,
            expected: "an address such as `Example Bank <messages@example.com>` or messages@example.com",
        }),
    }
}

/// An S3 bucket and the key prefix under which Sealpost keeps its objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Location {
    /// The bucket name.
    pub bucket: String,
    /// Key prefix without leading or trailing `/`; empty for the bucket root.
    pub prefix: String,
}

impl fmt::Display for S3Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s3://{}", self.bucket)?;
        if !self.prefix.is_empty() {
            write!(f, "/{}", self.prefix)?;
        }
        Ok(())
    }
}

/// The S3 settings, checked together.
struct S3Settings {
    blob_url: Option<S3Location>,
    endpoint: Option<String>,
    region: String,
    access_key_id: Option<String>,
    secret_access_key: Option<SecretString>,
}

fn load_s3(layer: &mut Layer) -> Result<S3Settings, ConfigError> {
    let blob_url = layer.text.remove("blob_url");
    let endpoint = layer.text.remove("s3_endpoint");
    let region = layer.text.remove("s3_region");
    let key_id = layer.text.remove("s3_access_key_id");
    let secret_key = layer.secrets.remove("s3_secret_access_key");
    let Some(blob_url) = blob_url else {
        // S3 settings without a bucket are a mistake (a typo in blob_url, or
        // a half-finished migration): say so rather than quietly use the folder.
        let lone = [&endpoint, &region, &key_id]
            .into_iter()
            .flatten()
            .map(|set| set.origin.clone())
            .chain(secret_key.map(|set| set.origin))
            .next();
        return match lone {
            Some(origin) => Err(ConfigError::Needs {
                origin,
                needs: "blob_url = \"s3://…\"",
            }),
            None => Ok(S3Settings {
                blob_url: None,
                endpoint: None,
                region: DEFAULT_S3_REGION.to_owned(),
                access_key_id: None,
                secret_access_key: None,
            }),
        };
    };
    let blob_url = parse_blob_url(blob_url)?;
    let endpoint = endpoint.map(parse_s3_endpoint).transpose()?;
    let region = match region {
        Some(set) => check_s3_region(set)?,
        None => DEFAULT_S3_REGION.to_owned(),
    };
    let key_id = key_id
        .map(|set| {
            let valid = !set.value.is_empty() && set.value.bytes().all(|b| b.is_ascii_graphic());
            if valid {
                Ok(set)
            } else {
                Err(ConfigError::Invalid {
                    setting: "s3_access_key_id",
                    origin: set.origin,
                    expected: "an access key id without spaces",
                })
            }
        })
        .transpose()?;
    let secret_key = secret_key
        .map(|set| read_secret("s3_secret_access_key", set))
        .transpose()?;
    // One key without the other would silently fall back to instance
    // credentials, which is never what someone who set one of them meant.
    let (access_key_id, secret_access_key) = match (key_id, secret_key) {
        (Some(id), Some(key)) => (Some(id.value), Some(check_s3_secret(key)?)),
        (None, None) => (None, None),
        (Some(id), None) => {
            return Err(ConfigError::Needs {
                origin: id.origin,
                needs: "s3_secret_access_key",
            });
        }
        (None, Some(key)) => {
            return Err(ConfigError::Needs {
                origin: key.origin,
                needs: "s3_access_key_id",
            });
        }
    };
    Ok(S3Settings {
        blob_url: Some(blob_url),
        endpoint,
        region,
        access_key_id,
        secret_access_key,
    })
}

/// `s3://bucket` or `s3://bucket/prefix`. Bucket names follow S3's rules;
/// prefix segments are plain names, so a key can never climb out of them.
fn parse_blob_url(set: Sourced<String>) -> Result<S3Location, ConfigError> {
    let invalid = || ConfigError::Invalid {
        setting: "blob_url",
        origin: set.origin.clone(),
        expected: "s3://bucket or s3://bucket/prefix (leave blob_url unset to keep blobs \
                   in the local blob_dir)",
    };
    let rest = set.value.strip_prefix("s3://").ok_or_else(invalid)?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let bucket_ok = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        && bucket.starts_with(|c: char| c.is_ascii_alphanumeric())
        && bucket.ends_with(|c: char| c.is_ascii_alphanumeric());
    let prefix_ok = prefix.is_empty()
        || prefix.split('/').all(|segment| {
            !segment.is_empty()
                && segment != "."
                && segment != ".."
                && segment
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
        });
    if bucket_ok && prefix_ok {
        Ok(S3Location {
            bucket: bucket.to_owned(),
            prefix: prefix.to_owned(),
        })
    } else {
        Err(invalid())
    }
}

fn parse_s3_endpoint(set: Sourced<String>) -> Result<String, ConfigError> {
    let invalid = |expected| ConfigError::Invalid {
        setting: "s3_endpoint",
        origin: set.origin.clone(),
        expected,
    };
    let url = set.value.as_str();
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| {
            invalid("a URL starting with https:// (or http:// for a local test server)")
        })?;
    if url.contains(['?', '#']) || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid("a URL without a query, fragment or spaces"));
    }
    let authority = rest
        .split_once('/')
        .map_or(rest, |(authority, _)| authority);
    if authority.is_empty() || authority.contains('@') {
        return Err(invalid(
            "a URL with a host and no user info, such as https://minio.internal:9000 \
             (credentials go in s3_access_key_id and s3_secret_access_key)",
        ));
    }
    Ok(url.trim_end_matches('/').to_owned())
}

fn check_s3_region(set: Sourced<String>) -> Result<String, ConfigError> {
    let valid = !set.value.is_empty()
        && set
            .value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if valid {
        Ok(set.value)
    } else {
        Err(ConfigError::Invalid {
            setting: "s3_region",
            origin: set.origin,
            expected: "a region name such as us-east-1",
        })
    }
}

fn check_s3_secret(set: Sourced<SecretString>) -> Result<SecretString, ConfigError> {
    if set.value.expose_secret().is_empty() {
        return Err(ConfigError::Invalid {
            setting: "s3_secret_access_key",
            origin: set.origin,
            expected: "a non-empty secret access key",
        });
    }
    Ok(set.value)
}

fn parse_recipients(set: Sourced<Vec<String>>) -> Result<Vec<Recipient>, ConfigError> {
    set.value
        .iter()
        .map(|entry| entry.trim())
        .enumerate()
        .filter(|(_, entry)| !entry.is_empty())
        .map(|(index, entry)| {
            entry.parse().map_err(|reason| {
                // The entry is not echoed: if it is a secret key pasted by mistake,
                // it must not reach the logs.
                let secret_key = entry
                    .get(..15)
                    .is_some_and(|p| p.eq_ignore_ascii_case("AGE-SECRET-KEY-"));
                ConfigError::BadRecipient {
                    index,
                    origin: set.origin.clone(),
                    reason: if secret_key {
                        "this is an age secret key; use its public key (`age-keygen -y`)"
                    } else {
                        reason
                    },
                }
            })
        })
        .collect()
}

fn parse_public_url(set: Sourced<String>) -> Result<String, ConfigError> {
    let invalid = |expected| ConfigError::Invalid {
        setting: "public_url",
        origin: set.origin.clone(),
        expected,
    };
    let url = set.value.as_str();
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| invalid("a URL starting with http:// or https://"))?;
    if url.contains(['?', '#']) {
        return Err(invalid("a URL without a query (?) or fragment (#)"));
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid("a URL without spaces or control characters"));
    }
    let authority = rest
        .split_once('/')
        .map_or(rest, |(authority, _)| authority);
    if authority.is_empty() {
        return Err(invalid(
            "a URL with a host, such as https://messages.example.com",
        ));
    }
    if authority.contains('@') {
        return Err(invalid("a URL without user info (user@)"));
    }
    // Stored without the slash so `format!("{public_url}/p/{token}")` is right.
    Ok(url.trim_end_matches('/').to_owned())
}

/// A socket address other than `bind` (one port cannot serve both).
fn parse_metrics_bind(set: Sourced<String>, bind: SocketAddr) -> Result<SocketAddr, ConfigError> {
    match set.value.parse::<SocketAddr>() {
        Ok(addr) if addr == bind && addr.port() != 0 => Err(ConfigError::Invalid {
            setting: "metrics_bind",
            origin: set.origin,
            expected: "an address other than bind",
        }),
        Ok(addr) => Ok(addr),
        Err(_) => Err(ConfigError::Invalid {
            setting: "metrics_bind",
            origin: set.origin,
            expected: "a socket address such as 127.0.0.1:9090",
        }),
    }
}

/// The reverse proxies whose `X-Forwarded-For` header is believed
/// (`trusted_proxies`). Empty means none: the socket peer is the client.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<ipnet::IpNet>);

impl TrustedProxies {
    /// From addresses (`192.0.2.7`, `::1`) and CIDR ranges (`10.0.0.0/8`).
    pub fn new(ranges: Vec<ipnet::IpNet>) -> TrustedProxies {
        TrustedProxies(ranges.into_iter().map(|r| r.trunc()).collect())
    }

    fn parse(set: Sourced<Vec<String>>) -> Result<TrustedProxies, ConfigError> {
        let ranges = set
            .value
            .iter()
            .map(|entry| entry.trim())
            .filter(|entry| !entry.is_empty())
            .map(|entry| {
                entry
                    .parse::<ipnet::IpNet>()
                    .or_else(|_| {
                        entry
                            .parse::<IpAddr>()
                            .map(|ip| ipnet::IpNet::from(ip.to_canonical()))
                    })
                    .map_err(|_| ConfigError::Invalid {
                        setting: "trusted_proxies",
                        origin: set.origin.clone(),
                        expected: "IP addresses or CIDR ranges, such as 10.0.0.0/8 or 192.0.2.7",
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(TrustedProxies::new(ranges))
    }

    pub fn ranges(&self) -> &[ipnet::IpNet] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `ip` is one of the proxies. IPv4-mapped IPv6 addresses
    /// (`::ffff:10.0.0.1`, as a dual-stack socket reports IPv4 peers) count
    /// as the IPv4 address they carry.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|range| range.contains(&ip))
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut position = (1, 1);
    for (_, c) in text.char_indices().take_while(|&(i, _)| i < offset) {
        position = if c == '\n' {
            (position.0 + 1, 1)
        } else {
            (position.0, position.1 + 1)
        };
    }
    position
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unambiguous() {
        for (key, kind) in SETTINGS {
            assert!(matches!(lookup(key), Some((k, _, Form::Value)) if k == *key));
            if let Kind::Secret { .. } = kind {
                let file = format!("{key}_file");
                assert!(
                    SETTINGS.iter().all(|(k, _)| *k != file),
                    "{file} clashes with a setting"
                );
                assert!(matches!(lookup(&file), Some((k, _, Form::File)) if k == *key));
            }
        }
        assert!(matches!(
            lookup("master_key_file"),
            Some(("master_key_file", Kind::Text, Form::Value))
        ));
        assert!(lookup("master_key").is_none());
    }

    #[test]
    fn every_setting_is_loaded_and_shown() -> Result<(), ConfigError> {
        // debug_assert in load checks every setting is consumed.
        let env = SETTINGS.iter().map(|(key, _)| {
            let value = match *key {
                "bind" => "127.0.0.1:1",
                "public_url" => "https://example.com",
                "database_url" => "sqlite::memory:",
                "escrow_recipients" => "",
                "smtp_url" => "smtp://localhost:25",
                "mail_from" => "a@example.com",
                "blob_url" => "s3://bucket/prefix",
                "s3_endpoint" => "http://127.0.0.1:9000",
                "metrics_bind" => "127.0.0.1:2",
                "log_format" => "json",
                "trusted_proxies" => "10.0.0.0/8,192.0.2.7",
                "shutdown_timeout_secs"
                | "header_read_timeout_secs"
                | "idle_timeout_secs"
                | "db_max_connections"
                | "db_acquire_timeout_secs" => "5",
                _ => "x",
            };
            (format!("SEALPOST_{}", key.to_uppercase()), value.to_owned())
        });
        let shown = Config::load(None, env)?.to_redacted_toml();
        let keys: Vec<&str> = shown.lines().filter_map(|l| l.split(' ').next()).collect();
        let expected: Vec<&str> = SETTINGS.iter().map(|(key, _)| *key).collect();
        assert_eq!(keys, expected);
        Ok(())
    }

    #[test]
    fn url_passwords_are_hidden() {
        let cases = [
            ("postgres://u:pw@h/db", "postgres://u:***@h/db"),
            ("postgres://u:p@w/x@h:5432/db", "postgres://u:***@h:5432/db"),
            ("postgres://token@h/db", "postgres://***@h/db"),
            (
                "postgres://h/db?password=pw&sslmode=require",
                "postgres://h/db?password=***&sslmode=require",
            ),
            ("postgres://h/db", "postgres://h/db"),
            ("sqlite://./data/sealpost.db", "sqlite://./data/sealpost.db"),
            (
                "sqlite:/home/a@b/x.db?mode=rwc",
                "sqlite:/home/a@b/x.db?mode=rwc",
            ),
            ("hunter2", "***"),
            ("user:token", "***"),
            ("", "***"),
        ];
        for (input, shown) in cases {
            assert_eq!(hide_url_password(input), shown, "{input}");
        }
    }

    #[test]
    fn positions_are_one_based() {
        assert_eq!(line_column("ab\ncd", 0), (1, 1));
        assert_eq!(line_column("ab\ncd", 4), (2, 2));
        assert_eq!(line_column("é\nx", 3), (2, 1));
    }
}
