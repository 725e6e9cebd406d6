//! Files as they arrive in a multipart form (staff attachments, customer
//! replies): the file name a part's header gives (cleaned for display),
//! the budget of the text fields beside them, and streaming one part into
//! a draft on a blocking thread with constant memory, after checking what
//! its content is when the sender is a customer.

use anyhow::Context as _;
use std::io::{self, Read, Write};

use axum::body::Bytes;
use axum::extract::Multipart;
use axum::extract::multipart::Field;
use axum::http::{HeaderMap, header};
use tokio::sync::mpsc;

use crate::filetype::{FileKind, HEAD_BYTES, sniff};
use crate::scan::{ScanError, ScanStream, Scanner, Verdict};
use crate::vault::{Draft, PartKind, PartMeta, Vault, VaultError};
use crate::web::PageError;

/// What a customer's file must pass before it is kept. Staff attachments
/// pass [`Checks::none`].
#[derive(Clone, Debug, Default)]
pub struct Checks {
    /// The kinds accepted, judged by content; `None` accepts anything.
    pub kinds: Option<Vec<FileKind>>,
    /// The malware scanner every byte also goes to, when configured.
    pub scanner: Option<Scanner>,
}

impl Checks {
    pub fn none() -> Checks {
        Checks::default()
    }
}

/// Why a file was not kept. The caller refuses the whole form, which
/// drops the draft and with it every blob already written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// Its content is not one of the accepted kinds (whatever its name).
    Kind,
    /// Nothing in it.
    Empty,
    /// The scanner found malware.
    Infected,
    /// The scanner is configured but could not be reached or failed: the
    /// file cannot be checked, so it is refused (fail closed).
    ScannerUnavailable,
    /// Larger than the scanner accepts.
    TooLargeToScan,
}

impl Refused {
    /// The audit log's class of the refusal (never the file's name).
    pub fn reason(self) -> &'static str {
        match self {
            Refused::Kind => "file_type",
            Refused::Empty => "empty_file",
            Refused::Infected => "malware",
            Refused::ScannerUnavailable => "scanner_unavailable",
            Refused::TooLargeToScan => "too_large_to_scan",
        }
    }

    /// What the customer is told, naming their file and what is accepted.
    pub fn message(self, file_name: &str, accepted: &[FileKind]) -> String {
        match self {
            Refused::Kind => {
                let kinds: Vec<&str> = accepted.iter().map(|k| k.label()).collect();
                format!(
                    "\u{201c}{file_name}\u{201d} is not a kind of file we can accept. Accepted: {}. Nothing was sent.",
                    kinds.join(", ")
                )
            }
            Refused::Empty => {
                format!("\u{201c}{file_name}\u{201d} is empty. Nothing was sent.")
            }
            Refused::Infected => format!(
                "\u{201c}{file_name}\u{201d} was refused: our malware check found something harmful in it. Nothing was sent."
            ),
            Refused::ScannerUnavailable => "Files cannot be accepted right now because our malware check is unavailable. Nothing was sent; please try again later.".to_owned(),
            Refused::TooLargeToScan => format!(
                "\u{201c}{file_name}\u{201d} is too large for our malware check. Nothing was sent."
            ),
        }
    }
}

/// Room for the text fields and multipart framing on top of a size limit.
pub const FORM_OVERHEAD: u64 = MAX_FORM_BYTES as u64 + 1024 * 1024;

/// A multipart form whose files may hold `limit` bytes. The whole body is
/// capped as well (the caps on fields and files count their contents, not
/// framing, and a part's header is buffered whole until its blank line).
/// The flag: the declared length is already over the cap (browsers send it
/// up front), so the upload can be refused before it is read.
pub async fn open_multipart<S: Send + Sync>(
    request: axum::extract::Request,
    state: &S,
    limit: u64,
) -> Result<(Multipart, bool), PageError> {
    use axum::extract::FromRequest;
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let cap = limit.saturating_add(FORM_OVERHEAD);
    let request = request.map(|body| {
        axum::body::Body::new(http_body_util::Limited::new(
            body,
            usize::try_from(cap).unwrap_or(usize::MAX),
        ))
    });
    let multipart = Multipart::from_request(request, state)
        .await
        .map_err(|_| PageError::BadRequest("The form was not a valid upload.".to_owned()))?;
    Ok((multipart, declared.is_some_and(|n| n > cap)))
}

