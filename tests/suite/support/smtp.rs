//! A real SMTP server for tests, in process: the `mailin` protocol state
//! machine behind a std TCP listener on 127.0.0.1, one thread per
//! connection. It records the raw DATA bytes of every attempt and answers
//! the end of DATA as told (accept, 451, 550), or drops connections to play
//! an outage.

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use mailin::{Action, Handler, Response, SessionBuilder};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reply {
    /// 250: the email is accepted.
    Accept,
    /// 451 at the end of DATA: try again later.
    Temporary,
    /// 550 at the end of DATA: never.
    Permanent,
    /// Connections are closed before the greeting (server down).
    Down,
    /// The end of DATA goes unanswered until the reply changes; a client
    /// that disconnects meanwhile has sent nothing (no attempt recorded).
    Hold,
}

#[derive(Default)]
struct State {
    reply: Option<Reply>,
    /// Raw DATA of every email the server took to the end, with its answer.
    attempts: Vec<(Vec<u8>, Reply)>,
}

#[derive(Clone)]
pub struct SmtpServer {
    pub port: u16,
    state: Arc<Mutex<State>>,
}

impl SmtpServer {
    pub fn start() -> SmtpServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind smtp");
        let port = listener.local_addr().expect("addr").port();
        let state = Arc::new(Mutex::new(State {
            reply: Some(Reply::Accept),
            attempts: Vec::new(),
        }));
        let shared = state.clone();
        // Lives as long as the test process; one per test is cheap.
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let state = shared.clone();
                std::thread::spawn(move || serve_connection(stream, state));
            }
        });
        SmtpServer { port, state }
    }

    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    pub fn set_reply(&self, reply: Reply) {
        self.state.lock().unwrap().reply = Some(reply);
    }

    /// Raw bytes of every accepted email, in arrival order.
    pub fn accepted(&self) -> Vec<Vec<u8>> {
        self.state
            .lock()
            .unwrap()
            .attempts
            .iter()
            .filter(|(_, r)| *r == Reply::Accept)
            .map(|(m, _)| m.clone())
            .collect()
    }

    /// Raw bytes of every email that reached the end of DATA, with the answer given.
    pub fn attempts(&self) -> Vec<(Vec<u8>, Reply)> {
        self.state.lock().unwrap().attempts.clone()
    }
}

struct Recorder {
    state: Arc<Mutex<State>>,
    data: Vec<u8>,
}

impl Handler for Recorder {
    fn data_start(&mut self, _: &str, _: &str, _: bool, _: &[String]) -> Response {
        self.data.clear();
        mailin::response::OK
    }

    fn data(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.data.extend_from_slice(buf);
        Ok(())
    }

    fn data_end(&mut self) -> Response {
        let mut state = self.state.lock().unwrap();
        let reply = state.reply.unwrap_or(Reply::Accept);
        state.attempts.push((std::mem::take(&mut self.data), reply));
        match reply {
            Reply::Accept | Reply::Down | Reply::Hold => mailin::response::OK,
            Reply::Temporary => Response::custom(451, "4.3.0 try again later".to_owned()),
            Reply::Permanent => Response::custom(550, "5.1.1 mailbox unavailable".to_owned()),
        }
    }
}

fn serve_connection(stream: TcpStream, state: Arc<Mutex<State>>) {
    if state.lock().unwrap().reply == Some(Reply::Down) {
        return; // dropped: the client sees the connection close
    }
    let peer = stream
        .peer_addr()
        .map_or(IpAddr::from([127, 0, 0, 1]), |a| a.ip());
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    let handler = Recorder {
        state: state.clone(),
        data: Vec::new(),
    };
    let mut session = SessionBuilder::new("test-smtp.local").build(peer, handler);
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
        if line == b".\r\n" && !wait_while_held(&state, reader.get_ref()) {
            return; // the client went away before the end of DATA was answered
        }
        let response = session.process(&line);
        // mailin stays in its DATA state after refusing an email, so the
        // next command would be read as data; close after answering.
        let refused_data = line == b".\r\n" && response.is_error;
        match response.action {
            Action::Reply if refused_data => {
                let _ = response.write_to(&mut writer);
                let _ = writer.flush();
                return;
            }
            Action::Reply => {
                if response.write_to(&mut writer).is_err() || writer.flush().is_err() {
                    return;
                }
            }
            Action::Close => {
                let _ = response.write_to(&mut writer);
                let _ = writer.flush();
                return;
            }
            Action::UpgradeTls => return,
            Action::NoReply => {}
        }
    }
}

/// While the reply is [`Reply::Hold`], waits; false if the client hung up.
fn wait_while_held(state: &Arc<Mutex<State>>, stream: &TcpStream) -> bool {
    let mut held = false;
    while state.lock().unwrap().reply == Some(Reply::Hold) {
        held = true;
        std::thread::sleep(std::time::Duration::from_millis(50));
        if client_gone(stream) {
            return false;
        }
    }
    // A client killed just before the hold was lifted may be noticed only
    // now; answering it would record an email its sender never saw accepted.
    !(held && client_gone(stream))
}

fn client_gone(stream: &TcpStream) -> bool {
    if stream.set_nonblocking(true).is_err() {
        return true;
    }
    let mut probe = [0u8; 1];
    let closed = match stream.peek(&mut probe) {
        Ok(n) => n == 0,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    };
    stream.set_nonblocking(false).is_err() || closed
}

/// The header `name` of a raw email (first occurrence, unfolded).
pub fn header(raw: &[u8], name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(raw);
    let head = text.split("\r\n\r\n").next().unwrap_or("");
    let unfolded = head.replace("\r\n ", " ").replace("\r\n\t", " ");
    unfolded.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
    })
}

/// The decoded text/plain and text/html parts of a multipart email.
pub fn parts(raw: &[u8]) -> (String, String) {
    let text = String::from_utf8_lossy(raw).into_owned();
    let content_type = header(raw, "Content-Type").expect("content type");
    let boundary = content_type
        .split("boundary=")
        .nth(1)
        .expect("boundary")
        .trim_matches('"')
        .to_owned();
    let (mut plain, mut html) = (String::new(), String::new());
    for part in text.split(&format!("--{boundary}")).skip(1) {
        let Some((head, body)) = part.split_once("\r\n\r\n") else {
            continue;
        };
        let head_l = head.to_ascii_lowercase();
        let body = body.trim_end_matches("--\r\n").trim_end();
        let decoded = if head_l.contains("quoted-printable") {
            let bytes =
                quoted_printable::decode(body.as_bytes(), quoted_printable::ParseMode::Robust)
                    .expect("quoted-printable");
            String::from_utf8(bytes).expect("utf-8")
        } else if head_l.contains("base64") {
            use base64::Engine;
            let joined: String = body.split_whitespace().collect();
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(joined)
                .expect("base64");
            String::from_utf8(bytes).expect("utf-8")
        } else {
            body.to_owned()
        };
        if head_l.contains("text/plain") {
            plain = decoded;
        } else if head_l.contains("text/html") {
            html = decoded;
        }
    }
    (plain, html)
}
