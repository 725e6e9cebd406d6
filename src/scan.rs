//! A small client for ClamAV's daemon (`clamd`): the optional malware scan
//! of an uploaded file before it is accepted.
//!
//! Why it looks like this:
//!
//! - **Blocking std I/O.** The scan is fed from the blocking thread that
//!   encrypts the same upload: each plaintext chunk is written to the age
//!   encryptor and to a [`ScanStream`], so the file is never held whole in
//!   memory and Sealpost never writes it to disk in the clear. No runtime,
//!   no extra thread, no dependency beyond `std` and `thiserror`.
//! - **clamd's `INSTREAM` command.** `zINSTREAM\0`, then chunks of at most
//!   [`CHUNK_SIZE`] bytes, each framed by a 4-byte big-endian length, then a
//!   zero length; the reply is one NUL-terminated line (`stream: OK`,
//!   `stream: <signature> FOUND`, or `... ERROR`). Replies are read up to
//!   [`MAX_REPLY`] bytes.
//! - **Fail closed.** Only [`Verdict::Clean`] means clean. Every way of not
//!   getting a verdict is a [`ScanError`]: a daemon that cannot be reached
//!   or stops answering within the timeout is [`ScanError::Unreachable`]
//!   ("the scanner is unavailable"), a stream over clamd's
//!   `StreamMaxLength` is [`ScanError::TooLarge`] (clamd answers and closes
//!   mid-upload; the write error is turned into that answer, not left as a
//!   broken pipe).
//! - **No content in errors.** Errors and verdicts carry clamd's status
//!   text and signature names, never bytes of the file.
//!
//! Deployment notes: clamd spools every `INSTREAM` to a temporary file in
//! its `TemporaryDirectory`, so point that at a tmpfs to keep plaintext off
//! disk. clamd answers `stream: OK` for a stream over `MaxFileSize` or
//! `MaxScanSize` without looking at it unless `AlertExceedsMax yes` is set
//! (then it reports `Heuristics.Limits.Exceeded.*` as found); keep
//! `StreamMaxLength` at or below both.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
#[cfg(unix)]
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

/// The largest chunk sent in one `INSTREAM` frame.
pub const CHUNK_SIZE: usize = 64 * 1024;

/// The longest reply read from clamd; a longer one is a protocol error.
pub const MAX_REPLY: usize = 4096;

/// Connect, read and write timeout unless [`Scanner::with_timeout`] says
/// otherwise. The read timeout also bounds the scan itself (clamd answers
/// only once it has scanned the whole stream).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Length of the frame header: a big-endian `u32`.
const HEADER: usize = 4;

/// What clamd answers when a stream passes its `StreamMaxLength`.
const SIZE_LIMIT_REPLY: &str = "INSTREAM size limit exceeded.";

/// Where clamd listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScannerAddr {
    /// `host:port` (an IPv6 host in brackets), as given in `tcp://host:port`.
    Tcp(String),
    /// An absolute socket path, as given in `unix:///abs/path`.
    Unix(PathBuf),
}

impl ScannerAddr {
    /// Parses `tcp://host:port` or `unix:///absolute/path`.
    pub fn parse(s: &str) -> Result<ScannerAddr, ScanError> {
        let invalid = |why: &str| {
            ScanError::InvalidAddress(format!(
                "{s:?}: {why} (expected tcp://host:port or unix:///absolute/path)"
            ))
        };
        if let Some(rest) = s.strip_prefix("tcp://") {
            if rest.contains(['/', '?', '#', '@']) || rest.chars().any(char::is_whitespace) {
                return Err(invalid("a TCP address is only host:port"));
            }
            let Some((host, port)) = rest.rsplit_once(':') else {
                return Err(invalid("missing :port"));
            };
            if host.is_empty() {
                return Err(invalid("missing host"));
            }
            if host.contains(['[', ']', ':']) {
                let ipv6 = host
                    .strip_prefix('[')
                    .and_then(|h| h.strip_suffix(']'))
                    .is_some_and(|h| h.parse::<std::net::Ipv6Addr>().is_ok());
                if !ipv6 {
                    return Err(invalid(
                        "an IPv6 host needs brackets, e.g. tcp://[::1]:3310",
                    ));
                }
            }
            match port.parse::<u16>() {
                Ok(p) if p != 0 && !port.starts_with('+') => Ok(ScannerAddr::Tcp(rest.to_owned())),
                _ => Err(invalid("the port must be a number from 1 to 65535")),
            }
        } else if let Some(path) = s.strip_prefix("unix://") {
            if !path.starts_with('/') || path.len() < 2 {
                return Err(invalid(
                    "a socket path must be absolute, e.g. unix:///run/clamav/clamd.ctl",
                ));
            }
            Ok(ScannerAddr::Unix(PathBuf::from(path)))
        } else {
            Err(invalid("unknown scheme"))
        }
    }
}

