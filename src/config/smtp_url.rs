//! `smtp_url`, parsed once at boot into what the mail transport needs, so a
//! bad URL fails when the configuration loads and the mail module needs no
//! parser of its own.
//!
//! The accepted forms are lettre's (`AsyncSmtpTransport::from_url`), which
//! Sealpost used before, plus `tls=starttls` as the common spelling of
//! lettre's `tls=required`:
//!
//! | URL | security | default port |
//! |---|---|---|
//! | `smtp://host` | none (a local relay) | 25 |
//! | `smtp://host?tls=required` or `?tls=starttls` | STARTTLS, refusing plain text | 587 |
//! | `smtp://host?tls=opportunistic` | STARTTLS when offered | 587 |
//! | `smtps://host` | TLS from the first byte | 465 |
//!
//! `user:password@` (percent-encoded) gives credentials; a path names the
//! client in `EHLO` (`smtp://host/client.example.com`).

use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use url::Url;

/// A parsed, validated `smtp_url`. Keeps the URL as written, for
/// [`ExposeSecret`] and for the redacted `sealpost config` output.
#[derive(Clone)]
pub struct SmtpUrl {
    written: SecretString,
    host: String,
    port: u16,
    tls: SmtpTls,
    hello_name: Option<String>,
    credentials: Option<SmtpCredentials>,
}

/// How the connection to the SMTP server is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// Plain text: `smtp://` without `tls=`.
    None,
    /// STARTTLS, refusing a server that does not offer it: `tls=required`.
    Required,
    /// STARTTLS when the server offers it: `tls=opportunistic`.
    Opportunistic,
    /// TLS from the first byte: `smtps://`.
    Wrapper,
}

/// The user and password from the URL, percent-decoded.
#[derive(Clone)]
pub struct SmtpCredentials {
    /// The user name.
    pub user: String,
    /// The password.
    pub password: SecretString,
}

/// Why a URL is not a usable `smtp_url`. Never carries the URL: it may hold
/// a password.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SmtpUrlError {
    /// Not an absolute URL.
    #[error("not a URL")]
    NotAUrl,
    /// Not `smtp://` or `smtps://`, or a `tls=` value other than
    /// `required`, `starttls` or `opportunistic`.
    #[error("not smtp:// or smtps://, or an unknown tls= value")]
    Scheme,
    /// No host.
    #[error("no host")]
    NoHost,
    /// The user or password is not valid percent-encoded UTF-8.
    #[error("user or password is not valid percent-encoded UTF-8")]
    Credentials,
}

impl SmtpUrl {
    /// Parses `text` as lettre would have read it.
    pub fn parse(text: &str) -> Result<SmtpUrl, SmtpUrlError> {
        let url = Url::parse(text).map_err(|_| SmtpUrlError::NotAUrl)?;
        // The first `tls` pair decides, as in lettre; `tls=starttls` in any case
        // stands for `tls=required`.
        let tls_param = url.query_pairs().find_map(|(key, value)| {
            if key.eq_ignore_ascii_case("tls") && value.eq_ignore_ascii_case("starttls") {
                Some("required".to_owned())
            } else {
                (key == "tls").then(|| value.into_owned())
            }
        });
        let (tls, default_port) = match (url.scheme(), tls_param.as_deref()) {
            ("smtp", None) => (SmtpTls::None, 25),
            ("smtp", Some("required")) => (SmtpTls::Required, 587),
            ("smtp", Some("opportunistic")) => (SmtpTls::Opportunistic, 587),
            ("smtps", _) => (SmtpTls::Wrapper, 465),
            _ => return Err(SmtpUrlError::Scheme),
        };
        let host = match url.host_str() {
            Some(host) if !host.is_empty() => host.to_owned(),
            _ => return Err(SmtpUrlError::NoHost),
        };
        let hello_name = (url.path().len() > 1).then(|| url.path().trim_matches('/').to_owned());
        let credentials = match url.password() {
            Some(password) => Some(SmtpCredentials {
                user: percent_decode(url.username())?,
                password: percent_decode(password)?.into(),
            }),
            None => None,
        };
        Ok(SmtpUrl {
            written: text.into(),
            host,
            port: url.port().unwrap_or(default_port),
            tls,
            hello_name,
            credentials,
        })
    }

    /// The server's host name or address (IPv6 in brackets, as written).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port: as written, or the default for the security mode.
    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn tls(&self) -> SmtpTls {
        self.tls
    }

    /// The name to give in `EHLO`, from the URL's path.
    pub fn hello_name(&self) -> Option<&str> {
        self.hello_name.as_deref()
    }

