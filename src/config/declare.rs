//! The machinery behind the one declaration of every setting in
//! `config.rs`: the [`settings!`] macro, what it records about each setting
//! ([`Setting`]), and how an effective value is shown in `sealpost config`
//! ([`Show`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use age::x25519::Recipient;
use secrecy::{ExposeSecret, SecretString};

use super::net::TrustedProxies;
use super::s3::S3Location;
use super::smtp_url::SmtpUrl;
use super::values::LogFormat;

/// What a setting's value looks like, which decides how TOML and the
/// environment may spell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A string.
    Text,
    /// A whole number: a TOML integer (or string), a string in env.
    Number,
    /// Comma-separated in env; a TOML array or comma-separated string.
    List,
    /// A string that is also accepted from a file named by `<key>_file`
    /// (`SEALPOST_<KEY>_FILE`), and is redacted when shown.
    Secret,
}

impl Kind {
    /// The name used in `deploy/settings.txt`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Text => "text",
            Kind::Number => "number",
            Kind::List => "list",
            Kind::Secret => "secret",
        }
    }
}

/// One setting as declared: what everything outside [`Config`](super::Config)'s
/// fields needs to know about it (name lookup, `_file` forms, the README
/// table, `deploy/settings.txt`).
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    /// The TOML key; the environment variable is `SEALPOST_` + the key uppercased.
    pub key: &'static str,
    pub kind: Kind,
    /// The README's "default" column (Markdown).
    pub default: &'static str,
    /// The README's description column (Markdown); "secret" is added for secrets.
    pub about: &'static str,
}

/// How an effective value is written in `sealpost config` (TOML that loads
/// back to the same configuration).
pub(crate) trait Show {
    /// `None` when the value has no TOML spelling (an unset optional setting).
    /// `hide` renders secret text: the setting's declared redaction, or
    /// `hide_all` for a setting not declared secret, so a secret type is never
    /// shown in clear by mistake. Other types ignore it.
    fn show(&self, hide: fn(&str) -> String) -> Option<toml::Value>;
}

fn text(s: impl Into<String>) -> Option<toml::Value> {
    Some(toml::Value::String(s.into()))
}

fn number(n: u64) -> Option<toml::Value> {
    Some(toml::Value::Integer(i64::try_from(n).unwrap_or(i64::MAX)))
}

impl Show for String {
    fn show(&self, _: fn(&str) -> String) -> Option<toml::Value> {
        text(self.as_str())
    }
}

impl Show for PathBuf {
    fn show(&self, _: fn(&str) -> String) -> Option<toml::Value> {
        text(self.to_string_lossy())
    }
}

impl Show for SocketAddr {
    fn show(&self, _: fn(&str) -> String) -> Option<toml::Value> {
        text(self.to_string())
    }
}

impl Show for u32 {
    fn show(&self, _: fn(&str) -> String) -> Option<toml::Value> {
        number(u64::from(*self))
    }
}

/// Durations are declared in whole seconds (`*_secs`).
impl Show for Duration {
    fn show(&self, _: fn(&str) -> String) -> Option<toml::Value> {
        number(self.as_secs())
    }
}

impl Show for Vec<Recipient> {
    fn show(&self, _: fn(&str) -> String) -> Option<toml::Value> {
        Some(toml::Value::Array(
            self.iter()
                .map(|r| toml::Value::String(r.to_string()))
                .collect(),
        ))
    }
}

impl Show for LogFormat {
    fn show(&self, _: fn(&str) -> String) -> Option<toml::Value> {
        text(self.as_str())
    }
}

impl Show for TrustedProxies {
    fn show(&self, _: fn(&str) -> String) -> Option<toml::Value> {
        Some(toml::Value::Array(
            self.ranges()
                .iter()
                .map(|r| toml::Value::String(r.to_string()))
                .collect(),
        ))
    }
}

impl Show for S3Location {
    fn show(&self, _: fn(&str) -> String) -> Option<toml::Value> {
        text(self.to_string())
    }
}

impl Show for SecretString {
    fn show(&self, hide: fn(&str) -> String) -> Option<toml::Value> {
        text(hide(self.expose_secret()))
    }
}

impl Show for SmtpUrl {
    fn show(&self, hide: fn(&str) -> String) -> Option<toml::Value> {
        text(hide(self.expose_secret()))
    }
}