/// Starts a draft capped at `limit` bytes with `text` as its body (part 0).
/// Sealing writes and fsyncs a blob: off the async threads.
pub async fn begin_with_text(vault: &Vault, limit: u64, text: &str) -> Result<Draft, PageError> {
    let mut draft = vault.begin_message();
    draft.set_size_limit(limit);
    seal_text(draft, text).await
}

/// Seals `text` into the draft as its body.
pub async fn seal_text(mut draft: Draft, text: &str) -> Result<Draft, PageError> {
    let body = zeroize::Zeroizing::new(text.as_bytes().to_vec());
    let meta = PartMeta {
        file_name: None,
        content_type: Some("text/plain; charset=utf-8".to_owned()),
        item: None,
    };
    let (draft, result) = tokio::task::spawn_blocking(move || {
        let result = draft.seal_part(PartKind::Body, &meta, &body[..]);
        (draft, result)
    })
    .await
    .context("sealing task failed")?;
    result?;
    Ok(draft)
}

/// A file field's first bytes, telling an empty part from a file (multer
/// may hand out an empty chunk first).
pub async fn first_chunk(field: &mut Field<'_>) -> Result<Option<Bytes>, PageError> {
    while let Some(chunk) = field.chunk().await.map_err(|_| interrupted())? {
        if !chunk.is_empty() {
            return Ok(Some(chunk));
        }
    }
    Ok(None)
}

/// What sealing one field came to: the draft with the part added (and
/// the kind its content showed, when checked), or a refusal.
pub type Sealed = Result<(Draft, Option<FileKind>), Refused>;

/// Streams one multipart field (whose `first` chunk was already read) into
/// the draft on a blocking thread; chunks cross over a small bounded
/// channel, so memory stays constant. If the request is abandoned, the
/// draft is dropped with the task and its blobs deleted.
pub async fn seal_field(
    draft: Draft,
    kind: PartKind,
    meta: PartMeta,
    first: Option<Bytes>,
    field: Field<'_>,
) -> Result<Draft, PageError> {
    match seal_checked(draft, kind, meta, first, field, Checks::none()).await? {
        Ok((draft, _)) => Ok(draft),
        Err(refused) => Err(PageError::bug(refused.reason())),
    }
}