impl fmt::Display for ScannerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScannerAddr::Tcp(host_port) => write!(f, "tcp://{host_port}"),
            ScannerAddr::Unix(path) => write!(f, "unix://{}", path.display()),
        }
    }
}

/// The result of a scan that completed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// clamd found nothing.
    Clean,
    /// clamd found this signature (e.g. `Eicar-Signature`, or
    /// `Name.UNOFFICIAL` for a signature from a local database).
    Infected(String),
}

/// Why a scan gave no verdict. None of these carries file content.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// The configured address is not `tcp://host:port` or
    /// `unix:///absolute/path`.
    #[error("invalid scanner address {0}")]
    InvalidAddress(String),
    /// clamd could not be reached, closed the connection without an
    /// answer, or did not answer within the timeout. Fail closed: "the
    /// scanner is unavailable".
    #[error("the scanner is unavailable")]
    Unreachable(#[source] io::Error),
    /// clamd (or whatever listens there) answered something this client
    /// does not understand.
    #[error("unexpected answer from the scanner: {0}")]
    Protocol(String),
    /// clamd reported an error of its own (its reply line, e.g.
    /// `stream: Can't allocate memory ERROR`).
    #[error("the scanner failed: {0}")]
    Scanner(String),
    /// The stream was longer than clamd's `StreamMaxLength`.
    #[error("the file is larger than the scanner accepts")]
    TooLarge,
}

impl ScanError {
    /// An equivalent error, for handing one failure out twice (from a
    /// `write` and again from `finish`).
    fn replicate(&self) -> ScanError {
        match self {
            ScanError::InvalidAddress(s) => ScanError::InvalidAddress(s.clone()),
            ScanError::Unreachable(e) => {
                ScanError::Unreachable(io::Error::new(e.kind(), e.to_string()))
            }
            ScanError::Protocol(s) => ScanError::Protocol(s.clone()),
            ScanError::Scanner(s) => ScanError::Scanner(s.clone()),
            ScanError::TooLarge => ScanError::TooLarge,
        }
    }

    /// As an `io::Error` for the `Write` impl; `io::Error::downcast` gives
    /// the `ScanError` back.
    fn into_io(self) -> io::Error {
        let kind = match &self {
            ScanError::Unreachable(e) => e.kind(),
            ScanError::TooLarge => io::ErrorKind::FileTooLarge,
            _ => io::ErrorKind::Other,
        };
        io::Error::new(kind, self)
    }
}

/// A clamd to scan with: an address and a timeout.
#[derive(Clone, Debug)]
pub struct Scanner {
    addr: ScannerAddr,
    timeout: Duration,
}