impl<T: Show> Show for Option<T> {
    fn show(&self, hide: fn(&str) -> String) -> Option<toml::Value> {
        self.as_ref().and_then(|value| value.show(hide))
    }
}

/// Declares every setting once. From each entry it derives the field of
/// `Config`, the entry in `SETTINGS` (name lookup for TOML and env, the
/// `_file` form of secrets, the README table, `deploy/settings.txt`), the
/// step in `Config::load` and the line in `Config::to_redacted_toml`.
///
/// ```text
/// settings! {
///     layer: layer;                       // the merged layers, for `load`
///     /// Field docs.
///     field: Type {
///         key: "toml_key",                // optional; default: the field name
///         kind: Text,                     // Text | Number | List | Secret(redaction)
///         default: "README default",
///         about: "README description",
///         load: |set| expression,         // `set`: the raw value if set, by kind;
///                                         // earlier fields are in scope; may use `?`
///         show_if: |config| condition,    // optional: when to show it at all
///     }
/// }
/// ```
///
/// Fields load in declaration order, so a default may follow an earlier
/// setting (`blob_dir` follows `data_dir`). A secret's raw value is a
/// `Sourced<SecretSource>`, read with `read_secret` only when used, so an
/// overridden or pointless `_file` is never opened.
macro_rules! settings {
    (
        layer: $layer:ident;
        $(
            $(#[$attr:meta])*
            $field:ident: $ty:ty {
                $(key: $key:literal,)?
                kind: $kind:ident $(($hide:path))?,
                default: $default:literal,
                about: $about:literal,
                load: |$set:ident| $load:expr,
                $(show_if: |$config:ident| $show_if:expr,)?
            }
        )*
    ) => {
        /// The effective configuration.
        ///
        /// `Debug` is safe to log: secrets are [`SecretString`]s (or types
        /// whose `Debug` hides them).
        #[derive(Debug, Clone)]
        pub struct Config {
            $( $(#[$attr])* pub $field: $ty, )*
        }

        /// Every setting, in declaration order (the order `sealpost config`
        /// and the README list them).
        pub const SETTINGS: &[$crate::config::declare::Setting] = &[
            $(
                $crate::config::declare::Setting {
                    key: $crate::config::declare::settings!(@key $field $($key)?),
                    kind: $crate::config::declare::Kind::$kind,
                    default: $default,
                    about: $about,
                },
            )*
        ];

        impl Config {
            /// Loads from an optional TOML file and an injected environment
            /// (tests pass their own map; `main` passes `std::env::vars()`).
            pub fn load(
                file: Option<&::std::path::Path>,
                env: impl IntoIterator<Item = (String, String)>,
            ) -> Result<Config, $crate::config::ConfigError> {
                let mut $layer = $crate::config::layers::Layer::from_sources(file, env)?;
                $(
                    let $field: $ty = {
                        let $set = $crate::config::declare::settings!(
                            @take $layer, $kind, $crate::config::declare::settings!(@key $field $($key)?)
                        );
                        $load
                    };
                )*
                debug_assert!($layer.is_empty(), "every declared setting must be taken");
                Ok(Config { $($field,)* })
            }

            /// The effective config as TOML text with secrets redacted (used
            /// by `sealpost config`).
            pub fn to_redacted_toml(&self) -> String {
                let mut shown = String::new();
                $(
                    let wanted = true $( && { let $config = self; $show_if } )?;
                    let value = if wanted {
                        $crate::config::declare::Show::show(
                            &self.$field,
                            $crate::config::declare::settings!(@hide $($hide)?),
                        )
                    } else {
                        None
                    };
                    if let Some(value) = value {
                        shown.push_str(&format!(
                            "{} = {value}\n",
                            $crate::config::declare::settings!(@key $field $($key)?)
                        ));
                    }
                )*
                shown
            }
        }
    };
    (@key $field:ident) => { stringify!($field) };
    (@key $field:ident $key:literal) => { $key };
    (@take $layer:ident, Secret, $key:expr) => { $layer.take_secret($key) };
    (@take $layer:ident, List, $key:expr) => { $layer.take_list($key) };
    (@take $layer:ident, $other:ident, $key:expr) => { $layer.take_text($key) };
    (@hide) => { $crate::config::secrets::hide_all };
    (@hide $hide:path) => { $hide };
}

pub(crate) use settings;