    pub fn credentials(&self) -> Option<&SmtpCredentials> {
        self.credentials.as_ref()
    }
}

/// The URL as written (it may hold a password).
impl ExposeSecret<str> for SmtpUrl {
    fn expose_secret(&self) -> &str {
        self.written.expose_secret()
    }
}

/// Shows where mail goes, never who signs in or with what.
impl fmt::Debug for SmtpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpUrl")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("credentials", &self.credentials.as_ref().map(|_| "***"))
            .finish_non_exhaustive()
    }
}

fn percent_decode(text: &str) -> Result<String, SmtpUrlError> {
    percent_encoding::percent_decode_str(text)
        .decode_utf8()
        .map(|decoded| decoded.into_owned())
        .map_err(|_| SmtpUrlError::Credentials)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<SmtpUrl, SmtpUrlError> {
        SmtpUrl::parse(text)
    }

    #[test]
    fn security_modes_and_default_ports() -> Result<(), SmtpUrlError> {
        for (text, tls, port) in [
            ("smtp://h", SmtpTls::None, 25),
            ("smtp://h:2525", SmtpTls::None, 2525),
            ("smtp://h?tls=required", SmtpTls::Required, 587),
            ("smtp://h:587?tls=starttls", SmtpTls::Required, 587),
            ("smtp://h?TLS=STARTTLS", SmtpTls::Required, 587),
            (
                "smtp://h?x=1&tls=opportunistic",
                SmtpTls::Opportunistic,
                587,
            ),
            ("smtps://h", SmtpTls::Wrapper, 465),
            ("SMTPS://h:1465?tls=whatever", SmtpTls::Wrapper, 1465),
        ] {
            let url = parse(text)?;
            assert_eq!((url.tls(), url.port()), (tls, port), "{text}");
            assert_eq!(url.host(), "h", "{text}");
            assert_eq!(url.expose_secret(), text);
        }
        Ok(())
    }

    #[test]
    fn lettres_forms_are_accepted_and_others_refused() {
        // The cases `former `smtp_builder` was tested with.
        assert!(parse("smtp://u:p@h:587?tls=starttls").is_ok());
        assert!(parse("smtps://h").is_ok());
        assert!(parse("smtp://h:25").is_ok());
        assert_eq!(parse("http://h").err(), Some(SmtpUrlError::Scheme));
        assert_eq!(
            parse("smtp://h?tls=bogus").err(),
            Some(SmtpUrlError::Scheme)
        );
        assert!(parse("h:25").is_err());
        // And what config refused before.
        assert_eq!(parse("").err(), Some(SmtpUrlError::NotAUrl));
        assert_eq!(parse("canary-pw").err(), Some(SmtpUrlError::NotAUrl));
        assert_eq!(parse("smtp://").err(), Some(SmtpUrlError::NoHost));
        assert_eq!(
            parse("smtp://u:p@h?tls=sometimes").err(),
            Some(SmtpUrlError::Scheme)
        );
    }

    #[test]
    fn credentials_are_percent_decoded() -> Result<(), SmtpUrlError> {
        let url = parse("smtp://sealpost%40bank:p%40ss%3Aw@mail.example.com:587?tls=required")?;
        let credentials = url.credentials().ok_or(SmtpUrlError::Credentials)?;
        assert_eq!(credentials.user, "sealpost@bank");
        assert_eq!(credentials.password.expose_secret(), "p@ss:w");
        assert_eq!(url.host(), "mail.example.com");
        // A user without a password is no credentials, as in lettre.
        assert!(parse("smtp://user@h")?.credentials().is_none());
        assert_eq!(
            parse("smtp://u:%FF@h").err(),
            Some(SmtpUrlError::Credentials)
        );
        Ok(())
    }

    #[test]
    fn path_names_the_client_and_ipv6_keeps_brackets() -> Result<(), SmtpUrlError> {
        let url = parse("smtp://h/client.example.com/")?;
        assert_eq!(url.hello_name(), Some("client.example.com"));
        assert_eq!(parse("smtp://h/")?.hello_name(), None);
        assert_eq!(parse("smtp://[::1]:2525")?.host(), "[::1]");
        Ok(())
    }

    #[test]
    fn debug_hides_the_credentials() -> Result<(), SmtpUrlError> {
        let url = parse("smtps://sealpost:canary-pw-7f3a9@mail.example.com")?;
        let debug = format!("{url:?}");
        assert!(!debug.contains("canary-pw-7f3a9"), "{debug}");
        assert!(!debug.contains("sealpost"), "{debug}");
        Ok(())
    }
}
