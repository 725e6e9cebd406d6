//! Compose under hostile or odd input (issue 11 §6): the number and size of
//! form fields, repeated single-value fields, the number of attachments
//! (an admin setting), fields after an attachment, file names given only
//! through `filename*` or not in UTF-8, nameless content, and Unicode
//! format characters in file names. Every refusal is a short 413/422 page,
//! never a 5xx, and leaves no message and no blob behind.

use sealpost::app::App;
use sealpost::audit::Actor;
use sealpost::staff::Role;
use sealpost::vault::MessageId;
use secrecy::ExposeSecret;

use crate::support::START;
use crate::support::compose::Compose;
use crate::support::env::TestEnv;
use crate::support::files::files_below;
use crate::support::http::{Browser, Resp, composed_id, create_staff, input_value, portal};

const AGENT: &str = "agent@example.com";
const ADMIN: &str = "admin@example.com";
/// An error page is a few KiB; anything near the input size is an echo.
const SMALL_PAGE: usize = 16 * 1024;

/// A complete, valid compose form: 11 fields, the token included.
fn form(csrf: &str) -> reqwest::multipart::Form {
    Compose::to("customer@example.org")
        .phone("")
        .title("Limits")
        .body("Hello")
        .methods(&["email_code", "access_code"])
        .form(csrf)
}

fn file(name: &str, data: &[u8]) -> reqwest::multipart::Part {
    reqwest::multipart::Part::bytes(data.to_vec())
        .file_name(name.to_owned())
        .mime_str("application/octet-stream")
        .unwrap()
}

async fn count(app: &App, table: &str) -> i64 {
    sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}"))
        .fetch_one(app.db.pool())
        .await
        .unwrap()
}

/// No message, part, key or delivery row, and no blob on disk.
async fn assert_nothing_stored(app: &App, env: &TestEnv) {
    for table in ["messages", "message_parts", "message_keys", "deliveries"] {
        assert_eq!(count(app, table).await, 0, "{table}");
    }
    assert!(
        files_below(&env.blob_dir()).is_empty(),
        "no blob or partial left"
    );
}

/// A second browser on the same signed-in session (for parallel requests).
fn same_session(b: &Browser) -> Browser {
    let mut other = Browser::new(&b.base);
    other.cookies = b.cookies.clone();
    other
}

/// File names of a message's attachments, in order.
async fn attachment_names(app: &App, id: MessageId) -> Vec<String> {
    let key = app.vault.unlock(id).await.unwrap();
    let mut names = Vec::new();
    for part in app.vault.parts(id).await.unwrap() {
        if part.kind == sealpost::vault::PartKind::Attachment {
            names.push(key.part_meta(&part).unwrap().file_name.unwrap_or_default());
        }
    }
    names
}

const BOUNDARY: &str = "----sealpost-limits-boundary";