impl Scanner {
    /// A scanner at `addr` with [`DEFAULT_TIMEOUT`].
    pub fn new(addr: ScannerAddr) -> Scanner {
        Scanner {
            addr,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Parses `tcp://host:port` or `unix:///absolute/path`.
    pub fn parse(s: &str) -> Result<Scanner, ScanError> {
        ScannerAddr::parse(s).map(Scanner::new)
    }

    /// Sets the connect, read and write timeout (at least 1 ms). The read
    /// timeout must cover the longest scan clamd may take.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Scanner {
        self.timeout = timeout.max(Duration::from_millis(1));
        self
    }

    pub fn addr(&self) -> &ScannerAddr {
        &self.addr
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Checks that clamd answers (`zPING` → `PONG`).
    pub fn ping(&self) -> Result<(), ScanError> {
        let mut conn = self.connect()?;
        conn.write_all(b"zPING\0").map_err(ScanError::Unreachable)?;
        match read_reply(&mut conn)?.as_str() {
            "PONG" => Ok(()),
            other => Err(ScanError::Protocol(format!(
                "expected PONG, got a {}-byte reply",
                other.len()
            ))),
        }
    }

    /// Opens a scan: connects and sends `zINSTREAM`. Write the file to the
    /// returned stream, then call [`ScanStream::finish`].
    pub fn start(&self) -> Result<ScanStream, ScanError> {
        let mut conn = self.connect()?;
        conn.write_all(b"zINSTREAM\0")
            .map_err(ScanError::Unreachable)?;
        let mut frame = Vec::with_capacity(HEADER + CHUNK_SIZE);
        frame.extend_from_slice(&[0; HEADER]);
        Ok(ScanStream {
            conn,
            frame,
            failed: None,
        })
    }

    /// Scans bytes already in memory.
    pub fn scan_bytes(&self, bytes: &[u8]) -> Result<Verdict, ScanError> {
        let mut stream = self.start()?;
        if let Err(e) = stream.write_all(bytes) {
            return Err(e
                .downcast::<ScanError>()
                .unwrap_or_else(ScanError::Unreachable));
        }
        stream.finish()
    }

    fn connect(&self) -> Result<Conn, ScanError> {
        match &self.addr {
            ScannerAddr::Tcp(host_port) => {
                let addrs = host_port
                    .to_socket_addrs()
                    .map_err(ScanError::Unreachable)?;
                let mut last = None;
                for addr in addrs {
                    match TcpStream::connect_timeout(&addr, self.timeout) {
                        Ok(stream) => {
                            stream
                                .set_read_timeout(Some(self.timeout))
                                .map_err(ScanError::Unreachable)?;
                            stream
                                .set_write_timeout(Some(self.timeout))
                                .map_err(ScanError::Unreachable)?;
                            stream.set_nodelay(true).map_err(ScanError::Unreachable)?;
                            return Ok(Conn::Tcp(stream));
                        }
                        Err(e) => last = Some(e),
                    }
                }
                Err(ScanError::Unreachable(last.unwrap_or_else(|| {
                    io::Error::new(io::ErrorKind::NotFound, "the host has no address")
                })))
            }
            #[cfg(unix)]
            ScannerAddr::Unix(path) => {
                let stream = UnixStream::connect(path).map_err(ScanError::Unreachable)?;
                stream
                    .set_read_timeout(Some(self.timeout))
                    .map_err(ScanError::Unreachable)?;
                stream
                    .set_write_timeout(Some(self.timeout))
                    .map_err(ScanError::Unreachable)?;
                Ok(Conn::Unix(stream))
            }
            #[cfg(not(unix))]
            ScannerAddr::Unix(_) => Err(ScanError::Unreachable(io::Error::new(
                io::ErrorKind::Unsupported,
                "Unix sockets are not supported on this platform",
            ))),
        }
    }
}

/// One file being streamed to clamd. Write the bytes (any write sizes; they
/// are sent in frames of up to [`CHUNK_SIZE`]), then call
/// [`finish`](ScanStream::finish): dropping the stream abandons the scan.
///
/// A failed write returns an `io::Error` wrapping the [`ScanError`]
/// (`io::Error::downcast::<ScanError>()`), e.g. [`ScanError::TooLarge`] when
/// clamd stopped reading at its `StreamMaxLength`; every later write fails
/// the same way and `finish` returns that `ScanError`.
#[must_use = "call finish() to get the verdict; dropping the stream abandons the scan"]
pub struct ScanStream {
    conn: Conn,
    /// A frame being filled: the header's room, then up to `CHUNK_SIZE`
    /// bytes of payload.
    frame: Vec<u8>,
    failed: Option<ScanError>,
}

impl fmt::Debug for ScanStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScanStream")
            .field("buffered", &(self.frame.len() - HEADER))
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

impl ScanStream {
    /// Ends the stream and waits for clamd's verdict.
    pub fn finish(mut self) -> Result<Verdict, ScanError> {
        if let Some(failed) = self.failed.take() {
            return Err(failed);
        }
        self.send_frame()?;
        if let Err(e) = self.conn.write_all(&[0; HEADER]) {
            return Err(self.explain(e));
        }
        parse_reply(&read_reply(&mut self.conn)?)
    }

    /// Sends the buffered payload, if any, as one frame.
    fn send_frame(&mut self) -> Result<(), ScanError> {
        let len = self.frame.len() - HEADER;
        if len == 0 {
            return Ok(());
        }
        // At most CHUNK_SIZE (64 KiB): the cast cannot truncate.
        self.frame[..HEADER].copy_from_slice(&(len as u32).to_be_bytes());
        if let Err(e) = self.conn.write_all(&self.frame) {
            return Err(self.explain(e));
        }
        self.frame.truncate(HEADER);
        Ok(())
    }

    /// Turns a failed write into clamd's reason when clamd gave one: it
    /// answers and closes when the stream passes `StreamMaxLength`, which
    /// shows here as a broken pipe or a reset.
    fn explain(&mut self, e: io::Error) -> ScanError {
        if matches!(
            e.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ) {
            // clamd stopped reading: waiting for a reply would only double
            // the time the caller is kept waiting.
            return ScanError::Unreachable(e);
        }
        match read_reply(&mut self.conn) {
            Ok(reply) => match parse_reply(&reply) {
                Err(reason) => reason,
                Ok(_) => ScanError::Protocol("a verdict before the end of the stream".to_owned()),
            },
            Err(_) => ScanError::Unreachable(e),
        }
    }

    /// Keeps a failure for `finish` and returns it as an `io::Error`.
    fn fail(&mut self, e: ScanError) -> io::Error {
        let io = e.replicate().into_io();
        self.failed = Some(e);
        io
    }
}

impl Write for ScanStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(failed) = &self.failed {
            return Err(failed.replicate().into_io());
        }
        if buf.is_empty() {
            return Ok(0);
        }
        if self.frame.len() == HEADER + CHUNK_SIZE {
            self.send_frame().map_err(|e| self.fail(e))?;
        }
        let n = buf.len().min(HEADER + CHUNK_SIZE - self.frame.len());
        self.frame.extend_from_slice(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        if let Some(failed) = &self.failed {
            return Err(failed.replicate().into_io());
        }
        self.send_frame().map_err(|e| self.fail(e))?;
        self.conn.flush()
    }
}

enum Conn {
    Tcp(TcpStream),
    #[cfg(unix)]
    Unix(UnixStream),
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Tcp(s) => s.read(buf),
            #[cfg(unix)]
            Conn::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Tcp(s) => s.write(buf),
            #[cfg(unix)]
            Conn::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Conn::Tcp(s) => s.flush(),
            #[cfg(unix)]
            Conn::Unix(s) => s.flush(),
        }
    }
}

