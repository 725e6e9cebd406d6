//! `sealpost send | status | request`: the API from a shell, a script or a
//! helpdesk's automation, with the same binary. The token comes from a
//! file or `SEALPOST_TOKEN`, never from the command line (other users see
//! a process's arguments). Every creating call carries an
//! `Idempotency-Key`, so the client retries a lost connection or a busy
//! server without ever sending twice.
//!
//! Exit codes, for scripts: 0 done; 1 a local problem (a file that cannot
//! be read); 2 wrong usage; 3 the token is missing, invalid or lacks the
//! scope; 4 no such message; 5 the server refused the request (invalid,
//! not allowed by the organisation, too large); 6 the server could not be
//! reached or failed, after retries.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

/// Where the server is, how to authenticate, how to answer.
#[derive(Debug, Args)]
pub struct Connection {
    /// The Sealpost server, e.g. https://sealpost.example.com
    #[arg(long, env = "SEALPOST_SERVER", value_name = "URL")]
    server: String,
    /// A file holding the API token (default: the SEALPOST_TOKEN variable)
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Print the server's JSON answer instead of text
    #[arg(long)]
    json: bool,
}

/// `sealpost send`
#[derive(Debug, Args)]
pub struct Send {
    #[command(flatten)]
    connection: Connection,
    /// The customer's email address (it receives only a one-time link)
    #[arg(long, value_name = "ADDRESS")]
    to: String,
    /// The message text, from a file (`-`: standard input)
    #[arg(long, value_name = "FILE")]
    body_file: Option<PathBuf>,
    /// A file to attach (repeat for more)
    #[arg(long = "file", value_name = "FILE")]
    files: Vec<PathBuf>,
    /// How the customer verifies (repeat for several)
    #[arg(long, value_name = "METHOD", value_parser = ["email-code", "access-code", "known-fact"], default_values_t = ["email-code".to_owned()])]
    verify: Vec<String>,
    /// With `--verify access-code`: a file holding the code to use
    /// (default: the server generates one and this prints it once)
    #[arg(long, value_name = "FILE")]
    access_code_file: Option<PathBuf>,
    /// With `--verify known-fact`: a file holding the answer
    #[arg(long, value_name = "FILE")]
    known_fact_file: Option<PathBuf>,
    /// How long the link works, e.g. 7d, 48h (default: the organisation's)
    #[arg(long, value_name = "SPAN")]
    expires: Option<String>,
    /// An internal title (the customer never sees it)
    #[arg(long)]
    title: Option<String>,
    /// Shred the message once the customer has read it
    #[arg(long)]
    shred_after_pickup: bool,
}

/// `sealpost request`
#[derive(Debug, Args)]
pub struct Request {
    #[command(flatten)]
    connection: Connection,
    /// The customer's email address
    #[arg(long, value_name = "ADDRESS")]
    to: String,
    /// A document to ask for, e.g. "Photo ID" (repeat for more)
    #[arg(long = "item", value_name = "NAME", required = true)]
    items: Vec<String>,
    /// File kinds to accept, comma-separated (e.g. pdf,jpeg,png)
    #[arg(long, value_name = "KINDS", value_delimiter = ',', required = true)]
    accept: Vec<String>,
    /// The largest upload, in MiB
    #[arg(long, value_name = "MIB", default_value_t = 25)]
    max_mib: u64,
    /// Instructions for the customer, from a file (`-`: standard input)
    #[arg(long, value_name = "FILE")]
    instructions_file: Option<PathBuf>,
    #[arg(long, value_name = "METHOD", value_parser = ["email-code", "access-code", "known-fact"], default_values_t = ["email-code".to_owned()])]
    verify: Vec<String>,
    #[arg(long, value_name = "FILE")]
    access_code_file: Option<PathBuf>,
    #[arg(long, value_name = "FILE")]
    known_fact_file: Option<PathBuf>,
    #[arg(long, value_name = "SPAN")]
    expires: Option<String>,
    #[arg(long)]
    title: Option<String>,
}

/// `sealpost status`
#[derive(Debug, Args)]
pub struct Status {
    #[command(flatten)]
    connection: Connection,
    /// The message id, as `send` printed it
    id: String,
}

