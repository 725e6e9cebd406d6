//! Config layering: defaults → TOML file → `SEALPOST_*` env.

use std::error::Error;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sealpost::config::{Config, ConfigError, ExposeSecret, LogFormat, SmtpTls};

type TestResult = Result<(), Box<dyn Error>>;

const RECIPIENT_A: &str = "age1l6q9vunjepmft830pfqnw69gqp2r0tqq72ucpsq0adxvx8wyeufsx532z2";
const RECIPIENT_B: &str = "age1n6g7v8cldwysjtdzve87mqhks7kt4dhu2st622pr4c879evryyqqzmmmqk";
const PASSWORD: &str = "canary-pw-7f3a9";

fn env(vars: &[(&str, &str)]) -> Vec<(String, String)> {
    vars.iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn toml_file(dir: &tempfile::TempDir, text: &str) -> Result<PathBuf, Box<dyn Error>> {
    let path = dir.path().join("sealpost.toml");
    fs::write(&path, text)?;
    Ok(path)
}

fn load_err(file: Option<&Path>, vars: &[(&str, &str)]) -> ConfigError {
    match Config::load(file, env(vars)) {
        Ok(config) => panic!("expected an error, got {config:?}"),
        Err(err) => err,
    }
}

fn database_url(config: &Config) -> &str {
    config.database_url.expose_secret()
}

#[test]
fn defaults() -> TestResult {
    let config = Config::load(None, env(&[]))?;
    assert_eq!(config.data_dir, Path::new("./data"));
    assert_eq!(config.blob_dir, Path::new("./data/blobs"));
    assert_eq!(config.master_key_file, Path::new("./data/master.key"));
    assert_eq!(database_url(&config), "sqlite://./data/sealpost.db");
    assert!(config.escrow_recipients.is_empty());
    assert_eq!(config.bind.to_string(), "127.0.0.1:8080");
    assert_eq!(config.public_url, "http://127.0.0.1:8080");
    assert_eq!(config.log, "info");
    assert!(config.smtp_url.is_none());
    assert_eq!(config.mail_from, "Sealpost <sealpost@localhost>");
    assert!(!config.is_https());
    Ok(())
}

#[test]
fn derived_defaults_follow_final_data_dir_and_bind() -> TestResult {
    let dir = tempfile::tempdir()?;
    let file = toml_file(&dir, "data_dir = \"/from/file\"\nbind = \"0.0.0.0:1\"\n")?;
    let config = Config::load(
        Some(&file),
        env(&[
            ("SEALPOST_DATA_DIR", "/srv/sp"),
            ("SEALPOST_BIND", "[::1]:9000"),
        ]),
    )?;
    assert_eq!(config.data_dir, Path::new("/srv/sp"));
    assert_eq!(config.blob_dir, Path::new("/srv/sp/blobs"));
    assert_eq!(config.master_key_file, Path::new("/srv/sp/master.key"));
    assert_eq!(database_url(&config), "sqlite:///srv/sp/sealpost.db");
    assert_eq!(config.public_url, "http://[::1]:9000");
    Ok(())
}

#[test]
fn relative_paths_stay_relative() -> TestResult {
    let config = Config::load(None, env(&[("SEALPOST_DATA_DIR", "var/sp")]))?;
    assert_eq!(config.blob_dir, Path::new("var/sp/blobs"));
    assert_eq!(database_url(&config), "sqlite://var/sp/sealpost.db");
    Ok(())
}

#[test]
fn toml_overrides_defaults() -> TestResult {
    let dir = tempfile::tempdir()?;
    let file = toml_file(
        &dir,
        r#"
data_dir = "/var/lib/sealpost"
blob_dir = "/mnt/blobs"
master_key_file = "/etc/sealpost/master.key"
database_url = "postgres://sp@db/sealpost"
bind = "0.0.0.0:8443"
public_url = "https://messages.example.com/"
log = "sealpost=debug"
escrow_recipients = ["age1l6q9vunjepmft830pfqnw69gqp2r0tqq72ucpsq0adxvx8wyeufsx532z2"]
"#,
    )?;
    let config = Config::load(Some(&file), env(&[]))?;
    assert_eq!(config.data_dir, Path::new("/var/lib/sealpost"));
    assert_eq!(config.blob_dir, Path::new("/mnt/blobs"));
    assert_eq!(
        config.master_key_file,
        Path::new("/etc/sealpost/master.key")
    );
    assert_eq!(database_url(&config), "postgres://sp@db/sealpost");
    assert_eq!(config.bind.to_string(), "0.0.0.0:8443");
    assert_eq!(config.public_url, "https://messages.example.com");
    assert_eq!(config.log, "sealpost=debug");
    assert_eq!(config.escrow_recipients.len(), 1);
    assert!(config.is_https());
    Ok(())
}

#[test]
fn env_overrides_toml() -> TestResult {
    let dir = tempfile::tempdir()?;
    let file = toml_file(
        &dir,
        "bind = \"0.0.0.0:1\"\nlog = \"warn\"\ndatabase_url = \"sqlite://file.db\"\n",
    )?;
    let config = Config::load(
        Some(&file),
        env(&[
            ("SEALPOST_BIND", "127.0.0.1:2"),
            ("SEALPOST_LOG", "debug"),
            ("SEALPOST_DATABASE_URL", "sqlite://env.db"),
        ]),
    )?;
    assert_eq!(config.bind.to_string(), "127.0.0.1:2");
    assert_eq!(config.log, "debug");
    assert_eq!(database_url(&config), "sqlite://env.db");
    Ok(())
}

#[test]
fn other_variables_are_ignored() -> TestResult {
    let config = Config::load(
        None,
        env(&[
            ("PATH", "/bin"),
            ("sealpost_bind", "nonsense"),
            ("SEALPOSTBIND", "nonsense"),
            ("SEALPOST_TEST_DATABASE", "whatever"),
            ("SEALPOST_TEST_", ""),
        ]),
    )?;
    assert_eq!(config.bind.to_string(), "127.0.0.1:8080");
    Ok(())
}

#[test]
fn unknown_toml_key_errors() -> TestResult {
    let dir = tempfile::tempdir()?;
    let file = toml_file(&dir, "bind = \"127.0.0.1:1\"\ndatabse_url = \"x\"\n")?;
    let err = load_err(Some(&file), &[]);
    assert!(matches!(&err, ConfigError::UnknownFileKey { key, .. } if key == "databse_url"));
    let message = err.to_string();
    assert!(message.contains("databse_url"), "{message}");
    assert!(message.contains(&file.display().to_string()), "{message}");

    // A table is an unknown key too, not a way around the check.
    let file = toml_file(&dir, "[server]\nbind = \"127.0.0.1:1\"\n")?;
    assert!(matches!(
        load_err(Some(&file), &[]),
        ConfigError::UnknownFileKey { key, .. } if key == "server"
    ));
    Ok(())
}

#[test]
fn master_key_is_not_a_setting() -> TestResult {
    let dir = tempfile::tempdir()?;
    let file = toml_file(&dir, "master_key = \"x\"\n")?;
    assert!(matches!(
        load_err(Some(&file), &[]),
        ConfigError::UnknownFileKey { .. }
    ));
    assert!(matches!(
        load_err(None, &[("SEALPOST_MASTER_KEY", "x")]),
        ConfigError::UnknownEnvVar { .. }
    ));
    // SEALPOST_MASTER_KEY_FILE is the path setting; the file is not read.
    let config = Config::load(
        None,
        env(&[("SEALPOST_MASTER_KEY_FILE", "/does/not/exist.key")]),
    )?;
    assert_eq!(config.master_key_file, Path::new("/does/not/exist.key"));
    Ok(())
}

#[test]
fn toml_wrong_type_errors() -> TestResult {
    let dir = tempfile::tempdir()?;
    let file = toml_file(&dir, "bind = 8080\n")?;
    let message = load_err(Some(&file), &[]).to_string();
    assert!(
        message.contains("bind") && message.contains("string"),
        "{message}"
    );
    let file = toml_file(&dir, "escrow_recipients = [1]\n")?;
    assert!(matches!(
        load_err(Some(&file), &[]),
        ConfigError::WrongType { .. }
    ));
    Ok(())
}

#[test]
fn toml_syntax_error_does_not_quote_the_line() -> TestResult {
    let dir = tempfile::tempdir()?;
    let file = toml_file(
        &dir,
        &format!("log = \"info\"\ndatabase_url = \"postgres://u:{PASSWORD}@db\n"),
    )?;
    let err = load_err(Some(&file), &[]);
    let message = err.to_string();
    assert!(
        matches!(
            err,
            ConfigError::ParseFile {
                position: Some((2, _)),
                ..
            }
        ),
        "{message}"
    );
    assert!(!message.contains(PASSWORD), "{message}");
    assert!(!format!("{err:?}").contains(PASSWORD));
    Ok(())
}

#[test]
fn missing_config_file_errors() {
    let err = load_err(Some(Path::new("/no/such/sealpost.toml")), &[]);
    assert!(err.to_string().contains("/no/such/sealpost.toml"), "{err}");
}

#[test]
fn unknown_env_var_errors() {
    let err = load_err(None, &[("SEALPOST_FOO", "1")]);
    assert!(
        err.to_string().contains("unknown setting SEALPOST_FOO"),
        "{err}"
    );
    // Names must be uppercase exactly; a `_FILE` form exists only for secrets.
    for var in ["SEALPOST_Bind", "SEALPOST_BIND_FILE", "SEALPOST_"] {
        assert!(
            matches!(
                load_err(None, &[(var, "x")]),
                ConfigError::UnknownEnvVar { .. }
            ),
            "{var}"
        );
    }
}

#[test]
fn secret_file_is_read_and_trimmed() -> TestResult {
    let dir = tempfile::tempdir()?;
    let secret = dir.path().join("db_url");
    fs::write(&secret, "sqlite://from-file.db \n\r\n")?;
    let secret_path = secret.to_string_lossy().into_owned();

    let config = Config::load(None, env(&[("SEALPOST_DATABASE_URL_FILE", &secret_path)]))?;
    assert_eq!(database_url(&config), "sqlite://from-file.db");

    let file = toml_file(&dir, &format!("database_url_file = {secret_path:?}\n"))?;
    let config = Config::load(Some(&file), env(&[]))?;
    assert_eq!(database_url(&config), "sqlite://from-file.db");
    Ok(())
}

#[test]
fn missing_secret_file_names_the_path() {
    let err = load_err(None, &[("SEALPOST_DATABASE_URL_FILE", "/run/secrets/nope")]);
    assert!(matches!(err, ConfigError::ReadSecretFile { .. }));
    let message = err.to_string();
    assert!(message.contains("/run/secrets/nope"), "{message}");
    assert!(message.contains("SEALPOST_DATABASE_URL_FILE"), "{message}");
}

#[test]
fn secret_and_secret_file_together_error() -> TestResult {
    let dir = tempfile::tempdir()?;
    let secret = dir.path().join("db_url");
    fs::write(&secret, "sqlite://a.db")?;
    let secret_path = secret.to_string_lossy().into_owned();

    let err = load_err(
        None,
        &[
            ("SEALPOST_DATABASE_URL_FILE", &secret_path),
            ("SEALPOST_DATABASE_URL", "sqlite://b.db"),
        ],
    );
    assert!(matches!(err, ConfigError::SecretConflict { .. }));
    let message = err.to_string();
    assert!(
        message.contains("SEALPOST_DATABASE_URL and SEALPOST_DATABASE_URL_FILE"),
        "{message}"
    );
    assert!(!message.contains("b.db"), "{message}");

    let file = toml_file(
        &dir,
        &format!("database_url = \"sqlite://b.db\"\ndatabase_url_file = {secret_path:?}\n"),
    )?;
    assert!(matches!(
        load_err(Some(&file), &[]),
        ConfigError::SecretConflict { .. }
    ));
    Ok(())
}

#[test]
fn env_secret_form_replaces_toml_form() -> TestResult {
    let dir = tempfile::tempdir()?;
    let secret = dir.path().join("db_url");
    fs::write(&secret, "sqlite://from-file.db\n")?;
    let secret_path = secret.to_string_lossy().into_owned();

    // Env `_FILE` beats a TOML value.
    let file = toml_file(&dir, "database_url = \"sqlite://toml.db\"\n")?;
    let config = Config::load(
        Some(&file),
        env(&[("SEALPOST_DATABASE_URL_FILE", &secret_path)]),
    )?;
    assert_eq!(database_url(&config), "sqlite://from-file.db");

    // Env value beats a TOML `_file`, which is then not read at all.
    let file = toml_file(&dir, "database_url_file = \"/no/such/file\"\n")?;
    let config = Config::load(
        Some(&file),
        env(&[("SEALPOST_DATABASE_URL", "sqlite://env.db")]),
    )?;
    assert_eq!(database_url(&config), "sqlite://env.db");
    Ok(())
}

#[test]
fn escrow_recipients_parse() -> TestResult {
    let list = format!(" {RECIPIENT_A} ,, {RECIPIENT_B},");
    let config = Config::load(None, env(&[("SEALPOST_ESCROW_RECIPIENTS", &list)]))?;
    let got: Vec<String> = config
        .escrow_recipients
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(got, [RECIPIENT_A, RECIPIENT_B]);

    let dir = tempfile::tempdir()?;
    for text in [
        format!("escrow_recipients = [\"{RECIPIENT_A}\", \"{RECIPIENT_B}\"]\n"),
        format!("escrow_recipients = \"{RECIPIENT_A}, {RECIPIENT_B}\"\n"),
    ] {
        let file = toml_file(&dir, &text)?;
        let config = Config::load(Some(&file), env(&[]))?;
        assert_eq!(config.escrow_recipients.len(), 2, "{text}");
    }

    // An empty env value clears a list set in the file.
    let file = toml_file(&dir, &format!("escrow_recipients = [\"{RECIPIENT_A}\"]\n"))?;
    let config = Config::load(Some(&file), env(&[("SEALPOST_ESCROW_RECIPIENTS", "")]))?;
    assert!(config.escrow_recipients.is_empty());
    Ok(())
}

#[test]
fn bad_escrow_recipient_names_its_index() {
    let list = format!("{RECIPIENT_A},age1notakey");
    let err = load_err(None, &[("SEALPOST_ESCROW_RECIPIENTS", &list)]);
    assert!(
        matches!(err, ConfigError::BadRecipient { index: 1, .. }),
        "{err}"
    );
    let message = err.to_string();
    assert!(message.contains("escrow_recipients[1]"), "{message}");
    assert!(message.contains("SEALPOST_ESCROW_RECIPIENTS"), "{message}");
}

#[test]
fn pasted_secret_key_is_not_echoed() {
    let key = "AGE-SECRET-KEY-1KTHFNYXWP3ZWNGNZF5N8ZRFKEGWVFRDPLF4AACDY2M04WSASJ40QQSWSNU";
    let err = load_err(None, &[("SEALPOST_ESCROW_RECIPIENTS", key)]);
    assert!(matches!(err, ConfigError::BadRecipient { index: 0, .. }));
    assert!(!err.to_string().contains(&key[15..]), "{err}");
    assert!(!format!("{err:?}").contains(&key[15..]));
}

#[test]
fn bad_bind_errors() {
    let err = load_err(None, &[("SEALPOST_BIND", "localhost:8080")]);
    assert!(matches!(
        err,
        ConfigError::Invalid {
            setting: "bind",
            ..
        }
    ));
    let message = err.to_string();
    assert!(message.contains("SEALPOST_BIND"), "{message}");
    assert!(message.contains("socket address"), "{message}");
}

#[test]
fn empty_paths_error() {
    for var in [
        "SEALPOST_DATA_DIR",
        "SEALPOST_BLOB_DIR",
        "SEALPOST_MASTER_KEY_FILE",
    ] {
        let err = load_err(None, &[(var, "")]);
        assert!(matches!(err, ConfigError::Invalid { .. }), "{var}: {err}");
        assert!(err.to_string().contains(var), "{err}");
    }
}

#[test]
fn bad_public_url_errors() {
    for url in [
        "messages.example.com",
        "ftp://example.com",
        "https://",
        "https:///path",
        "https://example.com/?a=1",
        "https://example.com/#top",
        "https://user@example.com",
        "https://exa mple.com",
    ] {
        let err = load_err(None, &[("SEALPOST_PUBLIC_URL", url)]);
        assert!(
            matches!(
                err,
                ConfigError::Invalid {
                    setting: "public_url",
                    ..
                }
            ),
            "{url}: {err}"
        );
    }
}

#[test]
fn public_url_trailing_slash_is_stripped() -> TestResult {
    let config = Config::load(
        None,
        env(&[("SEALPOST_PUBLIC_URL", "https://example.com/portal/")]),
    )?;
    assert_eq!(config.public_url, "https://example.com/portal");
    assert!(config.is_https());
    let config = Config::load(None, env(&[("SEALPOST_PUBLIC_URL", "http://example.com/")]))?;
    assert_eq!(config.public_url, "http://example.com");
    assert!(!config.is_https());
    Ok(())
}

#[test]
fn bad_database_url_error_hides_the_value() {
    let err = load_err(None, &[("SEALPOST_DATABASE_URL", PASSWORD)]);
    assert!(matches!(
        err,
        ConfigError::Invalid {
            setting: "database_url",
            ..
        }
    ));
    assert!(!err.to_string().contains(PASSWORD), "{err}");
    assert!(!format!("{err:?}").contains(PASSWORD));
}

#[test]
fn redacted_output_hides_postgres_password() -> TestResult {
    let url = format!("postgres://sealpost:{PASSWORD}@db.internal:5432/sealpost");
    let config = Config::load(
        None,
        env(&[
            ("SEALPOST_DATABASE_URL", &url),
            ("SEALPOST_ESCROW_RECIPIENTS", RECIPIENT_A),
        ]),
    )?;
    let shown = config.to_redacted_toml();
    assert!(!shown.contains(PASSWORD), "{shown}");
    assert!(
        shown.contains(r#"database_url = "postgres://sealpost:***@db.internal:5432/sealpost""#),
        "{shown}"
    );
    assert!(
        shown.contains(&format!("escrow_recipients = [\"{RECIPIENT_A}\"]")),
        "{shown}"
    );
    assert!(shown.contains("bind = \"127.0.0.1:8080\""), "{shown}");

    let debug = format!("{config:?}");
    assert!(!debug.contains(PASSWORD), "{debug}");
    assert!(!format!("{config:#?}").contains(PASSWORD));
    Ok(())
}

#[test]
fn redacted_output_is_loadable_toml() -> TestResult {
    let dir = tempfile::tempdir()?;
    let original = Config::load(
        None,
        env(&[
            ("SEALPOST_DATA_DIR", "/srv/\"quoted\" dir"),
            (
                "SEALPOST_ESCROW_RECIPIENTS",
                &format!("{RECIPIENT_A},{RECIPIENT_B}"),
            ),
            ("SEALPOST_PUBLIC_URL", "https://example.com"),
        ]),
    )?;
    let file = toml_file(&dir, &original.to_redacted_toml())?;
    let reloaded = Config::load(Some(&file), env(&[]))?;
    assert_eq!(reloaded.to_redacted_toml(), original.to_redacted_toml());
    assert_eq!(reloaded.data_dir, original.data_dir);
    Ok(())
}

#[test]
fn mail_defaults_to_the_dev_mailbox() -> TestResult {
    let config = Config::load(None, env(&[]))?;
    assert!(config.smtp_url.is_none());
    assert_eq!(config.mail_from, "Sealpost <sealpost@localhost>");
    assert!(!config.to_redacted_toml().contains("smtp_url"));
    Ok(())
}

#[test]
fn smtp_url_and_mail_from_layer_like_other_settings() -> TestResult {
    let dir = tempfile::tempdir()?;
    let file = toml_file(
        &dir,
        "smtp_url = \"smtp://relay.internal:25\"\nmail_from = \"Bank <messages@bank.example>\"\n",
    )?;
    let config = Config::load(Some(&file), env(&[]))?;
    let smtp = config
        .smtp_url
        .as_ref()
        .map(|s| s.expose_secret().to_owned());
    assert_eq!(smtp.as_deref(), Some("smtp://relay.internal:25"));
    assert_eq!(config.mail_from, "Bank <messages@bank.example>");

    for url in [
        "smtp://user:pass@mail.example.com:587?tls=starttls",
        "smtp://mail.example.com:587?tls=required",
        "smtps://user:pass@mail.example.com",
        "smtp://127.0.0.1:2525",
    ] {
        let config = Config::load(Some(&file), env(&[("SEALPOST_SMTP_URL", url)]))?;
        let smtp = config
            .smtp_url
            .as_ref()
            .map(|s| s.expose_secret().to_owned());
        assert_eq!(smtp.as_deref(), Some(url));
    }
    Ok(())
}

#[test]
fn smtp_url_can_come_from_a_file() -> TestResult {
    let dir = tempfile::tempdir()?;
    let secret = dir.path().join("smtp_url");
    let url = format!("smtps://sealpost:{PASSWORD}@mail.example.com");
    fs::write(&secret, format!("{url}\n"))?;
    let secret_path = secret.to_string_lossy().into_owned();
    let config = Config::load(None, env(&[("SEALPOST_SMTP_URL_FILE", &secret_path)]))?;
    let smtp = config
        .smtp_url
        .as_ref()
        .map(|s| s.expose_secret().to_owned());
    assert_eq!(smtp, Some(url));

    let err = load_err(
        None,
        &[
            ("SEALPOST_SMTP_URL_FILE", &secret_path),
            ("SEALPOST_SMTP_URL", "smtp://other:25"),
        ],
    );
    assert!(matches!(err, ConfigError::SecretConflict { .. }), "{err}");
    Ok(())
}

#[test]
fn bad_smtp_url_error_hides_the_value() {
    for url in [
        format!("http://u:{PASSWORD}@mail.example.com"),
        format!("smtp://u:{PASSWORD}@mail.example.com?tls=sometimes"),
        PASSWORD.to_owned(),
        String::new(),
    ] {
        let err = load_err(None, &[("SEALPOST_SMTP_URL", &url)]);
        assert!(
            matches!(
                err,
                ConfigError::Invalid {
                    setting: "smtp_url",
                    ..
                }
            ),
            "{err}"
        );
        assert!(!err.to_string().contains(PASSWORD), "{err}");
        assert!(!format!("{err:?}").contains(PASSWORD));
        assert!(err.to_string().contains("SEALPOST_SMTP_URL"), "{err}");
    }
}

#[test]
fn redacted_output_hides_the_smtp_password() -> TestResult {
    let url = format!("smtp://sealpost:{PASSWORD}@mail.example.com:587?tls=starttls");
    let config = Config::load(None, env(&[("SEALPOST_SMTP_URL", &url)]))?;
    let shown = config.to_redacted_toml();
    assert!(!shown.contains(PASSWORD), "{shown}");
    assert!(
        shown.contains(r#"smtp_url = "smtp://sealpost:***@mail.example.com:587?tls=starttls""#),
        "{shown}"
    );
    assert!(!format!("{config:?}").contains(PASSWORD));
    Ok(())
}

#[test]
fn bad_mail_from_errors() {
    for from in ["", "not an address", "a@b@c"] {
        let err = load_err(None, &[("SEALPOST_MAIL_FROM", from)]);
        assert!(
            matches!(
                err,
                ConfigError::Invalid {
                    setting: "mail_from",
                    ..
                }
            ),
            "{from:?}: {err}"
        );
    }
}

#[test]
fn blobs_stay_local_unless_blob_url_is_set() -> TestResult {
    let config = Config::load(None, env(&[]))?;
    assert!(config.blob_url.is_none());
    assert_eq!(config.s3_region, "us-east-1");
    let shown = config.to_redacted_toml();
    assert!(
        !shown.contains("blob_url") && !shown.contains("s3_"),
        "{shown}"
    );
    Ok(())
}

#[test]
fn s3_settings_layer_like_other_settings() -> TestResult {
    let dir = tempfile::tempdir()?;
    let file = toml_file(
        &dir,
        "blob_url = \"s3://sealpost-blobs\"\ns3_endpoint = \"https://minio.internal:9000/\"\n",
    )?;
    let config = Config::load(Some(&file), env(&[]))?;
    let location = config.blob_url.clone().ok_or("blob_url")?;
    assert_eq!(location.bucket, "sealpost-blobs");
    assert_eq!(location.prefix, "");
    assert_eq!(
        config.s3_endpoint.as_deref(),
        Some("https://minio.internal:9000")
    );
    assert_eq!(config.s3_region, "us-east-1");
    assert!(config.s3_access_key_id.is_none() && config.s3_secret_access_key.is_none());

    let config = Config::load(
        Some(&file),
        env(&[
            ("SEALPOST_BLOB_URL", "s3://other.bucket/prod/eu-1/"),
            ("SEALPOST_S3_REGION", "eu-central-1"),
            ("SEALPOST_S3_ACCESS_KEY_ID", "AKIAEXAMPLE"),
            ("SEALPOST_S3_SECRET_ACCESS_KEY", PASSWORD),
        ]),
    )?;
    let location = config.blob_url.clone().ok_or("blob_url")?;
    assert_eq!(location.bucket, "other.bucket");
    assert_eq!(location.prefix, "prod/eu-1");
    assert_eq!(location.to_string(), "s3://other.bucket/prod/eu-1");
    assert_eq!(config.s3_region, "eu-central-1");
    assert_eq!(config.s3_access_key_id.as_deref(), Some("AKIAEXAMPLE"));
    let secret = config
        .s3_secret_access_key
        .as_ref()
        .map(|s| s.expose_secret().to_owned());
    assert_eq!(secret.as_deref(), Some(PASSWORD));
    Ok(())
}

#[test]
fn bad_blob_url_errors() {
    for url in [
        "file:///srv/blobs",
        "/srv/blobs",
        "https://sealpost-blobs.s3.amazonaws.com",
        "s3://",
        "s3://ab",
        "s3://Bad_Bucket",
        "s3://-bucket",
        "s3://bucket//prefix",
        "s3://bucket/../prefix",
        "s3://bucket/pre fix",
        "s3://bucket?x=1",
    ] {
        let err = load_err(None, &[("SEALPOST_BLOB_URL", url)]);
        assert!(
            matches!(
                err,
                ConfigError::Invalid {
                    setting: "blob_url",
                    ..
                }
            ),
            "{url}: {err}"
        );
        let message = err.to_string();
        assert!(message.contains("SEALPOST_BLOB_URL"), "{message}");
        assert!(message.contains("s3://bucket/prefix"), "{message}");
    }
}

#[test]
fn s3_settings_without_blob_url_error() {
    for var in [
        "SEALPOST_S3_ENDPOINT",
        "SEALPOST_S3_REGION",
        "SEALPOST_S3_ACCESS_KEY_ID",
        "SEALPOST_S3_SECRET_ACCESS_KEY",
    ] {
        let value = if var == "SEALPOST_S3_ENDPOINT" {
            "https://minio.internal"
        } else {
            "eu-west-1"
        };
        let err = load_err(None, &[(var, value)]);
        assert!(matches!(err, ConfigError::Needs { .. }), "{var}: {err}");
        let message = err.to_string();
        assert!(message.contains(var), "{message}");
        assert!(message.contains("blob_url"), "{message}");
    }
}

#[test]
fn s3_keys_come_in_pairs() {
    let url = ("SEALPOST_BLOB_URL", "s3://sealpost-blobs");
    let err = load_err(None, &[url, ("SEALPOST_S3_ACCESS_KEY_ID", "AKIAEXAMPLE")]);
    assert!(
        matches!(
            err,
            ConfigError::Needs {
                needs: "s3_secret_access_key",
                ..
            }
        ),
        "{err}"
    );
    let err = load_err(None, &[url, ("SEALPOST_S3_SECRET_ACCESS_KEY", PASSWORD)]);
    assert!(
        matches!(
            err,
            ConfigError::Needs {
                needs: "s3_access_key_id",
                ..
            }
        ),
        "{err}"
    );
    assert!(!err.to_string().contains(PASSWORD), "{err}");
}

#[test]
fn bad_s3_endpoint_error_hides_the_value() {
    for endpoint in [
        "minio.internal:9000".to_owned(),
        "ftp://minio.internal".to_owned(),
        "https://".to_owned(),
        format!("https://user:{PASSWORD}@minio.internal"),
        "https://minio.internal?x=1".to_owned(),
    ] {
        let err = load_err(
            None,
            &[
                ("SEALPOST_BLOB_URL", "s3://sealpost-blobs"),
                ("SEALPOST_S3_ENDPOINT", &endpoint),
            ],
        );
        assert!(
            matches!(
                err,
                ConfigError::Invalid {
                    setting: "s3_endpoint",
                    ..
                }
            ),
            "{endpoint}: {err}"
        );
        assert!(!err.to_string().contains(PASSWORD), "{err}");
    }
}

#[test]
fn s3_secret_key_can_come_from_a_file_and_is_redacted() -> TestResult {
    let dir = tempfile::tempdir()?;
    let secret = dir.path().join("s3_secret");
    fs::write(&secret, format!("{PASSWORD}\n"))?;
    let secret_path = secret.to_string_lossy().into_owned();
    let vars = [
        ("SEALPOST_BLOB_URL", "s3://sealpost-blobs/sealpost"),
        ("SEALPOST_S3_ENDPOINT", "http://127.0.0.1:9000"),
        ("SEALPOST_S3_ACCESS_KEY_ID", "AKIAEXAMPLE"),
        ("SEALPOST_S3_SECRET_ACCESS_KEY_FILE", secret_path.as_str()),
    ];
    let config = Config::load(None, env(&vars))?;
    let key = config
        .s3_secret_access_key
        .as_ref()
        .map(|s| s.expose_secret().to_owned());
    assert_eq!(key.as_deref(), Some(PASSWORD));

    let shown = config.to_redacted_toml();
    assert!(!shown.contains(PASSWORD), "{shown}");
    for line in [
        r#"blob_url = "s3://sealpost-blobs/sealpost""#,
        r#"s3_endpoint = "http://127.0.0.1:9000""#,
        r#"s3_region = "us-east-1""#,
        r#"s3_access_key_id = "AKIAEXAMPLE""#,
        r#"s3_secret_access_key = "***""#,
    ] {
        assert!(
            shown.lines().any(|l| l == line),
            "{line} missing from:\n{shown}"
        );
    }
    assert!(!format!("{config:?}").contains(PASSWORD));
    assert!(!format!("{config:#?}").contains(PASSWORD));

    let err = load_err(
        None,
        &[
            ("SEALPOST_BLOB_URL", "s3://sealpost-blobs"),
            ("SEALPOST_S3_ACCESS_KEY_ID", "AKIAEXAMPLE"),
            ("SEALPOST_S3_SECRET_ACCESS_KEY_FILE", &secret_path),
            ("SEALPOST_S3_SECRET_ACCESS_KEY", "inline"),
        ],
    );
    assert!(matches!(err, ConfigError::SecretConflict { .. }), "{err}");
    Ok(())
}

#[test]
fn redacted_s3_output_is_loadable_toml() -> TestResult {
    let dir = tempfile::tempdir()?;
    let original = Config::load(
        None,
        env(&[
            ("SEALPOST_BLOB_URL", "s3://sealpost-blobs/a/b"),
            ("SEALPOST_S3_ENDPOINT", "https://minio.internal:9000"),
            ("SEALPOST_S3_REGION", "eu-west-3"),
        ]),
    )?;
    let file = toml_file(&dir, &original.to_redacted_toml())?;
    let reloaded = Config::load(Some(&file), env(&[]))?;
    assert_eq!(reloaded.to_redacted_toml(), original.to_redacted_toml());
    assert_eq!(reloaded.blob_url, original.blob_url);
    Ok(())
}

#[test]
fn operations_settings_have_defaults_and_take_toml_numbers() -> TestResult {
    let config = Config::load(None, env(&[]))?;
    assert!(config.metrics_bind.is_none());
    assert_eq!(config.log_format, LogFormat::Text);
    assert_eq!(config.shutdown_timeout, Duration::from_secs(30));
    assert!(config.trusted_proxies.is_empty());
    assert_eq!(config.db_max_connections, 10);
    assert_eq!(config.db_acquire_timeout, Duration::from_secs(30));

    let dir = tempfile::tempdir()?;
    let file = toml_file(
        &dir,
        "metrics_bind = \"127.0.0.1:9090\"\nlog_format = \"json\"\n\
         shutdown_timeout_secs = 60\ntrusted_proxies = [\"10.0.0.0/8\", \"192.0.2.7\"]\n\
         db_max_connections = \"25\"\ndb_acquire_timeout_secs = 5\n",
    )?;
    let config = Config::load(Some(&file), env(&[("SEALPOST_DB_MAX_CONNECTIONS", "4")]))?;
    assert_eq!(
        config.metrics_bind.map(|a| a.to_string()).as_deref(),
        Some("127.0.0.1:9090")
    );
    assert_eq!(config.log_format, LogFormat::Json);
    assert_eq!(config.shutdown_timeout, Duration::from_secs(60));
    assert!(config.trusted_proxies.contains("10.20.30.40".parse()?));
    assert!(config.trusted_proxies.contains("::ffff:192.0.2.7".parse()?));
    assert!(!config.trusted_proxies.contains("192.0.2.8".parse()?));
    assert_eq!(config.db_max_connections, 4, "env wins");
    assert_eq!(config.db_acquire_timeout, Duration::from_secs(5));
    // What `sealpost config` prints loads back to the same settings.
    let shown = toml_file(&dir, &config.to_redacted_toml())?;
    let again = Config::load(Some(&shown), env(&[]))?;
    assert_eq!(again.trusted_proxies, config.trusted_proxies);
    assert_eq!(again.shutdown_timeout, config.shutdown_timeout);
    Ok(())
}

#[test]
fn bad_operations_settings_are_refused_by_name() {
    for (var, value) in [
        ("SEALPOST_METRICS_BIND", "localhost"),
        ("SEALPOST_METRICS_BIND", "127.0.0.1:8080"),
        ("SEALPOST_LOG_FORMAT", "yaml"),
        ("SEALPOST_SHUTDOWN_TIMEOUT_SECS", "-1"),
        ("SEALPOST_SHUTDOWN_TIMEOUT_SECS", "3601"),
        ("SEALPOST_TRUSTED_PROXIES", "10.0.0.0/33"),
        ("SEALPOST_TRUSTED_PROXIES", "proxy.internal"),
        ("SEALPOST_DB_MAX_CONNECTIONS", "0"),
        ("SEALPOST_DB_ACQUIRE_TIMEOUT_SECS", "soon"),
    ] {
        let err = load_err(None, &[(var, value)]).to_string();
        let setting = var.trim_start_matches("SEALPOST_").to_lowercase();
        assert!(err.contains(&setting), "{var}={value}: {err}");
    }
    let dir = tempfile::tempdir().expect("dir");
    let file = toml_file(&dir, "shutdown_timeout_secs = 1.5\n").expect("file");
    assert!(matches!(
        load_err(Some(&file), &[]),
        ConfigError::WrongType { .. }
    ));
}

#[test]
fn smtp_url_is_parsed_once_for_the_transport() -> TestResult {
    let url = format!("smtp://sealpost%40bank:{PASSWORD}@mail.example.com?tls=starttls");
    let config = Config::load(None, env(&[("SEALPOST_SMTP_URL", &url)]))?;
    let smtp = config.smtp_url.as_ref().ok_or("smtp_url")?;
    assert_eq!(smtp.host(), "mail.example.com");
    assert_eq!(smtp.port(), 587);
    assert_eq!(smtp.tls(), SmtpTls::Required);
    let login = smtp.credentials().ok_or("credentials")?;
    assert_eq!(login.user, "sealpost@bank");
    assert_eq!(login.password.expose_secret(), PASSWORD);
    assert!(!format!("{smtp:?}").contains(PASSWORD));
    Ok(())
}

#[test]
fn settings_are_declared_once_and_listed_for_tools() {
    use sealpost::config::{Kind, SETTINGS, docs};
    let list = docs::settings_list();
    let table = docs::readme_table();
    for setting in SETTINGS {
        let line = format!("{} {}", setting.key, setting.kind.as_str());
        assert!(
            list.lines().any(|l| l == line),
            "{line} missing from the list"
        );
        let var = format!("`SEALPOST_{}`", setting.key.to_uppercase());
        assert!(table.contains(&var), "{var} missing from the table");
    }
    // Every secret, and only those, has a `_FILE` form.
    for setting in SETTINGS {
        let var = format!("SEALPOST_{}_FILE", setting.key.to_uppercase());
        let result = Config::load(None, env(&[(&var, "/does/not/exist")]));
        if setting.kind == Kind::Secret {
            assert!(
                !matches!(result, Err(ConfigError::UnknownEnvVar { .. })),
                "{var}"
            );
        } else {
            assert!(
                matches!(result, Err(ConfigError::UnknownEnvVar { .. })),
                "{var}"
            );
        }
    }
}
