//! Why a configuration could not be loaded, and where a value came from.

use std::fmt;
use std::io;
use std::path::PathBuf;

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
