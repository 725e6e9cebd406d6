//! The S3 blob store settings: `blob_url` and the `s3_*` settings that only
//! mean something with it.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};

use super::error::ConfigError;
use super::layers::Sourced;
use super::secrets::{SecretSource, read_secret};

/// The region when none is set, as the AWS SDKs assume.
pub(crate) const DEFAULT_REGION: &str = "us-east-1";

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

/// Passes an `s3_*` setting through when a bucket is set. S3 settings without
/// a bucket are a mistake (a typo in blob_url, or a half-finished migration):
/// say so rather than quietly use the folder.
pub(crate) fn needs_bucket<T>(
    set: Option<Sourced<T>>,
    blob_url: Option<&S3Location>,
) -> Result<Option<Sourced<T>>, ConfigError> {
    match (set, blob_url) {
        (Some(set), None) => Err(ConfigError::Needs {
            origin: set.origin,
            needs: "blob_url = \"s3://…\"",
        }),
        (set, _) => Ok(set),
    }
}

/// `s3://bucket` or `s3://bucket/prefix`. Bucket names follow S3's rules;
/// prefix segments are plain names, so a key can never climb out of them.
pub(crate) fn parse_blob_url(set: Sourced<String>) -> Result<S3Location, ConfigError> {
    let invalid = || {
        set.invalid(
            "s3://bucket or s3://bucket/prefix (leave blob_url unset to keep blobs \
             in the local blob_dir)",
        )
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

pub(crate) fn parse_endpoint(set: Sourced<String>) -> Result<String, ConfigError> {
    let url = set.value.as_str();
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| {
            set.invalid("a URL starting with https:// (or http:// for a local test server)")
        })?;
    if url.contains(['?', '#']) || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(set.invalid("a URL without a query, fragment or spaces"));
    }
    let authority = rest
        .split_once('/')
        .map_or(rest, |(authority, _)| authority);
    if authority.is_empty() || authority.contains('@') {
        return Err(set.invalid(
            "a URL with a host and no user info, such as https://minio.internal:9000 \
             (credentials go in s3_access_key_id and s3_secret_access_key)",
        ));
    }
    Ok(url.trim_end_matches('/').to_owned())
}

pub(crate) fn check_region(set: Sourced<String>) -> Result<String, ConfigError> {
    let valid = !set.value.is_empty()
        && set
            .value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if valid {
        Ok(set.value)
    } else {
        Err(set.invalid("a region name such as us-east-1"))
    }
}

/// The key id, which needs its secret key: one without the other would
/// silently fall back to instance credentials, which is never what someone
/// who set one of them meant.
pub(crate) fn access_key_id(
    set: Sourced<String>,
    secret_key_is_set: bool,
) -> Result<String, ConfigError> {
    let valid = !set.value.is_empty() && set.value.bytes().all(|b| b.is_ascii_graphic());
    if !valid {
        return Err(set.invalid("an access key id without spaces"));
    }
    if !secret_key_is_set {
        return Err(ConfigError::Needs {
            origin: set.origin,
            needs: "s3_secret_access_key",
        });
    }
    Ok(set.value)
}

/// The secret key, which needs its key id (see [`access_key_id`]).
pub(crate) fn secret_access_key(
    set: Sourced<SecretSource>,
    key_id: Option<&String>,
) -> Result<SecretString, ConfigError> {
    let set = read_secret(set)?;
    if key_id.is_none() {
        return Err(ConfigError::Needs {
            origin: set.origin,
            needs: "s3_access_key_id",
        });
    }
    if set.value.expose_secret().is_empty() {
        return Err(set.invalid("a non-empty secret access key"));
    }
    Ok(set.value)
}