/// Why a command failed, as its exit code says.
#[derive(Debug)]
enum Failure {
    Local(String),
    Auth(String),
    NotFound(String),
    Refused(String),
    Unavailable(String),
}

impl Failure {
    fn exit(self) -> ExitCode {
        let (code, message) = match self {
            Failure::Local(m) => (1, m),
            Failure::Auth(m) => (3, m),
            Failure::NotFound(m) => (4, m),
            Failure::Refused(m) => (5, m),
            Failure::Unavailable(m) => (6, m),
        };
        eprintln!("sealpost: {message}");
        ExitCode::from(code)
    }
}

type Outcome<T> = Result<T, Failure>;

struct Client {
    http: reqwest::Client,
    server: String,
    token: SecretString,
}

impl Client {
    fn new(c: &Connection) -> Outcome<Client> {
        let token = match &c.token_file {
            Some(path) => read_secret(path, "token")?,
            None => std::env::var("SEALPOST_TOKEN")
                .ok()
                .map(|t| SecretString::from(t.trim().to_owned()))
                .filter(|t| !t.expose_secret().is_empty())
                .ok_or_else(|| {
                    Failure::Auth(
                        "no API token: pass --token-file FILE or set SEALPOST_TOKEN".to_owned(),
                    )
                })?,
        };
        let server = c.server.trim_end_matches('/').to_owned();
        if !(server.starts_with("https://") || server.starts_with("http://")) {
            return Err(Failure::Local(format!(
                "--server must be an http(s) URL, not {server:?}"
            )));
        }
        crate::tls::install_crypto_provider();
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("sealpost-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Failure::Local(format!("cannot set up HTTP: {e}")))?;
        Ok(Client {
            http,
            server,
            token,
        })
    }

    /// Sends what `build` makes, again after a lost connection or a busy
    /// server (at most four tries); the answer's status and JSON.
    async fn call<F, Fut>(&self, build: F) -> Outcome<(u16, Value)>
    where
        F: Fn(&reqwest::Client) -> Fut,
        Fut: std::future::Future<Output = Outcome<reqwest::RequestBuilder>>,
    {
        let mut wait = Duration::from_secs(1);
        let mut last = String::new();
        for attempt in 1..=4 {
            let request = build(&self.http)
                .await?
                .bearer_auth(self.token.expose_secret())
                .timeout(Duration::from_secs(3600));
            match request.send().await {
                Ok(r) => {
                    let status = r.status().as_u16();
                    let retry_after = r
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<u64>().ok());
                    let text = r.text().await.unwrap_or_default();
                    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
                    if matches!(status, 429 | 502 | 503 | 504) && attempt < 4 {
                        last = describe(status, &body);
                        let pause = retry_after.map_or(wait, |s| Duration::from_secs(s.min(30)));
                        tokio::time::sleep(pause).await;
                        wait *= 2;
                        continue;
                    }
                    return Ok((status, body));
                }
                Err(e) if attempt < 4 && !e.is_builder() => {
                    last = e.to_string();
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                }
                Err(e) => return Err(Failure::Unavailable(format!("{}: {e}", self.server))),
            }
        }
        Err(Failure::Unavailable(format!(
            "{} did not answer after 4 tries: {last}",
            self.server
        )))
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server)
    }
}

/// The problem's words, or the status.
fn describe(status: u16, body: &Value) -> String {
    body.get("detail")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| format!("the server answered {status}"))
}

/// Success or the failure an answer means.
fn checked(status: u16, body: Value) -> Outcome<Value> {
    match status {
        200..=299 => Ok(body),
        401 | 403 => Err(Failure::Auth(describe(status, &body))),
        404 => Err(Failure::NotFound(describe(status, &body))),
        400..=499 => Err(Failure::Refused(describe(status, &body))),
        _ => Err(Failure::Unavailable(describe(status, &body))),
    }
}

fn read_secret(path: &Path, what: &str) -> Outcome<SecretString> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Failure::Local(format!(
            "cannot read the {what} from {}: {e}",
            path.display()
        ))
    })?;
    let value = text.trim();
    if value.is_empty() {
        return Err(Failure::Local(format!("{} is empty", path.display())));
    }
    Ok(SecretString::from(value.to_owned()))
}

