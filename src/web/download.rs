//! Decrypted downloads, for customers and staff alike: the headers that
//! keep a browser from rendering a file (always an attachment, sandboxed,
//! a checked type), and a body that decrypts one chunk per poll.

use std::io::{self, BufReader, Read};

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, header};

use crate::vault::PartReader;

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
