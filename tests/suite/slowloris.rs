//! HTTP server timeouts, against the real `sealpost serve` process with the
//! timeouts shortened by configuration: a partial request line, a silent
//! connection and an idle kept-alive one are closed; a download whose
//! client stopped reading is dropped and gives its slot back.

use std::time::Duration;

use sealpost::staff::Role;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::compose::{compose, fresh_link};
use crate::support::env::TestEnv;
use crate::support::files::bytes;
use crate::support::http::{Browser, create_staff};
use crate::support::serve::Serve;

const AGENT: &str = "agent@example.com";
const CODE: &str = "Slow-Code-77";
const TIMEOUTS: &[(&str, &str)] = &[
    ("SEALPOST_HEADER_READ_TIMEOUT_SECS", "1"),
    ("SEALPOST_IDLE_TIMEOUT_SECS", "2"),
];
/// How long a test waits for the server to close a connection before it
/// calls the connection held open: far beyond the configured timeouts, so
/// only a server without them fails.
const GIVE_UP: Duration = Duration::from_secs(30);

/// Reads until the server closes the connection (end of stream or reset);
/// false if it was still open after [`GIVE_UP`].
async fn closed_by_server(socket: &mut TcpStream) -> bool {
    let mut buf = [0u8; 4096];
    let read_all = async {
        loop {
            match socket.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(GIVE_UP, read_all).await.is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_silent_and_idle_connections_are_closed() {
    let env = TestEnv::new().await;
    let serve = Serve::start(&env, TIMEOUTS);
    let addr = serve.addr();

    // 30 connections at once: a third send half a request line, a third
    // headers without the final blank line, a third nothing at all.
    let clients = (0..30).map(|i| {
        let addr = addr.clone();
        async move {
            let mut s = TcpStream::connect(&addr).await.expect("connect");
            match i % 3 {
                0 => s.write_all(b"GET /sign-in HTT").await.unwrap(),
                1 => s
                    .write_all(b"GET /sign-in HTTP/1.1\r\nHost: x\r\nX-Slow: 1\r\n")
                    .await
                    .unwrap(),
                _ => {}
            }
            closed_by_server(&mut s).await
        }
    });
    let closed = futures_util::future::join_all(clients).await;
    assert!(closed.iter().all(|c| *c), "held open: {closed:?}");

    // A kept-alive connection that falls idle after one request is closed too.
    let mut s = TcpStream::connect(&addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut head = [0u8; 12];
    s.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    assert!(closed_by_server(&mut s).await, "idle keep-alive held open");

    // The server still answers normally.
    let mut b = Browser::new(&serve.base);
    assert_eq!(b.get("/healthz").await.status, 200);
    assert_eq!(b.get("/sign-in").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_whose_client_stopped_reading_is_dropped() {
    let env = TestEnv::new().await;
    let app = env.app().await;
    create_staff(&app, AGENT, Role::Agent).await;
    let serve = Serve::start(&env, TIMEOUTS);
    let mut staff = Browser::signed_in(&serve.base, AGENT).await;
    let file = bytes(12 * 1024 * 1024, 31);
    let id = compose(&mut staff, &["access_code"], CODE, "", "keep", &file).await;
    let link = fresh_link(&app, id).await;
    let mut customer = Browser::new(&serve.base);
    assert_eq!(customer.get(&link).await.status, 200);
    let r = customer
        .post(&format!("{link}/verify"), &[("access_code", CODE)])
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    let cookie = customer.cookies["sealpost"].clone();
    let path = format!("/pickup/{id}/files/1");

    // Every download slot taken by a client that reads only the head.
    let mut stalled = Vec::new();
    for _ in 0..4 {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut s = socket.connect(serve.addr().parse().unwrap()).await.unwrap();
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nCookie: sealpost={cookie}\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
        let mut head = [0u8; 12];
        s.read_exact(&mut head).await.unwrap();
        assert_eq!(&head, b"HTTP/1.1 200");
        stalled.push(s);
    }
    let full = || async {
        let http = reqwest::Client::new();
        let r = http
            .get(format!("{}{path}", serve.base))
            .header("cookie", format!("sealpost={cookie}"))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (
            status,
            r.bytes().await.map(|b| b.to_vec()).unwrap_or_default(),
        )
    };
    assert_eq!(full().await.0, 429, "all four slots are held");

    // No progress for the idle timeout: the server drops those
    // connections, and with them their slots.
    let got = tokio::time::timeout(GIVE_UP, async {
        loop {
            let (status, body) = full().await;
            if status == 200 {
                return body;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("the stalled downloads were never dropped");
    assert!(got == file, "a whole download afterwards");
    for mut s in stalled {
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(GIVE_UP, s.read_to_end(&mut rest)).await;
        assert!(rest.len() < file.len(), "the stalled download was cut off");
    }
}
