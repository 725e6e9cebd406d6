//! Decrypted downloads, for customers and staff alike: the headers that
//! keep a browser from rendering a file (always an attachment, sandboxed,
//! a checked type), and a body that decrypts one chunk per poll.

use std::io::{self, BufReader, Read};

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, header};

use std::sync::Arc;

use anyhow::Context as _;
use axum::response::{IntoResponse, Response};

use crate::vault::{MessageId, MessageKey, PartKind, PartReader, StoredPart, Vault, VaultError};
use crate::web::PageError;

/// One attachment of a sealed message, found and ready to stream.
pub struct Attachment {
    key: MessageKey,
    part: StoredPart,
    name: String,
    content_type: Option<String>,
}

impl Attachment {
    /// Attachment `position` of message `id` (404 if there is none).
    pub async fn find(vault: &Vault, id: MessageId, position: u32) -> Result<Self, PageError> {
        let key = vault.unlock(id).await?;
        let part = vault
            .parts(id)
            .await?
            .into_iter()
            .find(|p| p.position == position && p.kind == PartKind::Attachment)
            .ok_or(PageError::NotFound)?;
        let meta = key.part_meta(&part)?;
        Ok(Attachment {
            name: meta.file_name.unwrap_or_else(|| format!("file-{position}")),
            content_type: meta.content_type,
            key,
            part,
        })
    }

    /// The response: headers only when `guard` is `None` (a HEAD request:
    /// nothing is decrypted), else the decrypting body holding `guard`
    /// until it ends. `started` runs once the file opened, before the body
    /// goes out (to record the download).
    pub async fn respond<S: Send + 'static>(
        self,
        vault: &Vault,
        guard: Option<S>,
        started: impl AsyncFnOnce() -> Result<(), PageError>,
    ) -> Result<Response, PageError> {
        let Attachment {
            key,
            part,
            name,
            content_type,
        } = self;
        let size = part.plain_size;
        let body = match guard {
            None => Body::empty(),
            Some(guard) => {
                // Opening reads the age header: blob I/O, off the async threads.
                let vault = vault.clone();
                let reader =
                    tokio::task::spawn_blocking(move || vault.open_part_unpipelined(&key, &part))
                        .await
                        .context("opening task failed")??;
                started().await?;
                decrypting_body(reader, guard)
            }
        };
        let mut response = body.into_response();
        file_headers(response.headers_mut(), content_type.as_deref(), size, &name);
        Ok(response)
    }
}

/// A message's text part, decrypted whole (bounded when it was written;
/// still blob I/O, a network round trip with S3, so off the async threads).
pub async fn read_text(
    vault: &Vault,
    key: &Arc<MessageKey>,
    part: StoredPart,
) -> Result<String, PageError> {
    let vault = vault.clone();
    let key = Arc::clone(key);
    let text = tokio::task::spawn_blocking(move || {
        let mut out = zeroize::Zeroizing::new(Vec::new());
        vault.open_part(&key, &part)?.copy_to(&mut *out)?;
        Ok::<_, VaultError>(String::from_utf8_lossy(&out).into_owned())
    })
    .await
    .context("reading task failed")??;
    Ok(text)
}

/// Plaintext handed to the client per body poll: one age chunk.
const DOWNLOAD_CHUNK: usize = 64 * 1024;

pub fn file_headers(headers: &mut HeaderMap, content_type: Option<&str>, size: u64, name: &str) {
    headers.insert(header::CONTENT_TYPE, safe_content_type(content_type));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    if let Ok(v) = HeaderValue::from_str(&content_disposition(name)) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("sandbox; default-src 'none'"),
    );
}

pub type Plaintext = PartReader<BufReader<Box<dyn Read + Send>>>;

/// The body of a download: each poll decrypts the next chunk in a short
/// blocking task, so at most one chunk is buffered and nothing runs while
/// the client is not reading. A ciphertext failure mid-way (tampering,
/// truncation: age checks every chunk's tag and the final-chunk flag at the
/// end) ends the stream with an error, which aborts the connection: the
/// client never sees a short file as complete.
pub fn decrypting_body<S: Send + 'static>(reader: Plaintext, slot: S) -> Body {
    let stream = futures_util::stream::unfold(Some((reader, slot)), |state| async move {
        let (mut reader, slot) = state?;
        let read = tokio::task::spawn_blocking(move || {
            let chunk = next_chunk(&mut reader);
            (reader, chunk)
        })
        .await;
        match read {
            Ok((reader, Ok(Some(chunk)))) => Some((Ok(chunk), Some((reader, slot)))),
            Ok((_, Ok(None))) => None,
            Ok((_, Err(e))) => {
                tracing::warn!(error = %e, "download aborted: the attachment failed to decrypt");
                Some((Err(io::Error::other("decryption failed")), None))
            }
            Err(e) => {
                tracing::warn!(error = %e, "download aborted: the decrypting task failed");
                Some((Err(io::Error::other("decryption failed")), None))
            }
        }
    });
    Body::from_stream(stream)
}

/// Up to one chunk of plaintext; `None` once the whole file was read and
/// verified.
fn next_chunk(reader: &mut Plaintext) -> io::Result<Option<Bytes>> {
    let mut buf = vec![0u8; DOWNLOAD_CHUNK];
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    if filled == 0 {
        return Ok(None);
    }
    buf.truncate(filled);
    Ok(Some(Bytes::from(buf)))
}

/// The stored type if it is a plain `type/subtype`, else a byte stream.
fn safe_content_type(stored: Option<&str>) -> HeaderValue {
    let ok = |t: &str| {
        let mut halves = t.split('/');
        let valid = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$&^_.+-".contains(&b))
        };
        matches!((halves.next(), halves.next(), halves.next()), (Some(a), Some(b), None) if valid(a) && valid(b))
    };
    stored
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| ok(t))
        .and_then(|t| HeaderValue::from_str(&t).ok())
        .unwrap_or_else(|| HeaderValue::from_static("application/octet-stream"))
}

/// RFC 6266: an ASCII fallback plus the exact name as RFC 8187 UTF-8.
fn content_disposition(name: &str) -> String {
    let fallback: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let encoded: String = name
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    format!("attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dispositions_follow_rfc_6266() {
        assert_eq!(
            content_disposition("tax 2025.pdf"),
            "attachment; filename=\"tax 2025.pdf\"; filename*=UTF-8''tax%202025.pdf"
        );
        assert_eq!(
            content_disposition("Zeugnis \"Müller\".pdf"),
            "attachment; filename=\"Zeugnis _M_ller_.pdf\"; filename*=UTF-8''Zeugnis%20%22M%C3%BCller%22.pdf"
        );
    }

    #[test]
    fn content_types_are_checked() {
        assert_eq!(
            safe_content_type(Some("application/pdf")),
            "application/pdf"
        );
        assert_eq!(
            safe_content_type(Some("text/html; charset=x")),
            "application/octet-stream"
        );
        assert_eq!(safe_content_type(None), "application/octet-stream");
    }
}