/// [`seal_field`] with `checks`: the first [`HEAD_BYTES`] are read and
/// judged before anything is written, so a refused kind leaves nothing.
pub async fn seal_checked(
    mut draft: Draft,
    kind: PartKind,
    mut meta: PartMeta,
    first: Option<Bytes>,
    mut field: Field<'_>,
    checks: Checks,
) -> Result<Sealed, PageError> {
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(4);
    let sealer = tokio::task::spawn_blocking(move || {
        let mut input = ChannelReader {
            rx,
            buf: Bytes::new(),
        };
        let mut head = Vec::with_capacity(HEAD_BYTES);
        if let Err(e) = (&mut input).take(HEAD_BYTES as u64).read_to_end(&mut head) {
            return (draft, Err(VaultError::Input(e)));
        }
        let sniffed = sniff(&head);
        if let Some(kinds) = &checks.kinds {
            match sniffed {
                _ if head.is_empty() => return (draft, Ok(Err(Refused::Empty))),
                Some(k) if kinds.contains(&k) => meta.content_type = Some(k.mime().to_owned()),
                _ => return (draft, Ok(Err(Refused::Kind))),
            }
        }
        let mut scan = match checks.scanner.as_ref().map(Scanner::start).transpose() {
            Ok(scan) => scan,
            Err(e) => {
                tracing::warn!(error = %e, "the malware scanner is unavailable; upload refused");
                return (draft, Ok(Err(Refused::ScannerUnavailable)));
            }
        };
        let input = Tee {
            input: io::Cursor::new(head).chain(input),
            copy: scan.as_mut(),
        };
        if let Err(e) = draft.seal_part(kind, &meta, input) {
            return (draft, Err(e));
        }
        let verdict = match scan.map(ScanStream::finish).transpose() {
            Ok(None | Some(Verdict::Clean)) => Ok(sniffed),
            Ok(Some(Verdict::Infected(_))) => Err(Refused::Infected),
            Err(ScanError::TooLarge) => Err(Refused::TooLargeToScan),
            Err(e) => {
                tracing::warn!(error = %e, "the malware scan failed; upload refused");
                Err(Refused::ScannerUnavailable)
            }
        };
        (draft, Ok(verdict))
    });
    // A send fails only when the sealer stopped (refusal, size limit):
    // stop feeding it.
    let stopped = match first {
        Some(first) => tx.send(Ok(first)).await.is_err(),
        None => false,
    };
    if !stopped {
        loop {
            match field.chunk().await {
                Ok(Some(chunk)) => {
                    if tx.send(Ok(chunk)).await.is_err() {
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    let _ = tx.send(Err(io::Error::other(e.to_string()))).await;
                    break;
                }
            }
        }
    }
    drop(tx);
    let (draft, result) = sealer.await.context("sealing task failed")?;
    match result {
        Ok(Ok(kind)) => Ok(Ok((draft, kind))),
        Ok(Err(refused)) => Ok(Err(refused)),
        Err(VaultError::Input(_)) => Err(PageError::BadRequest(
            "The upload was interrupted. Nothing was sent; please try again.".to_owned(),
        )),
        Err(e) => Err(e.into()),
    }
}

/// A reader that also hands every byte read to the scanner. A failed
/// scanner write is not a failed upload: the scanner stream keeps its
/// error and [`ScanStream::finish`] reports it.
struct Tee<'a, R> {
    input: R,
    copy: Option<&'a mut ScanStream>,
}

impl<R: Read> Read for Tee<'_, R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = self.input.read(out)?;
        if let Some(scan) = self.copy.as_deref_mut()
            && scan.write_all(&out[..n]).is_err()
        {
            self.copy = None;
        }
        Ok(n)
    }
}

struct ChannelReader {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    buf: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.buf.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.buf = b,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len());
        out[..n].copy_from_slice(&self.buf.split_to(n));
        Ok(n)
    }
}

/// Parts other than files a form may have (the compose page sends about
/// 12): each is parsed and kept, so a flood of small fields must end early.
pub const MAX_FIELDS: usize = 64;
/// Bytes of every non-file field together, a message body included.
pub const MAX_FORM_BYTES: usize = 1024 * 1024;

pub fn interrupted() -> PageError {
    PageError::BadRequest("The upload was interrupted. Please try again.".to_owned())
}

/// What the non-file fields of one form have used so far: a count and
/// their bytes together, each capped, checked while streaming so nothing
/// over the limit is ever held. Over either cap the request is refused
/// with a short page that echoes nothing.
#[derive(Default)]
pub struct Budget {
    fields: usize,
    bytes: usize,
}

impl Budget {
    pub fn count(&mut self) -> Result<(), PageError> {
        self.fields += 1;
        if self.fields > MAX_FIELDS {
            return Err(PageError::TooLarge(format!(
                "The form has too many fields (at most {MAX_FIELDS}). Nothing was sent or kept."
            )));
        }
        Ok(())
    }

