//! The clamd client against a real clamd (see `crate::support::clamd`).

use std::io::Write;
use std::time::{Duration, Instant};

use crate::support::clamd::{Clamd, DETECTED_AS, eicar};
use sealpost::scan::{CHUNK_SIZE, ScanError, Scanner, Verdict};

/// Deterministic, incompressible-looking filler (xorshift), so clamd sees
/// ordinary data and not one long run of zeros.
fn filler(len: usize, mut seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        out.extend_from_slice(&seed.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn scanners(clamd: &Clamd) -> [Scanner; 2] {
    [
        Scanner::parse(&clamd.tcp_url()).unwrap(),
        Scanner::parse(&clamd.unix_url()).unwrap(),
    ]
}

/// Streams `data` in writes of the given sizes (cycled), then finishes.
fn scan_in_pieces(scanner: &Scanner, data: &[u8], sizes: &[usize]) -> Result<Verdict, ScanError> {
    let mut stream = scanner.start()?;
    let mut rest = data;
    for size in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (piece, tail) = rest.split_at((*size).min(rest.len()));
        if let Err(e) = stream.write_all(piece) {
            // The stream keeps the reason and finish() gives it back; check
            // that the io::Error carries the same one.
            let from_write = e.downcast::<ScanError>().expect("a ScanError inside");
            let from_finish = stream.finish().unwrap_err();
            assert_eq!(from_write.to_string(), from_finish.to_string());
            return Err(from_finish);
        }
        rest = tail;
    }
    stream.finish()
}

#[test]
fn starts_and_answers_ping_on_both_sockets() {
    let clamd = Clamd::start();
    eprintln!("clamd answered PING after {:?}", clamd.startup_time());
    for scanner in scanners(&clamd) {
        scanner
            .ping()
            .unwrap_or_else(|e| panic!("{}: {e:?}", scanner.addr()));
    }
    assert!(
        clamd.log().contains("Loaded 1 signature"),
        "{}",
        clamd.log()
    );
}

#[test]
fn clean_bytes_are_clean_over_tcp_and_unix() {
    let clamd = Clamd::start();
    for scanner in scanners(&clamd) {
        let addr = scanner.addr().to_string();
        assert_eq!(
            scanner
                .scan_bytes(b"Dear customer, your contract.\n")
                .unwrap(),
            Verdict::Clean,
            "{addr}"
        );
        assert_eq!(scanner.scan_bytes(b"").unwrap(), Verdict::Clean, "{addr}");
        let data = filler(200_000, 1);
        assert_eq!(
            scan_in_pieces(&scanner, &data, &[1, 4096, CHUNK_SIZE + 3]).unwrap(),
            Verdict::Clean,
            "{addr}"
        );
    }
}

#[test]
fn eicar_is_infected_with_the_signature_name() {
    let clamd = Clamd::start();
    for scanner in scanners(&clamd) {
        assert_eq!(
            scanner.scan_bytes(&eicar()).unwrap(),
            Verdict::Infected(DETECTED_AS.to_owned()),
            "{}",
            scanner.addr()
        );
    }
    assert!(
        clamd.log_shows(&format!("{DETECTED_AS} FOUND")),
        "{}",
        clamd.log()
    );
}

#[test]
fn eicar_inside_a_3_mib_stream_of_many_writes_is_found() {
    let clamd = Clamd::start();
    let len = 3 << 20;
    // Across a frame boundary, in the middle of the stream.
    let at = 24 * CHUNK_SIZE - 30;
    let mut data = filler(len, 7);
    let clean = data.clone();
    data[at..at + eicar().len()].copy_from_slice(&eicar());
    for scanner in scanners(&clamd) {
        let addr = scanner.addr().to_string();
        // Uneven writes: small, prime-sized and larger than a chunk.
        let sizes = [1000, 7919, CHUNK_SIZE * 2 + 1, 17];
        assert_eq!(
            scan_in_pieces(&scanner, &data, &sizes).unwrap(),
            Verdict::Infected(DETECTED_AS.to_owned()),
            "{addr}"
        );
        // The same stream without it is clean: the find is the EICAR bytes.
        assert_eq!(
            scan_in_pieces(&scanner, &clean, &sizes).unwrap(),
            Verdict::Clean,
            "{addr}"
        );
    }
}

#[test]
fn a_stopped_or_absent_daemon_is_unreachable_quickly() {
    let mut clamd = Clamd::start();
    let timeout = Duration::from_secs(2);
    let [tcp, unix] = scanners(&clamd).map(|s| s.with_timeout(timeout));
    tcp.ping().unwrap();
    unix.ping().unwrap();
    clamd.stop();
    for scanner in [tcp, unix] {
        let started = Instant::now();
        for result in [
            scanner.ping(),
            scanner.scan_bytes(b"hello").map(drop),
            scanner.start().map(drop),
        ] {
            let err = result.unwrap_err();
            assert!(
                matches!(err, ScanError::Unreachable(_)),
                "{}: {err:?}",
                scanner.addr()
            );
            assert_eq!(err.to_string(), "the scanner is unavailable");
        }
        assert!(
            started.elapsed() < timeout,
            "{}: {:?}",
            scanner.addr(),
            started.elapsed()
        );
    }
}

#[test]
fn a_stream_over_stream_max_length_is_too_large() {
    let limit = 1 << 20;
    let clamd = Clamd::builder().stream_max_length(limit).start();
    for scanner in scanners(&clamd) {
        let addr = scanner.addr().to_string();
        // At the limit clamd still scans; one byte over, it refuses.
        let mut at_limit = filler(limit as usize, 3);
        assert_eq!(
            scanner.scan_bytes(&at_limit).unwrap(),
            Verdict::Clean,
            "{addr}"
        );
        at_limit.push(b'!');
        assert!(
            matches!(scanner.scan_bytes(&at_limit), Err(ScanError::TooLarge)),
            "{addr}"
        );
        // Far over, in one write and in many: clamd answers and closes while
        // the client is still writing; the result is TooLarge either way.
        let big = filler(3 << 20, 5);
        let err = scanner.scan_bytes(&big).unwrap_err();
        assert!(matches!(err, ScanError::TooLarge), "{addr}: {err:?}");
        assert_eq!(
            err.to_string(),
            "the file is larger than the scanner accepts"
        );
        let err = scan_in_pieces(&scanner, &big, &[CHUNK_SIZE, 1000]).unwrap_err();
        assert!(matches!(err, ScanError::TooLarge), "{addr}: {err:?}");
        // EICAR past the limit is never reported clean.
        let mut late = big.clone();
        late[(2 << 20)..(2 << 20) + eicar().len()].copy_from_slice(&eicar());
        assert!(
            matches!(scanner.scan_bytes(&late), Err(ScanError::TooLarge)),
            "{addr}"
        );
        // And clamd is still serving.
        scanner.ping().unwrap();
    }
    assert!(clamd.log_shows("Size limit reached"), "{}", clamd.log());
}
