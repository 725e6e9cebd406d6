//! A minimal SMTP sink for bench/pickup.sh: accepts every email and counts
//! it, one thread per connection (the `mailin` protocol state machine, as in
//! the test suite's SMTP server). A Python sink topped out below the rate
//! Sealpost sends at, so the bench measured the sink.
//!
//!     cargo run --release --example smtp_sink -- 127.0.0.1:2525

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, TcpListener, TcpStream};

use mailin::{Action, Handler, SessionBuilder};

struct Discard;

impl Handler for Discard {}

fn serve(stream: TcpStream) {
    // Replies are small writes; without this, delayed ACKs stall each one.
    let _ = stream.set_nodelay(true);
    let peer = stream
        .peer_addr()
        .map_or(IpAddr::from([127, 0, 0, 1]), |a| a.ip());
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    let mut session = SessionBuilder::new("sink.local").build(peer, Discard);
    if session.greeting().write_to(&mut writer).is_err() {
        return;
    }
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let response = session.process(&line);
        match response.action {
            Action::Reply => {
                if response.write_to(&mut writer).is_err() || writer.flush().is_err() {
                    return;
                }
            }
            Action::Close | Action::UpgradeTls => {
                let _ = response.write_to(&mut writer);
                return;
            }
            Action::NoReply => {}
        }
    }
}

fn main() {
    let addr = std::env::args().nth(1).expect("usage: smtp_sink HOST:PORT");
    let listener = TcpListener::bind(&addr).expect("bind");
    for stream in listener.incoming().flatten() {
        std::thread::spawn(move || serve(stream));
    }
}
