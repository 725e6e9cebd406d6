//! Checks for single values: paths, numbers, the database URL, escrow
//! recipients, logging and the mail sender. Each takes the value with its
//! setting and origin, so its error names both and never the value.

use std::ops::RangeInclusive;
use std::path::PathBuf;

use age::x25519::Recipient;
use secrecy::{ExposeSecret, SecretString};

use super::error::ConfigError;
use super::layers::Sourced;

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

    pub(crate) fn parse(set: Sourced<String>) -> Result<LogFormat, ConfigError> {
        match set.value.as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(set.invalid("`text` or `json`")),
        }
    }
}

/// A clamd address: `tcp://host:port` or `unix:///absolute/path` (the
/// scanner parses it in full when the app starts).
pub(crate) fn clamd_url(set: Sourced<String>) -> Result<String, ConfigError> {
    let v = set.value.trim();
    let tcp = v.strip_prefix("tcp://").is_some_and(|rest| {
        rest.rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0))
    });
    let unix = v
        .strip_prefix("unix://")
        .is_some_and(|p| p.starts_with('/') && p.len() > 1);
    if tcp || unix {
        Ok(v.to_owned())
    } else {
        Err(set.invalid("`tcp://host:port` or `unix:///absolute/path`"))
    }
}

/// A path setting; empty is refused because it would silently mean the
/// current directory.
pub(crate) fn path(set: Option<Sourced<String>>) -> Result<Option<PathBuf>, ConfigError> {
    match set {
        Some(set) if set.value.is_empty() => Err(set.invalid("a non-empty path")),
        Some(set) => Ok(Some(set.value.into())),
        None => Ok(None),
    }
}

/// A whole-number setting within `range`, `default` when unset.
pub(crate) fn number(
    set: Option<Sourced<String>>,
    range: RangeInclusive<u64>,
    default: u64,
    expected: &'static str,
) -> Result<u64, ConfigError> {
    match set {
        Some(set) => match set.value.trim().parse::<u64>() {
            Ok(n) if range.contains(&n) => Ok(n),
            _ => Err(set.invalid(expected)),
        },
        None => Ok(default),
    }
}

/// Only the schemes the store supports, so a typo fails at boot, not at first query.
pub(crate) fn database_url(set: Sourced<SecretString>) -> Result<SecretString, ConfigError> {
    let scheme = set.value.expose_secret().split_once(':').map(|(s, _)| s);
    if matches!(scheme, Some("sqlite" | "postgres" | "postgresql")) {
        Ok(set.value)
    } else {
        Err(set.invalid("a sqlite: or postgres:// URL"))
    }
}

pub(crate) fn recipients(set: Sourced<Vec<String>>) -> Result<Vec<Recipient>, ConfigError> {
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

/// A `tracing` filter; empty would silence everything without saying so.
pub(crate) fn log_filter(set: Sourced<String>) -> Result<String, ConfigError> {
    if set.value.trim().is_empty() {
        return Err(set.invalid("a tracing filter such as `info` or `sealpost=debug`"));
    }
    Ok(set.value)
}

pub(crate) fn mail_from(set: Sourced<String>) -> Result<String, ConfigError> {
    match set.value.parse::<lettre::message::Mailbox>() {
        Ok(_) => Ok(set.value),
        Err(_) => Err(set.invalid(
            "an address such as `Example Bank <messages@example.com>` or messages@example.com",
        )),
    }
}