/// Reads one reply: up to its NUL (or the end of the connection), at most
/// `MAX_REPLY` bytes.
fn read_reply(conn: &mut impl Read) -> Result<String, ScanError> {
    let mut reply = Vec::new();
    let mut buf = [0u8; 512];
    loop {
        let n = match conn.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(ScanError::Unreachable(e)),
        };
        if n == 0 {
            if reply.is_empty() {
                return Err(ScanError::Unreachable(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the scanner closed the connection without an answer",
                )));
            }
            break;
        }
        reply.extend_from_slice(&buf[..n]);
        if let Some(end) = reply.iter().position(|&b| b == 0) {
            reply.truncate(end);
            break;
        }
        if reply.len() > MAX_REPLY {
            return Err(ScanError::Protocol(format!(
                "an answer longer than {MAX_REPLY} bytes"
            )));
        }
    }
    if reply.len() > MAX_REPLY {
        return Err(ScanError::Protocol(format!(
            "an answer longer than {MAX_REPLY} bytes"
        )));
    }
    Ok(String::from_utf8_lossy(&reply).trim().to_owned())
}

/// Reads clamd's answer to `INSTREAM` (without its NUL).
fn parse_reply(reply: &str) -> Result<Verdict, ScanError> {
    let reply = reply.trim();
    if reply.starts_with(SIZE_LIMIT_REPLY) {
        return Err(ScanError::TooLarge);
    }
    if let Some(rest) = reply.strip_prefix("stream: ") {
        if rest == "OK" {
            return Ok(Verdict::Clean);
        }
        if let Some(name) = rest.strip_suffix(" FOUND") {
            let name = name.trim();
            if name.is_empty() || name.chars().any(char::is_control) {
                return Err(ScanError::Protocol(
                    "a detection without a signature name".to_owned(),
                ));
            }
            return Ok(Verdict::Infected(name.to_owned()));
        }
    }
    if reply.ends_with(" ERROR") && !reply.chars().any(char::is_control) {
        return Err(ScanError::Scanner(reply.to_owned()));
    }
    if reply == "UNKNOWN COMMAND" {
        return Err(ScanError::Protocol(
            "the scanner does not know INSTREAM (clamd 0.95 or later needed)".to_owned(),
        ));
    }
    if reply == "COMMAND READ TIMED OUT" {
        return Err(ScanError::Scanner(reply.to_owned()));
    }
    // Whatever answered is not clamd: do not echo it, it may be our bytes.
    Err(ScanError::Protocol(format!(
        "a {}-byte answer that is not clamd's",
        reply.len()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::thread;
    use std::time::Instant;

    #[test]
    fn parses_tcp_and_unix_addresses() {
        let tcp = |s: &str| ScannerAddr::Tcp(s.to_owned());
        assert_eq!(
            ScannerAddr::parse("tcp://127.0.0.1:3310").unwrap(),
            tcp("127.0.0.1:3310")
        );
        assert_eq!(
            ScannerAddr::parse("tcp://clamav:3310").unwrap(),
            tcp("clamav:3310")
        );
        assert_eq!(
            ScannerAddr::parse("tcp://[::1]:3310").unwrap(),
            tcp("[::1]:3310")
        );
        assert_eq!(
            ScannerAddr::parse("unix:///run/clamav/clamd.ctl").unwrap(),
            ScannerAddr::Unix(PathBuf::from("/run/clamav/clamd.ctl"))
        );
        let s = Scanner::parse("unix:///run/clamav/clamd.ctl").unwrap();
        assert_eq!(s.timeout(), DEFAULT_TIMEOUT);
        assert_eq!(s.addr().to_string(), "unix:///run/clamav/clamd.ctl");
        assert_eq!(
            Scanner::parse("tcp://[::1]:3310")
                .unwrap()
                .addr()
                .to_string(),
            "tcp://[::1]:3310"
        );
        let t = Duration::from_millis(250);
        assert_eq!(s.clone().with_timeout(t).timeout(), t);
        assert_eq!(
            s.with_timeout(Duration::ZERO).timeout(),
            Duration::from_millis(1)
        );
    }

    #[test]
    fn rejects_other_addresses_with_a_clear_message() {
        for (input, why) in [
            ("", "unknown scheme"),
            ("127.0.0.1:3310", "unknown scheme"),
            ("http://127.0.0.1:3310", "unknown scheme"),
            ("TCP://127.0.0.1:3310", "unknown scheme"),
            ("tcp://127.0.0.1", "missing :port"),
            ("tcp://:3310", "missing host"),
            ("tcp://127.0.0.1:0", "port"),
            ("tcp://127.0.0.1:65536", "port"),
            ("tcp://127.0.0.1:+3310", "port"),
            ("tcp://127.0.0.1:33a", "port"),
            ("tcp://127.0.0.1:3310/", "only host:port"),
            ("tcp://user@127.0.0.1:3310", "only host:port"),
            ("tcp://::1:3310", "brackets"),
            ("tcp://[]:3310", "brackets"),
            ("unix://run/clamd.ctl", "absolute"),
            ("unix://", "absolute"),
            ("unix:///", "absolute"),
        ] {
            let err = Scanner::parse(input).unwrap_err();
            let text = err.to_string();
            assert!(
                matches!(err, ScanError::InvalidAddress(_)),
                "{input:?}: {err:?}"
            );
            assert!(text.contains(why), "{input:?}: {text}");
            assert!(
                text.contains("tcp://host:port or unix:///absolute/path"),
                "{text}"
            );
        }
    }

    #[test]
    fn reads_clamd_replies() {
        assert_eq!(parse_reply("stream: OK").unwrap(), Verdict::Clean);
        assert_eq!(
            parse_reply("stream: Win.Test.EICAR_HDB-1 FOUND").unwrap(),
            Verdict::Infected("Win.Test.EICAR_HDB-1".to_owned())
        );
        assert_eq!(
            parse_reply("stream: Sealpost.Test.EICAR.UNOFFICIAL FOUND").unwrap(),
            Verdict::Infected("Sealpost.Test.EICAR.UNOFFICIAL".to_owned())
        );
        assert!(matches!(
            parse_reply("INSTREAM size limit exceeded. ERROR"),
            Err(ScanError::TooLarge)
        ));
        match parse_reply("stream: Can't allocate memory ERROR") {
            Err(ScanError::Scanner(text)) => {
                assert_eq!(text, "stream: Can't allocate memory ERROR")
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse_reply("COMMAND READ TIMED OUT"),
            Err(ScanError::Scanner(_))
        ));
        assert!(matches!(
            parse_reply("UNKNOWN COMMAND"),
            Err(ScanError::Protocol(_))
        ));
        assert!(matches!(
            parse_reply("stream:  FOUND"),
            Err(ScanError::Protocol(_))
        ));
        assert!(matches!(parse_reply(""), Err(ScanError::Protocol(_))));
        // An answer that is not clamd's is never echoed into the error.
        let err = parse_reply("HTTP/1.1 400 secret-file-bytes").unwrap_err();
        assert!(matches!(err, ScanError::Protocol(_)));
        assert!(!format!("{err} {err:?}").contains("secret"), "{err:?}");
    }

    #[test]
    fn reads_a_reply_up_to_its_nul_and_caps_it() {
        let mut r: &[u8] = b"stream: OK\0garbage";
        assert_eq!(read_reply(&mut r).unwrap(), "stream: OK");
        let mut r: &[u8] = b"PONG\n";
        assert_eq!(read_reply(&mut r).unwrap(), "PONG");
        let mut r: &[u8] = b"";
        assert!(matches!(read_reply(&mut r), Err(ScanError::Unreachable(_))));
        let long = vec![b'x'; MAX_REPLY + 1];
        assert!(matches!(
            read_reply(&mut long.as_slice()),
            Err(ScanError::Protocol(_))
        ));
        let endless = io::repeat(b'y');
        assert!(matches!(
            read_reply(&mut endless.take(1 << 30)),
            Err(ScanError::Protocol(_))
        ));
        let mut exact = vec![b'z'; MAX_REPLY];
        exact.push(0);
        assert_eq!(read_reply(&mut exact.as_slice()).unwrap().len(), MAX_REPLY);
    }

    /// A fake clamd on a loopback port: reads the command and frames,
    /// checks them, and answers `reply`.
    fn fake_clamd(reply: &'static [u8]) -> (String, thread::JoinHandle<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("tcp://{}", listener.local_addr().unwrap());
        let handle = thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut command = [0u8; 10];
            conn.read_exact(&mut command).unwrap();
            assert_eq!(&command, b"zINSTREAM\0");
            let mut data = Vec::new();
            loop {
                let mut len = [0u8; 4];
                conn.read_exact(&mut len).unwrap();
                let len = u32::from_be_bytes(len) as usize;
                assert!(len <= CHUNK_SIZE, "frame of {len} bytes");
                if len == 0 {
                    break;
                }
                let start = data.len();
                data.resize(start + len, 0);
                conn.read_exact(&mut data[start..]).unwrap();
            }
            conn.write_all(reply).unwrap();
            data
        });
        (url, handle)
    }

    #[test]
    fn frames_any_write_sizes_into_chunks() {
        let sizes = [
            0,
            1,
            CHUNK_SIZE - 1,
            CHUNK_SIZE,
            CHUNK_SIZE + 1,
            3 * CHUNK_SIZE + 7,
            5,
        ];
        let (url, server) = fake_clamd(b"stream: OK\0");
        let mut stream = Scanner::parse(&url).unwrap().start().unwrap();
        let mut sent = Vec::new();
        for (i, size) in sizes.iter().enumerate() {
            let part: Vec<u8> = (0..*size).map(|b| (b + i) as u8).collect();
            stream.write_all(&part).unwrap();
            if i == 3 {
                stream.flush().unwrap();
            }
            sent.extend_from_slice(&part);
        }
        assert_eq!(stream.finish().unwrap(), Verdict::Clean);
        assert_eq!(server.join().unwrap(), sent);
    }

    #[test]
    fn an_empty_stream_is_just_the_terminator() {
        let (url, server) = fake_clamd(b"stream: Some.Sig FOUND\0");
        let scanner = Scanner::parse(&url).unwrap();
        assert_eq!(
            scanner.scan_bytes(b"").unwrap(),
            Verdict::Infected("Some.Sig".to_owned())
        );
        assert!(server.join().unwrap().is_empty());
    }

    #[test]
    fn an_early_size_limit_answer_becomes_too_large() {
        // Reads the first frame, answers like clamd over its limit, closes.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("tcp://{}", listener.local_addr().unwrap());
        let server = thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut head = vec![0u8; 10 + 4 + CHUNK_SIZE];
            conn.read_exact(&mut head).unwrap();
            conn.write_all(b"INSTREAM size limit exceeded. ERROR\0")
                .unwrap();
        });
        let mut stream = Scanner::parse(&url).unwrap().start().unwrap();
        // Until the closed connection shows: the socket buffers may take
        // megabytes first, more so while the server thread waits for a
        // core on a busy machine.
        let piece = vec![7u8; 16 * CHUNK_SIZE];
        let err = (0..1024)
            .find_map(|_| stream.write_all(&piece).err())
            .expect("the closed connection shows within 1 GiB");
        server.join().unwrap();
        assert_eq!(err.kind(), io::ErrorKind::FileTooLarge, "{err:?}");
        assert!(matches!(
            err.downcast::<ScanError>(),
            Ok(ScanError::TooLarge)
        ));
        assert!(stream.write(b"more").is_err());
        assert!(matches!(stream.finish(), Err(ScanError::TooLarge)));
    }

    #[test]
    fn a_silent_server_is_unreachable_within_the_timeout() {
        // Accepted by the kernel's backlog, never answered.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("tcp://{}", listener.local_addr().unwrap());
        let scanner = Scanner::parse(&url)
            .unwrap()
            .with_timeout(Duration::from_millis(300));
        let started = Instant::now();
        let err = scanner.ping().unwrap_err();
        assert!(matches!(err, ScanError::Unreachable(_)), "{err:?}");
        assert_eq!(err.to_string(), "the scanner is unavailable");
        let err = scanner.scan_bytes(b"hello").unwrap_err();
        assert!(matches!(err, ScanError::Unreachable(_)), "{err:?}");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        drop(listener);
    }

    #[test]
    fn a_closed_port_is_unreachable() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let scanner = Scanner::parse(&format!("tcp://127.0.0.1:{port}")).unwrap();
        assert!(matches!(scanner.ping(), Err(ScanError::Unreachable(_))));
        let scanner = Scanner::parse("unix:///nonexistent/clamd.ctl").unwrap();
        assert!(matches!(scanner.start(), Err(ScanError::Unreachable(_))));
    }
}
