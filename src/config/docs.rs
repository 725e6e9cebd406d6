//! Documents generated from the settings declaration: the README's table of
//! settings and `deploy/settings.txt`, the list `deploy/validate.py` checks
//! deployment files against. Tests fail when either checked-in copy is stale;
//! `SEALPOST_TEST_BLESS=1 cargo test --lib config::docs` rewrites them.

use super::SETTINGS;
use super::declare::Kind;
use super::layers::env_name;

/// The README's settings table (Markdown), one row per setting.
pub fn readme_table() -> String {
    let mut table = String::from("| variable | default | |\n|---|---|---|\n");
    for setting in SETTINGS {
        let about = match (setting.kind, setting.about) {
            (Kind::Secret, "") => "secret".to_owned(),
            (Kind::Secret, about) => format!("{about}; secret"),
            (_, about) => about.to_owned(),
        };
        let name = env_name(setting.key);
        let default = setting.default;
        if about.is_empty() {
            table.push_str(&format!("| `{name}` | {default} | |\n"));
        } else {
            table.push_str(&format!("| `{name}` | {default} | {about} |\n"));
        }
    }
    table
}

/// `deploy/settings.txt`: every setting's key and kind, for tools outside Rust.
pub fn settings_list() -> String {
    let mut list = String::from(
        "# Every Sealpost setting: its TOML key and kind (text, number, list or\n\
         # secret). The environment variable is the key uppercased with the\n\
         # SEALPOST_ prefix; a secret may instead name a file with the _file\n\
         # (_FILE) form. Generated from the settings declaration in src/config.rs:\n\
         # do not edit. A unit test fails when this file is stale;\n\
         # `SEALPOST_TEST_BLESS=1 cargo test --lib config::docs` rewrites it.\n",
    );
    for setting in SETTINGS {
        list.push_str(&format!("{} {}\n", setting.key, setting.kind.as_str()));
    }
    list
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::path::PathBuf;

    use super::*;

    const README_START: &str = "<!-- settings table: generated from src/config.rs";
    const README_END: &str = "<!-- end of settings table -->";

    fn repo_file(path: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
    }

    /// Compares a checked-in file with what it should be; with
    /// `SEALPOST_TEST_BLESS=1` writes it instead.
    fn check(path: &str, current: &str, wanted: &str) {
        if current == wanted {
            return;
        }
        if std::env::var("SEALPOST_TEST_BLESS").as_deref() == Ok("1") {
            fs::write(repo_file(path), wanted).expect("write the generated file");
            return;
        }
        panic!(
            "{path} is stale: the settings declaration in src/config.rs changed. \
             Run `SEALPOST_TEST_BLESS=1 cargo test --lib config::docs` and commit the result."
        );
    }

    #[test]
    fn readme_table_matches_the_declaration() {
        let readme = fs::read_to_string(repo_file("README.md")).expect("README.md");
        let start = readme
            .find(README_START)
            .expect("README has the start marker");
        let body = start + readme[start..].find('\n').expect("marker line ends") + 1;
        let end = body
            + readme[body..]
                .find(README_END)
                .expect("README has the end marker");
        // A blank line ends the table before the marker, for Markdown renderers.
        let wanted = format!("{}{}\n{}", &readme[..body], readme_table(), &readme[end..]);
        check("README.md", &readme, &wanted);
    }

    #[test]
    fn deploy_settings_list_matches_the_declaration() {
        let current = fs::read_to_string(repo_file("deploy/settings.txt")).unwrap_or_default();
        check("deploy/settings.txt", &current, &settings_list());
    }

    #[test]
    fn every_setting_is_documented() {
        for setting in SETTINGS {
            assert!(
                !setting.default.is_empty(),
                "{} has no default",
                setting.key
            );
            assert!(
                !setting.default.contains('|') && !setting.about.contains('|'),
                "{}: a | would break the table",
                setting.key
            );
        }
    }
}