fn read_text(path: &Path) -> Outcome<String> {
    let read = if path == Path::new("-") {
        std::io::read_to_string(std::io::stdin())
    } else {
        std::fs::read_to_string(path)
    };
    read.map_err(|e| Failure::Local(format!("cannot read {}: {e}", path.display())))
}

/// Whole hours from a span like `7d`.
fn hours(span: &str) -> Outcome<i64> {
    let secs = crate::text::parse_span(span)
        .ok_or_else(|| Failure::Local(format!("--expires {span:?}: use e.g. 7d or 48h")))?;
    if secs % 3600 != 0 || !(1..=720).contains(&(secs / 3600)) {
        return Err(Failure::Local(format!(
            "--expires {span:?}: a whole number of hours from 1h to 30d"
        )));
    }
    Ok(secs / 3600)
}

/// The `verify` object for the chosen methods.
fn verification(
    methods: &[String],
    access_code_file: Option<&Path>,
    known_fact_file: Option<&Path>,
) -> Outcome<Value> {
    let mut verify = serde_json::Map::new();
    for m in methods {
        match m.as_str() {
            "email-code" => {
                verify.insert("email_code".to_owned(), json!({}));
            }
            "access-code" => {
                let mut a = serde_json::Map::new();
                if let Some(path) = access_code_file {
                    let code = read_secret(path, "access code")?;
                    a.insert("code".to_owned(), json!(code.expose_secret()));
                }
                verify.insert("access_code".to_owned(), Value::Object(a));
            }
            _ => {
                let path = known_fact_file.ok_or_else(|| {
                    Failure::Local("--verify known-fact needs --known-fact-file FILE".to_owned())
                })?;
                let answer = read_secret(path, "known fact")?;
                verify.insert(
                    "known_fact".to_owned(),
                    json!({ "answer": answer.expose_secret() }),
                );
            }
        }
    }
    Ok(Value::Object(verify))
}

fn runtime() -> Outcome<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Local(format!("cannot start: {e}")))
}

fn finish(result: Outcome<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => f.exit(),
    }
}

/// A sent message or request, as text or JSON.
fn print_created(json_out: bool, created: &Value) {
    if json_out {
        println!("{created}");
        return;
    }
    let field = |k: &str| created.get(k).and_then(Value::as_str).unwrap_or_default();
    println!("{}", field("id"));
    eprintln!("Sent; the link works until {}.", field("expires_at"));
    if let Some(code) = created.get("access_code").and_then(Value::as_str) {
        eprintln!("Access code for the customer (shown once): {code}");
    }
}

pub fn send(args: Send) -> ExitCode {
    finish(runtime().and_then(|rt| rt.block_on(send_async(args))))
}

async fn send_async(args: Send) -> Outcome<()> {
    let client = Client::new(&args.connection)?;
    let mut message = json!({
        "to": args.to,
        "verify": verification(&args.verify, args.access_code_file.as_deref(), args.known_fact_file.as_deref())?,
        "shred_after_pickup": args.shred_after_pickup,
    });
    if let Some(path) = &args.body_file {
        message["body"] = json!(read_text(path)?);
    } else if args.files.is_empty() {
        return Err(Failure::Local(
            "nothing to send: give --body-file FILE (or - for standard input) and/or --file"
                .to_owned(),
        ));
    }
    if let Some(span) = &args.expires {
        message["expires_in_hours"] = json!(hours(span)?);
    }
    if let Some(title) = &args.title {
        message["title"] = json!(title);
    }
    for f in &args.files {
        std::fs::metadata(f)
            .ok()
            .filter(std::fs::Metadata::is_file)
            .ok_or_else(|| Failure::Local(format!("cannot read {}", f.display())))?;
    }
    let key = uuid::Uuid::new_v4().to_string();
    let url = client.url("/api/v1/messages");
    let message = message.to_string();
    let (status, body) = client
        .call(|http| {
            let (url, key, message, files) = (
                url.clone(),
                key.clone(),
                message.clone(),
                args.files.clone(),
            );
            let http = http.clone();
            async move {
                let request = http.post(url).header("idempotency-key", key);
                if files.is_empty() {
                    return Ok(request
                        .header("content-type", "application/json")
                        .body(message));
                }
                let mut form = reqwest::multipart::Form::new().part(
                    "message",
                    reqwest::multipart::Part::text(message)
                        .mime_str("application/json")
                        .map_err(|e| Failure::Local(e.to_string()))?,
                );
                for f in files {
                    let part = reqwest::multipart::Part::file(&f)
                        .await
                        .map_err(|e| Failure::Local(format!("cannot read {}: {e}", f.display())))?;
                    form = form.part("file", part);
                }
                Ok(request.multipart(form))
            }
        })
        .await?;
    print_created(args.connection.json, &checked(status, body)?);
    Ok(())
}