/// One hand-written multipart part: `disposition` is the raw
/// Content-Disposition value (bytes, so it may be non-UTF-8).
fn raw_part(disposition: &[u8], data: &[u8]) -> Vec<u8> {
    let mut out = format!("--{BOUNDARY}\r\nContent-Disposition: ").into_bytes();
    out.extend_from_slice(disposition);
    out.extend_from_slice(b"\r\n");
    if disposition.windows(8).any(|w| w == b"filename") {
        out.extend_from_slice(b"Content-Type: application/octet-stream\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    out
}

fn raw_text(name: &str, value: &str) -> Vec<u8> {
    raw_part(
        format!("form-data; name=\"{name}\"").as_bytes(),
        value.as_bytes(),
    )
}

/// The valid form as hand-written parts, token first.
fn raw_form(csrf: &str) -> Vec<u8> {
    let mut body = Vec::new();
    for (k, v) in [
        ("csrf", csrf),
        ("recipient", "customer@example.org"),
        ("body", "Hello"),
        ("expiry_hours", "48"),
        ("method", "email_code"),
        ("retention", "keep"),
    ] {
        body.extend(raw_text(k, v));
    }
    body
}

/// Posts a hand-written multipart body with the browser's cookies.
async fn post_raw(b: &Browser, mut body: Vec<u8>) -> Resp {
    body.extend(format!("--{BOUNDARY}--\r\n").as_bytes());
    let cookie = b
        .cookies
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("; ");
    let resp = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .post(format!("{}/compose", b.base))
        .header("Cookie", cookie)
        .header(
            "Content-Type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.text().await.unwrap();
    Resp {
        status,
        headers,
        body,
    }
}

async fn agent(env: &TestEnv) -> (App, String, Browser) {
    let (app, _clock, base) = portal(env, START).await;
    create_staff(&app, AGENT, Role::Agent).await;
    let b = Browser::signed_in(&base, AGENT).await;
    (app, base, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_fields_are_refused_with_a_short_page() {
    let env = TestEnv::new().await;
    let (app, _base, mut b) = agent(&env).await;
    let token = b.csrf("/compose").await;

    // 64 fields (the token, 10 real ones, 53 unknown) are accepted.
    let mut f = form(&token);
    for i in 0..53 {
        f = f.text(format!("extra{i}"), "x");
    }
    let r = b.post_multipart("/compose", f).await;
    assert_eq!(r.status, 303, "{}", r.body);
    let kept = composed_id(&r).unwrap();

    // One more is refused, early, with a short page.
    let mut f = form(&token);
    for i in 0..54 {
        f = f.text(format!("extra{i}"), "x");
    }
    let r = b.post_multipart("/compose", f).await;
    assert_eq!(r.status, 413, "{}", r.body);
    assert!(r.body.contains("too many fields"), "{}", r.body);
    assert!(r.body.len() < SMALL_PAGE, "{} bytes", r.body.len());
    assert_eq!(count(&app, "messages").await, 1);

    // The reported flood, scaled down and in parallel: 20 requests of
    // 5,000 distinct `method` values each. Every one is refused with a
    // short page (it used to answer 422 with one error per value).
    let mut tasks = Vec::new();
    for n in 0..20 {
        let mut other = same_session(&b);
        let token = token.clone();
        tasks.push(tokio::spawn(async move {
            let mut f = form(&token);
            for i in 0..5_000 {
                f = f.text("method", format!("m{n}-{i}"));
            }
            other.post_multipart("/compose", f).await
        }));
    }
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(r.status, 413, "{}", &r.body[..r.body.len().min(500)]);
        assert!(r.body.len() < SMALL_PAGE, "{} bytes", r.body.len());
    }
    assert_eq!(count(&app, "messages").await, 1);
    assert_eq!(count(&app, "message_parts").await, 1, "only the kept body");
    assert_eq!(files_below(&env.blob_dir()).len(), 1);
    assert_eq!(attachment_names(&app, kept).await.len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_field_over_its_cap_is_refused_with_a_short_page() {
    let env = TestEnv::new().await;
    let (app, _base, mut b) = agent(&env).await;
    let token = b.csrf("/compose").await;

    // A short field of 2 MiB, and a body over its 800,000-byte cap.
    let long_title = "T".repeat(2 * 1024 * 1024);
    let long_body = "B".repeat(800_001);
    for (name, value) in [("title", &long_title), ("body", &long_body)] {
        let f = reqwest::multipart::Form::new()
            .text("csrf", token.clone())
            .text("recipient", "customer@example.org")
            .text(name, value.clone())
            .text("expiry_hours", "48")
            .text("method", "email_code")
            .text("retention", "keep");
        let r = b.post_multipart("/compose", f).await;
        assert_eq!(
            r.status,
            413,
            "{name}: {}",
            &r.body[..r.body.len().min(500)]
        );
        assert!(r.body.contains("longer than allowed"), "{name}");
        assert!(r.body.len() < SMALL_PAGE, "{name}: {} bytes", r.body.len());
        assert!(!r.body.contains("TTTTTTTT") && !r.body.contains("BBBBBBBB"));
    }
    // The same in parallel, mixed with valid composes that still go through.
    let mut tasks = Vec::new();
    for n in 0..24 {
        let mut other = same_session(&b);
        let token = token.clone();
        let long_title = long_title.clone();
        tasks.push(tokio::spawn(async move {
            let mut f = form(&token);
            if n % 3 != 0 {
                f = f.text("title2", long_title);
            }
            (n, other.post_multipart("/compose", f).await)
        }));
    }
    for t in tasks {
        let (n, r) = t.await.unwrap();
        let want = if n % 3 == 0 { 303 } else { 413 };
        assert_eq!(r.status, want, "{n}: {}", &r.body[..r.body.len().min(500)]);
        assert!(r.body.len() < SMALL_PAGE);
    }
    assert_eq!(count(&app, "messages").await, 8);
    // Each refusal is audited as a failed compose, and left no blob.
    assert_eq!(
        count(&app, "audit_log WHERE action = 'message.compose_failed'").await,
        18
    );
    assert_eq!(files_below(&env.blob_dir()).len(), 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_single_value_fields_are_refused() {
    let env = TestEnv::new().await;
    let (app, _base, mut b) = agent(&env).await;
    let token = b.csrf("/compose").await;
    let cases: Vec<(&str, &str, &str)> = vec![
        ("title", "Second title", "title"),
        ("recipient", "someone.else@example.org", "recipient"),
        ("body", "Second body", "body"),
        ("expiry_hours", "1", "expiry_hours"),
        ("retention", "shred", "retention"),
        ("access_code", "Sesame-4711", "access_code"),
        ("method", "email_code", "method"),
    ];
    for (name, value, shown) in cases {
        let f = form(&token).text(name, value);
        let r = b.post_multipart("/compose", f).await;
        assert_eq!(r.status, 422, "{name}: {}", r.body);
        assert!(
            r.body.contains("more than once") && r.body.contains(shown),
            "{name}: {}",
            r.body
        );
        // The form is shown again to fix it.
        assert!(r.body.contains("name=\"recipient\""), "{name}");
    }
    // Several different methods are one field each, as always.
    let f = form(&token)
        .text("method", "known_fact")
        .text("known_fact", "1234");
    let r = b.post_multipart("/compose", f).await;
    assert_eq!(r.status, 422, "known_fact sent twice: {}", r.body);
    let ok = reqwest::multipart::Form::new()
        .text("csrf", token.clone())
        .text("recipient", "customer@example.org")
        .text("body", "Hello")
        .text("expiry_hours", "48")
        .text("method", "email_code")
        .text("method", "access_code")
        .text("method", "known_fact")
        .text("known_fact", "1234")
        .text("retention", "keep");
    let r = b.post_multipart("/compose", ok).await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(count(&app, "messages").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_number_of_attachments_is_an_admin_setting() {
    let env = TestEnv::new().await;
    let (app, _clock, base) = portal(&env, START).await;
    create_staff(&app, AGENT, Role::Agent).await;
    create_staff(&app, ADMIN, Role::Admin).await;
    let mut b = Browser::signed_in(&base, AGENT).await;
    assert_eq!(app.settings.load().await.unwrap().max_attachments, 50);
    let page = b.get("/compose").await;
    assert!(page.body.contains("Up to 50 files"), "{}", page.body);

    let with = |token: &str, n: usize| {
        let mut f = form(token);
        for i in 0..n {
            f = f.part("attachments", file(&format!("f{i}.txt"), b""));
        }
        f
    };
    // 51 (and 1,000) empty files: refused, nothing kept.
    let token = b.csrf("/compose").await;
    for n in [51, 1000] {
        let r = b.post_multipart("/compose", with(&token, n)).await;
        assert_eq!(r.status, 422, "{n}: {}", r.body);
        assert!(r.body.contains("Attach at most 50 files"), "{}", r.body);
        assert!(r.body.len() < SMALL_PAGE);
    }
    assert_nothing_stored(&app, &env).await;

    // An admin raises the limit on the settings page; 51 now go.
    let mut admin = Browser::signed_in(&base, ADMIN).await;
    let settings = admin.get("/admin/settings").await;
    assert_eq!(
        input_value(&settings.body, "max_attachments").as_deref(),
        Some("50")
    );
    assert!(settings.body.contains("<label for=\"max_attachments\""));
    let fields = [
        ("organisation", "Sealpost"),
        ("support_line", ""),
        ("default_expiry_hours", "168"),
        ("size_limit_mib", "100"),
        ("method", "email_code"),
        ("method", "access_code"),
        ("method", "known_fact"),
    ];
    for bad in ["0", "1001", "many"] {
        let mut f = fields.to_vec();
        f.push(("max_attachments", bad));
        let r = admin.submit("/admin/settings", "/admin/settings", &f).await;
        assert_eq!(r.status, 422, "{bad}");
        assert_eq!(
            input_value(&r.body, "max_attachments").as_deref(),
            Some(bad)
        );
    }
    let mut f = fields.to_vec();
    f.push(("max_attachments", "60"));
    let r = admin.submit("/admin/settings", "/admin/settings", &f).await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(app.settings.load().await.unwrap().max_attachments, 60);

    let r = b.post_multipart("/compose", with(&token, 51)).await;
    assert_eq!(r.status, 303, "{}", r.body);
    let id = composed_id(&r).unwrap();
    assert_eq!(attachment_names(&app, id).await.len(), 51);

    // And lowered: 3 refused, 2 accepted.
    let mut f = fields.to_vec();
    f.push(("max_attachments", "2"));
    let r = admin.submit("/admin/settings", "/admin/settings", &f).await;
    assert_eq!(r.status, 303, "{}", r.body);
    let r = b.post_multipart("/compose", with(&token, 3)).await;
    assert_eq!(r.status, 422);
    assert!(r.body.contains("Attach at most 2 files"), "{}", r.body);
    let r = b.post_multipart("/compose", with(&token, 2)).await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(count(&app, "messages").await, 2);
    // Only the two messages' blobs (52 + 3 parts) are on disk.
    assert_eq!(files_below(&env.blob_dir()).len(), 55);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fields_after_an_attachment_are_refused_not_lost() {
    let env = TestEnv::new().await;
    let (app, _base, mut b) = agent(&env).await;
    let token = b.csrf("/compose").await;
    for (name, value) in [
        ("body", "The real message, sent last"),
        ("title", "Late title"),
        ("method", "access_code"),
    ] {
        let f = reqwest::multipart::Form::new()
            .text("csrf", token.clone())
            .text("recipient", "customer@example.org")
            .text("expiry_hours", "48")
            .text("method", "email_code")
            .text("retention", "keep")
            .part("attachments", file("a.pdf", b"%PDF-1.7 data"))
            .text(name, value);
        let r = b.post_multipart("/compose", f).await;
        assert_eq!(r.status, 422, "{name}: {}", r.body);
        assert!(
            r.body.contains("must come before the attachments"),
            "{name}: {}",
            r.body
        );
    }
    // So is a file under any other field name.
    let f = form(&token).part("body", file("b.pdf", b"data"));
    let r = b.post_multipart("/compose", f).await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(
        r.body.contains("only in the Attachments field"),
        "{}",
        r.body
    );
    assert_nothing_stored(&app, &env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_names_in_every_encoding_are_kept_or_refused() {
    let env = TestEnv::new().await;
    let (app, _base, mut b) = agent(&env).await;
    let token = b.csrf("/compose").await;

    // Named only through RFC 5987 `filename*`; not UTF-8 (Latin-1);
    // `filename*` beside an ASCII fallback; no name at all but content.
    let mut body = raw_form(&token);
    body.extend(raw_part(
        b"form-data; name=\"attachments\"; filename*=UTF-8''Kontoauszug%20M%C3%A4rz.pdf",
        b"first",
    ));
    body.extend(raw_part(
        b"form-data; name=\"attachments\"; filename=\"r\xe9sum\xe9.pdf\"",
        b"second",
    ));
    body.extend(raw_part(
            b"form-data; name=\"attachments\"; filename=\"fallback.txt\"; filename*=utf-8''%E2%82%AC-rates.txt",
            b"third",
        ));
    body.extend(raw_part(b"form-data; name=\"attachments\"", b"fourth"));
    // A browser's empty file input: nameless and empty, skipped.
    body.extend(raw_part(
        b"form-data; name=\"attachments\"; filename=\"\"",
        b"",
    ));
    let r = post_raw(&b, body).await;
    assert_eq!(r.status, 303, "{}", r.body);
    let id = composed_id(&r).unwrap();
    assert_eq!(
        attachment_names(&app, id).await,
        [
            "Kontoauszug März.pdf",
            "résumé.pdf",
            "€-rates.txt",
            "attachment-4"
        ]
    );
    let parts = crate::support::vault::read_all(&app, id).await.unwrap();
    assert_eq!(
        parts,
        [
            b"Hello".to_vec(),
            b"first".to_vec(),
            b"second".to_vec(),
            b"third".to_vec(),
            b"fourth".to_vec()
        ]
    );

    // A `filename*` that cannot be decoded, with no fallback: refused.
    let mut body = raw_form(&token);
    body.extend(raw_part(
        b"form-data; name=\"attachments\"; filename*=UTF-8''%C3%28.pdf",
        b"data",
    ));
    let r = post_raw(&b, body).await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(r.body.contains("could not be read"), "{}", r.body);
    assert_eq!(count(&app, "messages").await, 1);
    assert_eq!(count(&app, "message_parts").await, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn format_characters_leave_file_names_before_storage_and_download() {
    let env = TestEnv::new().await;
    let (app, base, mut b) = agent(&env).await;
    let token = b.csrf("/compose").await;
    let f = reqwest::multipart::Form::new()
        .text("csrf", token)
        .text("recipient", "customer@example.org")
        .text("body", "Your invoice")
        .text("expiry_hours", "48")
        .text("method", "access_code")
        .text("access_code", "Sesame-4711")
        .text("retention", "keep")
        .part(
            "attachments",
            file("invoice\u{202E}fdp.exe", b"MZ not really"),
        )
        .part(
            "attachments",
            file("\u{200B}zero\u{2066}width\u{FEFF}.txt", b"text"),
        );
    let r = b.post_multipart("/compose", f).await;
    assert_eq!(r.status, 303, "{}", r.body);
    let id = composed_id(&r).unwrap();
    assert_eq!(
        attachment_names(&app, id).await,
        ["invoicefdp.exe", "zerowidth.txt"]
    );
    // The sender's page shows the clean name.
    let page = b.get(&format!("/messages/{id}")).await;
    assert!(page.body.contains("invoicefdp.exe"));
    assert!(!page.body.contains('\u{202E}'));

    // The customer sees and downloads it under the clean name.
    let mut tx = app.db.begin().await.unwrap();
    let url = app
        .deliveries
        .resend(&mut tx, Actor::Cli, id, None, &app.config.public_url)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let url = url.expose_secret().to_owned();
    let link = &url[url.find("/p/").unwrap()..];
    let mut customer = Browser::new(&base);
    assert_eq!(customer.get(link).await.status, 200);
    let r = customer
        .post(&format!("{link}/verify"), &[("access_code", "Sesame-4711")])
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    let page = customer.get(&format!("/pickup/{id}")).await;
    assert!(page.body.contains("invoicefdp.exe"), "{}", page.body);
    assert!(!page.body.contains('\u{202E}'));
    let dl = customer.get(&format!("/pickup/{id}/files/1")).await;
    assert_eq!(dl.status, 200);
    assert_eq!(
        dl.header("content-disposition"),
        Some("attachment; filename=\"invoicefdp.exe\"; filename*=UTF-8''invoicefdp.exe")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_part_header_is_cut_off_at_the_size_limit() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let env = TestEnv::new().await;
    let (app, base, mut b) = agent(&env).await;
    // A 1 MiB limit: with the form's allowance the request may be 3 MiB.
    let mut settings = app.settings.load().await.unwrap();
    settings.size_limit_mib = 1;
    app.settings.save(Actor::Cli, &settings).await.unwrap();
    let token = b.csrf("/compose").await;
    let cookie = b
        .cookies
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("; ");
    let addr = base.trim_start_matches("http://").to_owned();
    let conn = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let (mut read, mut write) = conn.into_split();
    let answer = tokio::spawn(async move {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = read.read(&mut buf).await {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        got
    });
    let head = format!(
        "POST /compose HTTP/1.1\r\nHost: {addr}\r\nCookie: {cookie}\r\n\
             Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n\
             Transfer-Encoding: chunked\r\n\r\n"
    );
    let mut first = raw_text("csrf", &token);
    first.extend(
        format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"body\"\r\nX-Junk: ")
            .as_bytes(),
    );
    let chunk = |data: &[u8]| {
        let mut c = format!("{:x}\r\n", data.len()).into_bytes();
        c.extend_from_slice(data);
        c.extend_from_slice(b"\r\n");
        c
    };
    let _ = write.write_all(head.as_bytes()).await;
    let _ = write.write_all(&chunk(&first)).await;
    // 8 MiB of one header line that never ends, and the request stays
    // open: before, the server kept all of it and waited for more.
    let junk = chunk(&vec![b'a'; 64 * 1024]);
    for _ in 0..128 {
        if write.write_all(&junk).await.is_err() {
            break;
        }
    }
    let got = tokio::time::timeout(std::time::Duration::from_secs(30), answer)
        .await
        .expect("the server answered without waiting for the end of the body")
        .unwrap();
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.starts_with("HTTP/1.1 400"),
        "{}",
        &text[..text.len().min(300)]
    );
    assert!(text.len() < SMALL_PAGE, "a short page");
    drop(write);
    assert_nothing_stored(&app, &env).await;
}
