//! Where webhooks may go, and the HTTP clients that take them there.
//!
//! An endpoint URL is http or https (https recommended: the payload is
//! signed, not encrypted) with a host and no credentials. Unless an admin
//! allowed it for that endpoint, a request only goes to public internet
//! addresses ([`crate::client_net::is_public`]): a literal address in the
//! URL is checked before sending, and a name is resolved by
//! [`PublicResolver`], which drops every address that is not public — so a
//! name that resolves (or re-resolves, DNS rebinding) to a private address
//! is never connected to. Redirects are never followed and no proxy from
//! the environment is used (a proxy would resolve names itself).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::Url;

use crate::client_net::is_public;

/// Longest endpoint URL.
pub const MAX_URL_CHARS: usize = 2000;
/// A whole attempt (connect, send, the response's head).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Error class of a request refused because its address is not public.
pub const BLOCKED: &str = "blocked: private address";

/// Why an endpoint URL was refused (the admin sees the text).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("Enter the endpoint's full address, like https://hooks.example.com/sealpost.")]
    NotAUrl,
    #[error("The address must start with https:// (or http://).")]
    Scheme,
    #[error("The address must not contain a user name or password.")]
    Credentials,
    #[error("The address is too long.")]
    TooLong,
    #[error(
        "That address is on a private or local network. Tick \"allow private addresses\" if this is intended."
    )]
    Private,
}

/// Parses an endpoint URL as an admin typed it.
pub fn parse_url(text: &str, allow_private: bool) -> Result<Url, UrlError> {
    let text = text.trim();
    if text.chars().count() > MAX_URL_CHARS {
        return Err(UrlError::TooLong);
    }
    let url = Url::parse(text).map_err(|_| UrlError::NotAUrl)?;
    if !matches!(url.scheme(), "https" | "http") {
        return Err(UrlError::Scheme);
    }
    if url.host().is_none() {
        return Err(UrlError::NotAUrl);
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(UrlError::Credentials);
    }
    if !allow_private && literal_ip(&url).is_some_and(|ip| !is_public(ip)) {
        return Err(UrlError::Private);
    }
    Ok(url)
}

/// The address in a URL whose host is one (not a name).
pub fn literal_ip(url: &Url) -> Option<IpAddr> {
    match url.host()? {
        url::Host::Ipv4(v4) => Some(IpAddr::V4(v4)),
        url::Host::Ipv6(v6) => Some(IpAddr::V6(v6)),
        url::Host::Domain(_) => None,
    }
}

/// The resolver of the guarded client: the system's answers, public
/// addresses only; none left is an error the worker records as [`BLOCKED`].
#[derive(Clone, Copy, Debug, Default)]
pub struct PublicResolver;

/// Every address a name resolved to was private.
#[derive(Debug, thiserror::Error)]
#[error("{BLOCKED}")]
pub struct Blocked;

impl Resolve for PublicResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found = tokio::net::lookup_host((host.as_str(), 0)).await?;
            let public: Vec<SocketAddr> = found.filter(|a| is_public(a.ip())).collect();
            if public.is_empty() {
                return Err(Box::new(Blocked) as Box<dyn std::error::Error + Send + Sync>);
            }
            let addrs: Addrs = Box::new(public.into_iter());
            Ok(addrs)
        })
    }
}

/// The two clients: `guarded` for endpoints that must stay public, `open`
/// for those an admin allowed to reach private addresses.
#[derive(Clone, Debug)]
pub struct Clients {
    pub guarded: reqwest::Client,
    pub open: reqwest::Client,
}

impl Clients {
    pub fn new() -> Result<Clients, reqwest::Error> {
        crate::tls::install_crypto_provider();
        let builder = || {
            reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .no_proxy()
                .timeout(REQUEST_TIMEOUT)
                .connect_timeout(CONNECT_TIMEOUT)
                .pool_idle_timeout(Duration::from_secs(30))
                .user_agent(concat!("sealpost-webhooks/", env!("CARGO_PKG_VERSION")))
        };
        Ok(Clients {
            guarded: builder().dns_resolver(PublicResolver).build()?,
            open: builder().build()?,
        })
    }
}

/// The error class of a failed request (never its text, which could echo
/// what the receiver sent).
pub fn error_class(e: &reqwest::Error) -> &'static str {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        // The resolver's error, however the connector wrapped it.
        if s.is::<Blocked>() || s.to_string() == BLOCKED {
            return BLOCKED;
        }
        source = s.source();
    }
    if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else if e.is_request() || e.is_body() {
        "request"
    } else {
        "http"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_urls_are_checked() {
        assert!(parse_url("https://hooks.example.com/sealpost", false).is_ok());
        assert!(parse_url("http://hooks.example.com:8080/x?y=1", false).is_ok());
        assert_eq!(
            parse_url("ftp://hooks.example.com/", false),
            Err(UrlError::Scheme)
        );
        assert_eq!(
            parse_url("file:///etc/passwd", false),
            Err(UrlError::Scheme)
        );
        assert_eq!(
            parse_url("hooks.example.com", false),
            Err(UrlError::NotAUrl)
        );
        assert_eq!(
            parse_url("https://user:pw@hooks.example.com/", false),
            Err(UrlError::Credentials)
        );
        for private in [
            "http://127.0.0.1:8080/",
            "http://[::1]/",
            "http://169.254.169.254/latest/meta-data",
            "http://10.1.2.3/",
            "http://[::ffff:127.0.0.1]/",
            "http://0x7f.1/",
        ] {
            assert_eq!(
                parse_url(private, false),
                Err(UrlError::Private),
                "{private}"
            );
            assert!(parse_url(private, true).is_ok(), "{private} when allowed");
        }
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_CHARS));
        assert_eq!(parse_url(&long, false), Err(UrlError::TooLong));
    }
}