    /// Reads a text field of at most `cap` bytes.
    pub async fn text(&mut self, mut field: Field<'_>, cap: usize) -> Result<String, PageError> {
        let mut out = Vec::new();
        while let Some(chunk) = field.chunk().await.map_err(|_| interrupted())? {
            if out.len() + chunk.len() > cap {
                return Err(PageError::TooLarge(
                    "A form field is longer than allowed. Nothing was sent or kept.".to_owned(),
                ));
            }
            if self.bytes + out.len() + chunk.len() > MAX_FORM_BYTES {
                return Err(PageError::TooLarge(format!(
                    "The form's text is larger than {} MiB altogether. Nothing was sent or kept.",
                    MAX_FORM_BYTES / (1024 * 1024)
                )));
            }
            out.extend_from_slice(&chunk);
        }
        self.bytes += out.len();
        String::from_utf8(out)
            .map_err(|_| PageError::BadRequest("The form contained invalid text.".into()))
    }
}

/// A part's file name as its `Content-Disposition` gives it.
#[derive(Debug, PartialEq, Eq)]
pub enum UploadName {
    /// No `filename` parameter: a plain form field.
    None,
    Name(String),
    /// Only an RFC 5987 `filename*` that does not decode.
    Unreadable,
}

/// Reads the file name from the raw header rather than taking multer's:
/// multer ignores `filename*` (RFC 7578 allows it, RFC 6266 prefers it) and
/// drops a name that is not UTF-8, which would turn a named file into a
/// nameless part. Here `filename*` wins when it decodes; a plain `filename`
/// that is not UTF-8 is read as ISO-8859-1 (HTTP's historical header
/// charset), so the file keeps a readable name.
pub fn upload_name(headers: &HeaderMap) -> UploadName {
    let Some(value) = headers.get(header::CONTENT_DISPOSITION) else {
        return UploadName::None;
    };
    let params = disposition_params(value.as_bytes());
    let find = |key: &str| {
        params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_slice())
    };
    let extended = find("filename*").map(decode_ext_value);
    let plain = find("filename").map(decode_plain_name);
    match (extended, plain) {
        (Some(Some(name)), _) => UploadName::Name(name),
        (_, Some(name)) => UploadName::Name(name),
        (Some(None), None) => UploadName::Unreadable,
        (None, None) => UploadName::None,
    }
}

/// The `; key=value` parameters of a header value (lower-case keys as
/// sent; quoted values unquoted, `\"` and `\\` unescaped).
fn disposition_params(raw: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut i = raw.iter().position(|b| *b == b';').unwrap_or(raw.len());
    while i < raw.len() {
        // Skip the separator and spaces before the key.
        while i < raw.len() && (raw[i] == b';' || raw[i].is_ascii_whitespace()) {
            i += 1;
        }
        let key_start = i;
        while i < raw.len() && raw[i] != b'=' && raw[i] != b';' {
            i += 1;
        }
        let key = String::from_utf8_lossy(raw[key_start..i].trim_ascii()).into_owned();
        if i >= raw.len() || raw[i] == b';' {
            continue;
        }
        i += 1;
        while i < raw.len() && raw[i].is_ascii_whitespace() {
            i += 1;
        }
        let mut value = Vec::new();
        if raw.get(i) == Some(&b'"') {
            i += 1;
            while i < raw.len() && raw[i] != b'"' {
                // Only an escaped quote or backslash is an escape: browsers
                // send Windows paths with bare backslashes.
                if raw[i] == b'\\' && matches!(raw.get(i + 1), Some(b'"' | b'\\')) {
                    i += 1;
                }
                value.push(raw[i]);
                i += 1;
            }
            i += 1;
            while i < raw.len() && raw[i] != b';' {
                i += 1;
            }
        } else {
            let start = i;
            while i < raw.len() && raw[i] != b';' {
                i += 1;
            }
            value.extend_from_slice(raw[start..i].trim_ascii());
        }
        out.push((key, value));
    }
    out
}

/// A plain `filename`: browsers write `"`, CR and LF as `%22`, `%0D` and
/// `%0A` (HTML multipart encoding); other bytes are literal.
fn decode_plain_name(raw: &[u8]) -> String {
    let mut bytes = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let escape = raw.get(i..i + 3).and_then(|e| match e {
            b"%22" => Some(b'"'),
            b"%0D" | b"%0d" => Some(b'\r'),
            b"%0A" | b"%0a" => Some(b'\n'),
            _ => None,
        });
        match escape {
            Some(b) => {
                bytes.push(b);
                i += 3;
            }
            None => {
                bytes.push(raw[i]);
                i += 1;
            }
        }
    }
    match String::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => e.into_bytes().into_iter().map(char::from).collect(),
    }
}

