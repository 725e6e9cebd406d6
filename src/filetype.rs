//! What an uploaded file is, judged by its content (magic bytes), never by
//! its name or the type the browser declared: a program renamed
//! `statement.pdf` is still a program, and is refused.

/// The kinds of file Sealpost can accept from customers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FileKind {
    Pdf,
    Jpeg,
    Png,
    Heic,
    /// Word (`.docx`) and OpenDocument text (`.odt`).
    Document,
    /// Excel (`.xlsx`) and OpenDocument spreadsheets (`.ods`).
    Spreadsheet,
    /// PowerPoint (`.pptx`) and OpenDocument presentations (`.odp`).
    Presentation,
    /// UTF-8 text without control characters.
    Text,
}

/// How much of a file's start [`sniff`] reads: office documents name their
/// parts in the first few ZIP entries, some with large extra fields.
pub const HEAD_BYTES: usize = 16 * 1024;

impl FileKind {
    pub const ALL: [FileKind; 8] = [
        FileKind::Pdf,
        FileKind::Jpeg,
        FileKind::Png,
        FileKind::Heic,
        FileKind::Document,
        FileKind::Spreadsheet,
        FileKind::Presentation,
        FileKind::Text,
    ];

    /// The stable name settings store.
    pub fn as_str(self) -> &'static str {
        match self {
            FileKind::Pdf => "pdf",
            FileKind::Jpeg => "jpeg",
            FileKind::Png => "png",
            FileKind::Heic => "heic",
            FileKind::Document => "document",
            FileKind::Spreadsheet => "spreadsheet",
            FileKind::Presentation => "presentation",
            FileKind::Text => "text",
        }
    }

    pub fn parse(s: &str) -> Option<FileKind> {
        FileKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The type a download of it is served as. Office formats of one kind
    /// have several types; those are served as bytes (downloads are always
    /// attachments, so only the file name matters to the browser).
    pub fn mime(self) -> &'static str {
        match self {
            FileKind::Pdf => "application/pdf",
            FileKind::Jpeg => "image/jpeg",
            FileKind::Png => "image/png",
            FileKind::Heic => "image/heic",
            FileKind::Text => "text/plain",
            FileKind::Document | FileKind::Spreadsheet | FileKind::Presentation => {
                "application/octet-stream"
            }
        }
    }

    /// A file input's `accept` hint for it (the server checks content
    /// anyway).
    pub fn accept(self) -> &'static str {
        match self {
            FileKind::Pdf => ".pdf,application/pdf",
            FileKind::Jpeg => ".jpg,.jpeg,image/jpeg",
            FileKind::Png => ".png,image/png",
            FileKind::Heic => ".heic,.heif,image/heic,image/heif",
            FileKind::Document => ".docx,.odt",
            FileKind::Spreadsheet => ".xlsx,.ods",
            FileKind::Presentation => ".pptx,.odp",
            FileKind::Text => ".txt,text/plain",
        }
    }

    /// The `accept` hint of a file input taking any of `kinds`.
    pub fn accept_all(kinds: &[FileKind]) -> String {
        let hints: Vec<&str> = kinds.iter().map(|k| k.accept()).collect();
        hints.join(",")
    }

    /// What people call `kinds`, for pages: "PDF, JPEG image, …".
    pub fn labels(kinds: &[FileKind]) -> String {
        let labels: Vec<&str> = kinds.iter().map(|k| k.label()).collect();
        labels.join(", ")
    }

    /// What people call it, for pages and refusals.
    pub fn label(self) -> &'static str {
        match self {
            FileKind::Pdf => "PDF",
            FileKind::Jpeg => "JPEG image",
            FileKind::Png => "PNG image",
            FileKind::Heic => "HEIC photo",
            FileKind::Document => "Word or OpenDocument text",
            FileKind::Spreadsheet => "Excel or OpenDocument spreadsheet",
            FileKind::Presentation => "PowerPoint or OpenDocument presentation",
            FileKind::Text => "plain text",
        }
    }
}

/// One of `infer`'s content checks.
type Matcher = fn(&[u8]) -> bool;

