//! A real ClamAV daemon for the malware-scan tests: `clamd` (Debian package
//! `clamav-daemon`) in the foreground, with a config of its own in a temp
//! dir: a TCP socket on a free loopback port, a Unix socket in the temp dir,
//! and a one-signature database that detects the EICAR test string, so no
//! signature download (freshclam) is needed. Killed on drop.
//!
//! clamd runs as the user running the tests: the config sets no `User`, so
//! a root test run does not drop to `clamav`, which could not read the
//! private temp dir.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The signature's name in the test database.
pub const SIGNATURE: &str = "Sealpost.Test.EICAR";
/// What clamd reports for it: a signature from a database that is not
/// ClamAV's own gets `.UNOFFICIAL` appended.
pub const DETECTED_AS: &str = "Sealpost.Test.EICAR.UNOFFICIAL";

/// How long clamd may take to answer PING after it is started.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The EICAR anti-virus test string (68 bytes). Built from two halves so
/// that neither this source nor the test binary holds it whole, which would
/// make scanners on developers' machines flag them.
pub fn eicar() -> Vec<u8> {
    let mut bytes = br"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR".to_vec();
    bytes.extend_from_slice(b"-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*");
    bytes
}

/// Settings for [`Clamd`].
pub struct ClamdBuilder {
    stream_max_length: u64,
}

impl ClamdBuilder {
    /// clamd's `StreamMaxLength`: a longer `INSTREAM` is refused
    /// (default 25 MiB, as in Debian's clamd.conf).
    pub fn stream_max_length(mut self, bytes: u64) -> ClamdBuilder {
        self.stream_max_length = bytes;
        self
    }

    pub fn start(self) -> Clamd {
        let dir = tempfile::Builder::new()
            .prefix("clamd")
            .tempdir()
            .expect("temp dir for clamd");
        let socket = dir.path().join("clamd.sock");
        assert!(
            socket.as_os_str().len() < 100,
            "the Unix socket path {} is too long for sun_path (108 bytes); set TMPDIR shorter",
            socket.display()
        );
        for sub in ["db", "tmp"] {
            std::fs::create_dir(dir.path().join(sub)).expect("clamd dirs");
        }
        let hex = eicar().iter().fold(String::new(), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        });
        // .ndb: Name:TargetType:Offset:HexSignature; type 0 = any file,
        // offset * = anywhere, so it matches inside a larger stream too.
        std::fs::write(
            dir.path().join("db/sealpost-test.ndb"),
            format!("{SIGNATURE}:0:*:{hex}\n"),
        )
        .expect("signature file");

        let binary = clamd_binary();
        let mut clamd = Clamd {
            child: None,
            dir,
            port: 0,
            started_in: Duration::ZERO,
        };
        // Another process may take the port between choosing and binding.
        for _ in 0..3 {
            clamd.port = free_port();
            clamd.write_config(self.stream_max_length);
            if clamd.launch(&binary) {
                return clamd;
            }
        }
        panic!("clamd did not start (3 tries); {}", clamd.logs());
    }
}

/// A running `clamd` of this test's own.
pub struct Clamd {
    child: Option<Child>,
    dir: tempfile::TempDir,
    port: u16,
    started_in: Duration,
}

impl Clamd {
    pub fn builder() -> ClamdBuilder {
        ClamdBuilder {
            stream_max_length: 25 << 20,
        }
    }

    /// A daemon with the default settings, answering PING.
    pub fn start() -> Clamd {
        Clamd::builder().start()
    }

    pub fn tcp_url(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.port)
    }

    pub fn unix_url(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    /// From spawning clamd to its first PONG.
    pub fn startup_time(&self) -> Duration {
        self.started_in
    }

    /// clamd's log file so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("clamd.log")).unwrap_or_default()
    }

    /// Whether clamd's log shows `needle` within 5 s: clamd writes a
    /// scan's log line after it has answered.
    pub fn log_shows(&self, needle: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if self.log().contains(needle) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills clamd and waits for it; scans then find nothing listening.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("clamd.sock")
    }

    fn write_config(&self, stream_max_length: u64) {
        let d = self.dir.path().display();
        // MaxFileSize/MaxScanSize at least StreamMaxLength, and
        // AlertExceedsMax: otherwise clamd answers "stream: OK" for a
        // stream it skipped for its size.
        let max_file = stream_max_length.max(100 << 20);
        let config = format!(
            "Foreground yes\n\
             LogFile {d}/clamd.log\n\
             LogTime yes\n\
             LogVerbose yes\n\
             DatabaseDirectory {d}/db\n\
             TemporaryDirectory {d}/tmp\n\
             LocalSocket {d}/clamd.sock\n\
             LocalSocketMode 600\n\
             TCPSocket {port}\n\
             TCPAddr 127.0.0.1\n\
             StreamMaxLength {stream_max_length}\n\
             MaxFileSize {max_file}\n\
             MaxScanSize {max_file}\n\
             AlertExceedsMax yes\n\
             MaxThreads 4\n\
             Bytecode no\n\
             ConcurrentDatabaseReload no\n",
            port = self.port,
        );
        std::fs::write(self.dir.path().join("clamd.conf"), config).expect("clamd.conf");
    }

    /// Starts clamd; true once it answers PING on both sockets, false if it
    /// exited (e.g. its port was taken).
    fn launch(&mut self, binary: &Path) -> bool {
        let out = std::fs::File::create(self.dir.path().join("clamd.out")).expect("clamd.out");
        let _ = std::fs::remove_file(self.socket());
        let started = Instant::now();
        let child = Command::new(binary)
            .arg(format!(
                "--config-file={}",
                self.dir.path().join("clamd.conf").display()
            ))
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("clamd.out"))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", binary.display()));
        self.child = Some(child);
        while started.elapsed() < START_TIMEOUT {
            if let Some(child) = &mut self.child
                && child.try_wait().expect("clamd status").is_some()
            {
                self.child = None;
                return false;
            }
            if ping_unix(&self.socket()) && ping_tcp(self.port) {
                self.started_in = started.elapsed();
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.stop();
        panic!(
            "clamd did not answer PING within {START_TIMEOUT:?}; {}",
            self.logs()
        );
    }

    fn logs(&self) -> String {
        let out = std::fs::read_to_string(self.dir.path().join("clamd.out")).unwrap_or_default();
        format!("its output:\n{out}\nits log:\n{}", self.log())
    }
}

impl Drop for Clamd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `clamd` from PATH, else where Debian puts it (/usr/sbin is not on a
/// normal user's PATH).
fn clamd_binary() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("clamd"))
        .chain([
            PathBuf::from("/usr/sbin/clamd"),
            PathBuf::from("/usr/local/sbin/clamd"),
        ])
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "clamd is required for the malware-scan tests and is not installed: \
                 apt-get install -y clamav-daemon (.ci/run does)"
            )
        })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

fn ping(mut conn: impl Read + Write) -> bool {
    let mut reply = [0u8; 5];
    conn.write_all(b"zPING\0").is_ok() && conn.read_exact(&mut reply).is_ok() && &reply == b"PONG\0"
}

fn ping_unix(socket: &Path) -> bool {
    UnixStream::connect(socket)
        .is_ok_and(|s| s.set_read_timeout(Some(Duration::from_secs(2))).is_ok() && ping(s))
}

fn ping_tcp(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port))
        .is_ok_and(|s| s.set_read_timeout(Some(Duration::from_secs(2))).is_ok() && ping(s))
}
