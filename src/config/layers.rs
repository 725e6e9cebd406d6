//! The raw layers: a TOML file and the environment, read into untyped values
//! keyed by setting, and merged (the environment wins) before any value is
//! interpreted. What each setting's name, kind and `_file` form are comes from
//! [`SETTINGS`](super::SETTINGS); nothing here names a setting.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use secrecy::zeroize::Zeroizing;

use super::SETTINGS;
use super::declare::{Kind, Setting};
use super::error::{ConfigError, Origin};
use super::secrets::SecretSource;

const ENV_PREFIX: &str = "SEALPOST_";
/// Reserved for the test suite so its variables do not trip the unknown-setting check.
const IGNORED_ENV_PREFIX: &str = "SEALPOST_TEST_";

/// A value together with the setting it is for and where it came from, so
/// every error can name both without quoting the value.
pub(crate) struct Sourced<T> {
    pub(crate) value: T,
    pub(crate) setting: &'static str,
    pub(crate) origin: Origin,
}

impl<T> Sourced<T> {
    /// The setting's value is not acceptable; `expected` says what would be.
    pub(crate) fn invalid(&self, expected: &'static str) -> ConfigError {
        ConfigError::Invalid {
            setting: self.setting,
            origin: self.origin.clone(),
            expected,
        }
    }

    fn new(value: T, setting: &'static str, origin: Origin) -> Sourced<T> {
        Sourced {
            value,
            setting,
            origin,
        }
    }
}

/// A setting name as written maps to a setting and the form it was given in.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Form {
    Value,
    File,
}

/// Finds the setting for a lowercase name. Exact keys win over `_file` forms,
/// so `master_key_file` is the path setting, not a file form of `master_key`.
pub(crate) fn lookup(name: &str) -> Option<(&'static Setting, Form)> {
    if let Some(setting) = SETTINGS.iter().find(|s| s.key == name) {
        return Some((setting, Form::Value));
    }
    let base = name.strip_suffix("_file")?;
    SETTINGS
        .iter()
        .find(|s| s.key == base && s.kind == Kind::Secret)
        .map(|setting| (setting, Form::File))
}

/// A raw value as given, before the setting's kind decides what it means.
enum Raw {
    Str(String),
    Array(Vec<String>),
}

/// One layer's (or the merged) raw settings, split by kind so each is taken
/// out with the right type.
#[derive(Default)]
pub(crate) struct Layer {
    text: BTreeMap<&'static str, Sourced<String>>,
    lists: BTreeMap<&'static str, Sourced<Vec<String>>>,
    secrets: BTreeMap<&'static str, Sourced<SecretSource>>,
}

impl Layer {
    /// The TOML file (if any) with the environment over it.
    pub(crate) fn from_sources(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Layer, ConfigError> {
        let mut layer = match file {
            Some(path) => file_layer(path)?,
            None => Layer::default(),
        };
        layer.merge(env_layer(env)?);
        Ok(layer)
    }

    /// `over` wins setting by setting; a secret's two forms share one slot, so
    /// either form in `over` replaces either form here.
    fn merge(&mut self, over: Layer) {
        self.text.extend(over.text);
        self.lists.extend(over.lists);
        self.secrets.extend(over.secrets);
    }

    /// Whether every setting has been taken out (checked after loading).
    pub(crate) fn is_empty(&self) -> bool {
        self.text.is_empty() && self.lists.is_empty() && self.secrets.is_empty()
    }

    /// Whether `key` is set and not yet taken, for checks that pair two settings.
    pub(crate) fn is_set(&self, key: &str) -> bool {
        debug_assert!(
            SETTINGS.iter().any(|s| s.key == key),
            "{key} is not a declared setting"
        );
        self.text.contains_key(key)
            || self.lists.contains_key(key)
            || self.secrets.contains_key(key)
    }

    /// Takes a text or number setting.
    pub(crate) fn take_text(&mut self, key: &str) -> Option<Sourced<String>> {
        self.text.remove(key)
    }

    /// Takes a list setting.
    pub(crate) fn take_list(&mut self, key: &str) -> Option<Sourced<Vec<String>>> {
        self.lists.remove(key)
    }

    /// Takes a secret setting, not yet read if it names a file.
    pub(crate) fn take_secret(&mut self, key: &str) -> Option<Sourced<SecretSource>> {
        self.secrets.remove(key)
    }

    fn set(
        &mut self,
        (setting, form): (&'static Setting, Form),
        raw: Raw,
        origin: Origin,
    ) -> Result<(), ConfigError> {
        let key = setting.key;
        match (setting.kind, raw) {
            (Kind::List, Raw::Str(value)) => {
                let value = value.split(',').map(str::to_owned).collect();
                self.lists.insert(key, Sourced::new(value, key, origin));
            }
            (Kind::List, Raw::Array(value)) => {
                self.lists.insert(key, Sourced::new(value, key, origin));
            }
            (Kind::Text | Kind::Number, Raw::Str(value)) => {
                self.text.insert(key, Sourced::new(value, key, origin));
            }
            (Kind::Secret, Raw::Str(value)) => {
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
                self.secrets.insert(key, Sourced::new(value, key, origin));
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
        let kind = found.0.kind;
        let expected = match kind {
            Kind::List => "a string or an array of strings",
            Kind::Number => "a whole number",
            Kind::Text | Kind::Secret => "a string",
        };
        let raw = match value {
            toml::Value::String(s) => Raw::Str(s),
            toml::Value::Integer(n) if kind == Kind::Number => Raw::Str(n.to_string()),
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

/// The environment variable for a TOML key.
pub(crate) fn env_name(key: &str) -> String {
    format!("{ENV_PREFIX}{}", key.to_ascii_uppercase())
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
        for setting in SETTINGS {
            let key = setting.key;
            assert!(matches!(lookup(key), Some((s, Form::Value)) if s.key == key));
            if setting.kind == Kind::Secret {
                let file = format!("{key}_file");
                assert!(
                    SETTINGS.iter().all(|s| s.key != file),
                    "{file} clashes with a setting"
                );
                assert!(matches!(lookup(&file), Some((s, Form::File)) if s.key == key));
            }
        }
        assert!(matches!(
            lookup("master_key_file"),
            Some((
                Setting {
                    key: "master_key_file",
                    kind: Kind::Text,
                    ..
                },
                Form::Value
            ))
        ));
        assert!(lookup("master_key").is_none());
    }

    #[test]
    fn positions_are_one_based() {
        assert_eq!(line_column("ab\ncd", 0), (1, 1));
        assert_eq!(line_column("ab\ncd", 4), (2, 2));
        assert_eq!(line_column("é\nx", 3), (2, 1));
    }
}