/// The kind of file that starts with `head` (its first [`HEAD_BYTES`], or
/// all of a smaller file), if it is one Sealpost knows. `None` for
/// anything else: programs, scripts, archives, unknown formats, empty
/// files.
pub fn sniff(head: &[u8]) -> Option<FileKind> {
    let checks: [(Matcher, FileKind); 10] = [
        (infer::archive::is_pdf, FileKind::Pdf),
        (infer::image::is_jpeg, FileKind::Jpeg),
        (infer::image::is_png, FileKind::Png),
        (infer::image::is_heif, FileKind::Heic),
        (infer::doc::is_docx, FileKind::Document),
        (infer::odf::is_odt, FileKind::Document),
        (infer::doc::is_xlsx, FileKind::Spreadsheet),
        (infer::odf::is_ods, FileKind::Spreadsheet),
        (infer::doc::is_pptx, FileKind::Presentation),
        (infer::odf::is_odp, FileKind::Presentation),
    ];
    if let Some((_, kind)) = checks.iter().find(|(is, _)| is(head)) {
        return Some(*kind);
    }
    is_text(head).then_some(FileKind::Text)
}

/// UTF-8 (a character cut at the end of the head is fine) with no control
/// characters but tab, line feed, carriage return and form feed, and not
/// a format `infer` knows (a text-looking head of another format).
fn is_text(head: &[u8]) -> bool {
    if head.is_empty() || infer::get(head).is_some() {
        return false;
    }
    let valid = match std::str::from_utf8(head) {
        Ok(s) => s,
        // Only an incomplete last character (at most 3 bytes) is allowed.
        Err(e) if e.error_len().is_none() && head.len() - e.valid_up_to() < 4 => {
            std::str::from_utf8(&head[..e.valid_up_to()]).unwrap_or_default()
        }
        Err(_) => return false,
    };
    valid
        .chars()
        .all(|c| !c.is_control() || matches!(c, '\t' | '\n' | '\r' | '\u{c}'))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ZIP local file header naming `first` as the archive's first entry.
    fn zip_starting_with(first: &str, rest: &[u8]) -> Vec<u8> {
        let mut z = b"PK\x03\x04".to_vec();
        z.extend_from_slice(&[20, 0, 0, 0, 8, 0]); // version, flags, method
        z.extend_from_slice(&[0; 4]); // time, date
        z.extend_from_slice(&[0; 12]); // crc, sizes
        z.extend_from_slice(&u16::try_from(first.len()).unwrap().to_le_bytes());
        z.extend_from_slice(&[0, 0]); // extra length
        z.extend_from_slice(first.as_bytes());
        z.extend_from_slice(rest);
        z
    }

    #[test]
    fn known_formats_by_their_first_bytes() {
        assert_eq!(
            sniff(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj"),
            Some(FileKind::Pdf)
        );
        assert_eq!(
            sniff(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00"),
            Some(FileKind::Jpeg)
        );
        assert_eq!(
            sniff(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"),
            Some(FileKind::Png)
        );
        let heic = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic";
        assert_eq!(sniff(heic), Some(FileKind::Heic));
        let docx = zip_starting_with("word/document.xml", b"<w:document/>");
        assert_eq!(sniff(&docx), Some(FileKind::Document));
        let xlsx = zip_starting_with("xl/workbook.xml", b"<workbook/>");
        assert_eq!(sniff(&xlsx), Some(FileKind::Spreadsheet));
        let pptx = zip_starting_with("ppt/presentation.xml", b"<p/>");
        assert_eq!(sniff(&pptx), Some(FileKind::Presentation));
        let odt = zip_starting_with("mimetype", b"application/vnd.oasis.opendocument.text");
        assert_eq!(sniff(&odt), Some(FileKind::Document));
        assert_eq!(
            sniff("Kontoauszug März\r\n\tSaldo: 12,00 €\n".as_bytes()),
            Some(FileKind::Text)
        );
    }

    #[test]
    fn programs_archives_and_binary_junk_are_not_accepted_whatever_their_name() {
        // A Windows program (what an `.exe` renamed `.pdf` starts with).
        assert_eq!(
            sniff(b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff"),
            None
        );
        // An ELF program, a plain ZIP, a shell script's binary cousin.
        assert_eq!(sniff(b"\x7fELF\x02\x01\x01\x00"), None);
        assert_eq!(sniff(&zip_starting_with("payload.exe", b"MZ")), None);
        assert_eq!(sniff(b"plain words\x00\x01\x02 then binary"), None);
        assert_eq!(sniff(b""), None);
        // Text that is not UTF-8 (Latin-1 bytes).
        assert_eq!(sniff(b"Stra\xdfe 5, M\xfcnchen"), None);
    }

    #[test]
    fn a_character_cut_at_the_end_of_the_head_is_still_text() {
        let text = "€".repeat(10);
        let cut = &text.as_bytes()[..text.len() - 1];
        assert_eq!(sniff(cut), Some(FileKind::Text));
    }

    #[test]
    fn names_round_trip() {
        for kind in FileKind::ALL {
            assert_eq!(FileKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(FileKind::parse("exe"), None);
    }
}