/// An RFC 5987 / 8187 `charset'language'percent-encoded` value in UTF-8 or
/// ISO-8859-1; `None` if it is anything else or malformed.
fn decode_ext_value(raw: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(raw).ok()?;
    let mut pieces = text.splitn(3, '\'');
    let charset = pieces.next()?;
    let _language = pieces.next()?;
    let encoded = pieces.next()?.as_bytes();
    let mut bytes = Vec::with_capacity(encoded.len());
    let mut i = 0;
    while i < encoded.len() {
        if encoded[i] == b'%' {
            let hex = std::str::from_utf8(encoded.get(i + 1..i + 3)?).ok()?;
            bytes.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            bytes.push(encoded[i]);
            i += 1;
        }
    }
    if charset.eq_ignore_ascii_case("utf-8") {
        String::from_utf8(bytes).ok()
    } else if charset.eq_ignore_ascii_case("iso-8859-1") {
        Some(bytes.into_iter().map(char::from).collect())
    } else {
        None
    }
}

/// The last path component, without control, format (bidi overrides,
/// zero-width characters) or line/paragraph separator characters, at most
/// 255 chars: some browsers send a full client path, and an invisible
/// U+202E would make "invoice\u{202E}fdp.exe" look like "invoiceexe.pdf".
pub fn clean_file_name(raw: &str) -> String {
    let base = raw.rsplit(['/', '\\']).next().unwrap_or_default();
    base.chars()
        .filter(|c| !c.is_control() && !is_invisible_format(*c))
        .take(255)
        .collect::<String>()
        .trim()
        .to_owned()
}

