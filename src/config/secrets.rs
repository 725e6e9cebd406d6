//! Secret settings: reading the `_file` form, and showing a secret in
//! `sealpost config` without revealing it.

use std::fs::File;
use std::io::{self, Read};
use std::path::PathBuf;

use secrecy::SecretString;
use secrecy::zeroize::Zeroizing;

use super::error::ConfigError;
use super::layers::Sourced;

/// Guards against `_FILE` pointing at something huge or endless (`/dev/zero`).
const MAX_SECRET_FILE_BYTES: u64 = 64 * 1024;

/// A secret as given: the value itself, or (its `_file` form) where to read it.
pub(crate) enum SecretSource {
    Inline(SecretString),
    File(PathBuf),
}

/// Resolves a secret, reading its file if it was given as `_file`. Trailing
/// whitespace (the newline editors and `echo` add) is trimmed from files only.
pub(crate) fn read_secret(
    set: Sourced<SecretSource>,
) -> Result<Sourced<SecretString>, ConfigError> {
    let path = match set.value {
        SecretSource::Inline(value) => {
            return Ok(Sourced {
                value,
                setting: set.setting,
                origin: set.origin,
            });
        }
        SecretSource::File(ref path) if path.as_os_str().is_empty() => {
            return Err(set.invalid("a non-empty path"));
        }
        SecretSource::File(path) => path,
    };
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
            setting: set.setting,
            origin: set.origin,
        }),
        Err(source) => Err(ConfigError::ReadSecretFile {
            setting: set.setting,
            path,
            origin: set.origin,
            source,
        }),
    }
}

/// How a secret is shown when nothing of it is safe to show.
pub(crate) fn hide_all(_: &str) -> String {
    "***".to_owned()
}

/// Shows a URL with its password (and secret-looking query values) replaced by
/// `***`, so operators can still see which database is used. Anything that is
/// not recognisably a URL is hidden entirely.
pub(crate) fn hide_url_password(value: &str) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