pub fn request(args: Request) -> ExitCode {
    finish(runtime().and_then(|rt| rt.block_on(request_async(args))))
}

async fn request_async(args: Request) -> Outcome<()> {
    let client = Client::new(&args.connection)?;
    let mut body = json!({
        "to": args.to,
        "verify": verification(&args.verify, args.access_code_file.as_deref(), args.known_fact_file.as_deref())?,
        "items": args.items,
        "accept": args.accept,
        "max_mib": args.max_mib,
    });
    if let Some(path) = &args.instructions_file {
        body["instructions"] = json!(read_text(path)?);
    }
    if let Some(span) = &args.expires {
        body["expires_in_hours"] = json!(hours(span)?);
    }
    if let Some(title) = &args.title {
        body["title"] = json!(title);
    }
    let key = uuid::Uuid::new_v4().to_string();
    let url = client.url("/api/v1/requests");
    let body = body.to_string();
    let (status, answer) = client
        .call(|http| {
            let request = http
                .post(url.clone())
                .header("idempotency-key", key.clone())
                .header("content-type", "application/json")
                .body(body.clone());
            async move { Ok(request) }
        })
        .await?;
    print_created(args.connection.json, &checked(status, answer)?);
    Ok(())
}

pub fn status(args: Status) -> ExitCode {
    finish(runtime().and_then(|rt| rt.block_on(status_async(args))))
}

async fn status_async(args: Status) -> Outcome<()> {
    let client = Client::new(&args.connection)?;
    if uuid::Uuid::parse_str(&args.id).is_err() {
        return Err(Failure::NotFound(format!(
            "{:?} is not a message id",
            args.id
        )));
    }
    let url = client.url(&format!("/api/v1/messages/{}", args.id));
    let (status, body) = client
        .call(|http| {
            let request = http.get(url.clone());
            async move { Ok(request) }
        })
        .await?;
    let message = checked(status, body)?;
    if args.connection.json {
        println!("{message}");
        return Ok(());
    }
    let field = |k: &str| message.get(k).and_then(Value::as_str).unwrap_or_default();
    println!("{}", field("status"));
    eprintln!(
        "{} {}: sent {}, link until {}",
        field("kind"),
        field("id"),
        field("created_at"),
        field("expires_at")
    );
    for e in message
        .get("events")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let part = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or_default();
        eprintln!("  {}  {}", part("at"), part("action"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_become_whole_hours() {
        assert_eq!(hours("7d").ok(), Some(168));
        assert_eq!(hours("48h").ok(), Some(48));
        assert!(hours("90m").is_err());
        assert!(hours("31d").is_err());
        assert!(hours("soon").is_err());
    }

    #[test]
    fn methods_map_to_the_verify_object() {
        let v = verification(
            &["email-code".to_owned(), "access-code".to_owned()],
            None,
            None,
        )
        .ok()
        .unwrap_or_default();
        assert_eq!(v, json!({"email_code": {}, "access_code": {}}));
        assert!(verification(&["known-fact".to_owned()], None, None).is_err());
    }

    #[test]
    fn answers_map_to_exit_codes() {
        let code = |status| match checked(status, json!({"detail": "x"})) {
            Ok(_) => 0,
            Err(Failure::Local(_)) => 1,
            Err(Failure::Auth(_)) => 3,
            Err(Failure::NotFound(_)) => 4,
            Err(Failure::Refused(_)) => 5,
            Err(Failure::Unavailable(_)) => 6,
        };
        assert_eq!(
            [201, 401, 403, 404, 400, 409, 413, 500].map(code),
            [0, 3, 3, 4, 5, 5, 5, 6]
        );
    }
}