/// Unicode general category Cf (format characters, Unicode 16), plus the
/// line and paragraph separators U+2028 and U+2029 (Zl, Zp).
fn is_invisible_format(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{0600}'..='\u{0605}'
            | '\u{061C}'
            | '\u{06DD}'
            | '\u{070F}'
            | '\u{0890}'..='\u{0891}'
            | '\u{08E2}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{2028}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206F}'
            | '\u{FEFF}'
            | '\u{FFF9}'..='\u{FFFB}'
            | '\u{110BD}'
            | '\u{110CD}'
            | '\u{13430}'..='\u{1343F}'
            | '\u{1BCA0}'..='\u{1BCA3}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0001}'
            | '\u{E0020}'..='\u{E007F}'
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_lose_paths_and_controls() {
        assert_eq!(
            clean_file_name("C:\\Users\\x\\tax 2025.pdf"),
            "tax 2025.pdf"
        );
        assert_eq!(clean_file_name("../../etc/passwd"), "passwd");
        assert_eq!(clean_file_name("a\u{0}b\nc.txt"), "abc.txt");
    }

    #[test]
    fn file_names_lose_format_characters() {
        assert_eq!(clean_file_name("invoice\u{202E}fdp.exe"), "invoicefdp.exe");
        for c in [
            '\u{200B}',
            '\u{200C}',
            '\u{200D}',
            '\u{200E}',
            '\u{200F}',
            '\u{202A}',
            '\u{202B}',
            '\u{202C}',
            '\u{202D}',
            '\u{2066}',
            '\u{2067}',
            '\u{2068}',
            '\u{2069}',
            '\u{2060}',
            '\u{FEFF}',
            '\u{00AD}',
            '\u{061C}',
            '\u{2028}',
            '\u{2029}',
            '\u{E0041}',
        ] {
            assert_eq!(clean_file_name(&format!("a{c}b.pdf")), "ab.pdf", "{c:?}");
        }
        // Visible characters around them stay, including non-Latin ones.
        assert_eq!(
            clean_file_name("Zeugnis Müller 你好.pdf"),
            "Zeugnis Müller 你好.pdf"
        );
        assert_eq!(
            clean_file_name("a\u{202F}b"),
            "a\u{202F}b",
            "NNBSP is a space"
        );
        assert_eq!(clean_file_name("\u{202E}\u{200B}"), "");
    }

    fn disposition(value: &[u8]) -> UploadName {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_DISPOSITION,
            axum::http::HeaderValue::from_bytes(value).unwrap(),
        );
        upload_name(&h)
    }

    fn named(s: &str) -> UploadName {
        UploadName::Name(s.to_owned())
    }

    #[test]
    fn upload_names_from_every_form_of_the_header() {
        assert_eq!(upload_name(&HeaderMap::new()), UploadName::None);
        assert_eq!(disposition(b"form-data; name=\"body\""), UploadName::None);
        assert_eq!(
            disposition(b"form-data; name=\"attachments\"; filename=\"tax 2025.pdf\""),
            named("tax 2025.pdf")
        );
        assert_eq!(
            disposition(b"form-data; name=\"attachments\"; filename=\"\""),
            named("")
        );
        // RFC 5987 alone, and preferred over the plain fallback either way round.
        assert_eq!(
            disposition(b"form-data; name=\"attachments\"; filename*=UTF-8''na%C3%AFve%20plan.pdf"),
            named("naïve plan.pdf")
        );
        assert_eq!(
            disposition(
                b"form-data; name=a; filename*=utf-8'de'M%C3%A4rz.pdf; filename=\"Marz.pdf\""
            ),
            named("März.pdf")
        );
        assert_eq!(
            disposition(
                b"form-data; name=a; filename=\"Marz.pdf\"; FILENAME*=UTF-8''M%C3%A4rz.pdf"
            ),
            named("März.pdf")
        );
        assert_eq!(
            disposition(b"form-data; name=a; filename*=iso-8859-1'en'M%E4rz.pdf"),
            named("März.pdf")
        );
        // A filename* that does not decode falls back, or is unreadable.
        assert_eq!(
            disposition(b"form-data; name=a; filename*=koi8-r''x.pdf; filename=\"x.pdf\""),
            named("x.pdf")
        );
        for bad in [
            &b"form-data; name=a; filename*=UTF-8''%ZZ.pdf"[..],
            b"form-data; name=a; filename*=UTF-8''%C3.pdf",
            b"form-data; name=a; filename*=no-quotes.pdf",
            b"form-data; name=a; filename*=UTF-8''%E",
        ] {
            assert_eq!(disposition(bad), UploadName::Unreadable, "{bad:?}");
        }
        // Not UTF-8: read as ISO-8859-1, never dropped.
        assert_eq!(
            disposition(b"form-data; name=a; filename=\"r\xe9sum\xe9.pdf\""),
            named("résumé.pdf")
        );
        // Browser and reqwest escapes; unquoted values; odd spacing.
        assert_eq!(
            disposition(b"form-data; name=a; filename=\"Zeugnis %22M\xc3\xbcller%22.pdf\""),
            named("Zeugnis \"Müller\".pdf")
        );
        assert_eq!(
            disposition(b"form-data; name=a; filename=\"a \\\"b\\\" c\\\\d.txt\""),
            named("a \"b\" c\\d.txt")
        );
        assert_eq!(
            disposition(b"form-data; name=a; filename=\"C:\\Users\\x\\tax.pdf\""),
            named("C:\\Users\\x\\tax.pdf")
        );
        assert_eq!(
            disposition(b"form-data;name=a;filename = plain.txt ;x=1"),
            named("plain.txt")
        );
        assert_eq!(
            disposition(b"form-data; name=a; filename=\"semi;colon.txt\"; name2=\"b\""),
            named("semi;colon.txt")
        );
        assert_eq!(
            disposition(b"form-data; name=a; filename=\"unterminated"),
            named("unterminated")
        );
        assert_eq!(disposition(b"form-data; ;;; filename"), UploadName::None);
    }
}
