//! The hostile-load benchmark behind `bench/abuse.sh`.
//!
//!   abuse seed DATA_DIR PUBLIC_URL OUT   seeds an agent and messages, writes OUT
//!   abuse run BASE_URL SERVER_PID SEED_FILE [PHASE_SECS]
//!
//! `run` measures a legitimate customer (visit, verify, read, download) and
//! a legitimate agent (sign-in), one after the other in a loop, while three
//! floods take turns: 400 concurrent sign-ins from 400 addresses for 400
//! unknown accounts; 200 downloads opened from one verified session and
//! never read; bursts of 50 parallel wrong answers on one link. It samples
//! the server's resident memory, and prints per phase the legitimate
//! operations' p50/p99, the responses by class, and the peak RSS; then one
//! line: `legit_p99_ms=X errors_5xx=N peak_rss_mib=N`.
//!
//! A 503 that carries `Retry-After` is deliberate load shedding, not an
//! error: it is counted apart (`shed`), and the legitimate clients wait as
//! told and try again (their latency includes the wait). Every other 5xx,
//! and every legitimate operation that did not succeed, is an error.
//!
//! Client addresses go in `X-Forwarded-For` (the server trusts 127.0.0.1 as
//! a proxy); all traffic goes to the loopback server only.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use reqwest::StatusCode;
use reqwest::redirect::Policy;
use sealpost::app::App;
use sealpost::audit::Actor;
use sealpost::config::Config;
use sealpost::deliveries::NewDelivery;
use sealpost::settings::Method;
use sealpost::staff::{Role, StaffEmail};
use sealpost::vault::{MessageMeta, PartKind, PartMeta};
use secrecy::{ExposeSecret, SecretString};

const AGENT_EMAIL: &str = "bench-agent@example.com";
const AGENT_PASSWORD: &str = "bench agent passphrase";
const ACCESS_CODE: &str = "Bench-Code-1";
const LEGIT_MESSAGES: usize = 400;
const LEGIT_ATTACHMENT: usize = 256 * 1024;
const STALL_ATTACHMENT: usize = 30 * 1024 * 1024;
const BURST_MESSAGES: usize = 12;

#[tokio::main]
async fn main() -> Result<()> {
    // reqwest is built without a provider of its own.
    sealpost::tls::install_crypto_provider();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("seed") => {
            let [_, dir, url, out] = args.as_slice() else {
                bail!("usage: abuse seed DATA_DIR PUBLIC_URL OUT");
            };
            seed(dir, url, out).await
        }
        Some("run") => {
            let (base, pid, file, secs) = match args.as_slice() {
                [_, base, pid, file] => (base, pid, file, 20),
                [_, base, pid, file, secs] => (base, pid, file, secs.parse()?),
                _ => bail!("usage: abuse run BASE_URL SERVER_PID SEED_FILE [PHASE_SECS]"),
            };
            run(base, pid.parse()?, file, secs).await
        }
        _ => bail!("usage: abuse seed … | abuse run …"),
    }
}

// --- seeding -------------------------------------------------------------

async fn seed(dir: &str, public_url: &str, out: &str) -> Result<()> {
    let vars = [("SEALPOST_DATA_DIR".to_owned(), dir.to_owned())];
    let app = App::open(Config::load(None, vars)?).await?;
    let sender = app
        .accounts
        .create(
            Actor::Cli,
            &StaffEmail::parse(AGENT_EMAIL)?,
            Role::Agent,
            SecretString::from(AGENT_PASSWORD),
        )
        .await?;
    let access_hash = app
        .hasher
        .hash_unchecked(SecretString::from(ACCESS_CODE))
        .await?;
    let mut lines = Vec::new();
    let add = |kind: &str, size: usize, i: usize| {
        let app = app.clone();
        let access_hash = access_hash.clone();
        let kind = kind.to_owned();
        async move {
            let url = seed_one(&app, sender, &access_hash, public_url, size, i).await?;
            anyhow::Ok(format!("{kind} {url}"))
        }
    };
    for i in 0..LEGIT_MESSAGES {
        lines.push(add("legit", LEGIT_ATTACHMENT, i).await?);
    }
    lines.push(add("stall", STALL_ATTACHMENT, LEGIT_MESSAGES).await?);
    for i in 0..BURST_MESSAGES {
        lines.push(add("burst", 1024, LEGIT_MESSAGES + 1 + i).await?);
    }
    std::fs::write(out, lines.join("\n") + "\n")?;
    app.db.close().await;
    Ok(())
}

async fn seed_one(
    app: &App,
    sender: sealpost::staff::StaffId,
    access_hash: &str,
    public_url: &str,
    size: usize,
    i: usize,
) -> Result<String> {
    let mut draft = app.vault.begin_message();
    let draft = tokio::task::spawn_blocking(move || -> Result<_> {
        draft.seal_part(
            PartKind::Body,
            &PartMeta {
                item: None,
                file_name: None,
                content_type: Some("text/plain; charset=utf-8".into()),
            },
            format!("Benchmark message {i}").as_bytes(),
        )?;
        let data = vec![b'x'; size];
        draft.seal_part(
            PartKind::Attachment,
            &PartMeta {
                item: None,
                file_name: Some(format!("statement-{i}.pdf")),
                content_type: Some("application/pdf".into()),
            },
            &data[..],
        )?;
        Ok(draft)
    })
    .await??;
    let address = format!("customer{i}@example.org");
    let meta = MessageMeta {
        recipient_address: Some(address.clone()),
        ..MessageMeta::default()
    };
    let id = draft.id();
    let expires_at = app.clock.now() + 7 * 24 * 3600;
    let sealed = app.vault.seal(draft, &meta)?;
    let mut tx = app.db.begin().await?;
    app.vault.commit(&mut tx, sealed).await?;
    let url = app
        .deliveries
        .insert(
            &mut tx,
            &NewDelivery {
                message_id: id,
                sender,
                expires_at,
                methods: vec![Method::AccessCode],
                access_code_hash: Some(access_hash.to_owned()),
                known_fact_hash: None,
                shred_after_pickup: false,
                allow_reply: false,
                conversation_id: None,
                is_request: false,
            },
            &address,
            public_url,
        )
        .await?;
    tx.commit().await?;
    Ok(url.expose_secret().to_owned())
}

// --- the run -------------------------------------------------------------

/// Responses seen, by class, across all traffic of a phase.
#[derive(Default)]
struct Counts {
    ok: AtomicU64,
    client_4xx: AtomicU64,
    shed_503: AtomicU64,
    errors_5xx: AtomicU64,
    transport: AtomicU64,
}

impl Counts {
    fn note(&self, r: &reqwest::Response) {
        let s = r.status();
        let counter = if s == StatusCode::SERVICE_UNAVAILABLE
            && r.headers().contains_key(reqwest::header::RETRY_AFTER)
        {
            &self.shed_503
        } else if s.is_server_error() {
            &self.errors_5xx
        } else if s.is_client_error() {
            &self.client_4xx
        } else {
            &self.ok
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// One phase's measurements.
#[derive(Default)]
struct Phase {
    counts: Counts,
    /// Legitimate operations: name → latencies in ms.
    legit: Mutex<HashMap<&'static str, Vec<f64>>>,
    legit_failed: AtomicU64,
    peak_rss_kib: AtomicU64,
}

struct Shared {
    base: String,
    phase: Mutex<Arc<Phase>>,
    legit_links: Mutex<Vec<String>>,
    stop: AtomicBool,
    next_ip: AtomicUsize,
}

impl Shared {
    fn phase(&self) -> Arc<Phase> {
        Arc::clone(&self.phase.lock().unwrap())
    }

    /// A fresh documentation-range address for one simulated client.
    fn client_ip(&self) -> String {
        let n = self.next_ip.fetch_add(1, Ordering::Relaxed);
        let [a, b] = u16::try_from(n % 65_000).unwrap().to_be_bytes();
        // 198.18.0.0/15 is reserved for benchmarks (RFC 2544); only a header.
        Ipv4Addr::new(198, 18 + (n / 65_000) as u8 % 2, a, b).to_string()
    }
}

/// A browser: its own cookies and its own client address.
struct Browser {
    http: reqwest::Client,
    ip: String,
    cookies: HashMap<String, String>,
}

impl Browser {
    fn new(shared: &Shared) -> Browser {
        Browser {
            http: reqwest::Client::builder()
                .redirect(Policy::none())
                .timeout(Duration::from_secs(120))
                .build()
                .unwrap(),
            ip: shared.client_ip(),
            cookies: HashMap::new(),
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn keep_cookies(&mut self, r: &reqwest::Response) {
        for v in r.headers().get_all(reqwest::header::SET_COOKIE) {
            if let Some((name, rest)) = v.to_str().unwrap_or_default().split_once('=') {
                let value = rest.split(';').next().unwrap_or_default();
                self.cookies.insert(name.to_owned(), value.to_owned());
            }
        }
    }

    async fn send(
        &mut self,
        counts: &Counts,
        req: reqwest::RequestBuilder,
    ) -> Option<reqwest::Response> {
        let req = req
            .header("x-forwarded-for", &self.ip)
            .header("sec-fetch-site", "same-origin")
            .header(reqwest::header::COOKIE, self.cookie_header());
        match req.send().await {
            Ok(r) => {
                counts.note(&r);
                self.keep_cookies(&r);
                Some(r)
            }
            Err(_) => {
                counts.transport.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    async fn get(&mut self, counts: &Counts, url: &str) -> Option<reqwest::Response> {
        let req = self.http.get(url);
        self.send(counts, req).await
    }

    async fn post(
        &mut self,
        counts: &Counts,
        url: &str,
        form: &[(&str, &str)],
    ) -> Option<reqwest::Response> {
        let req = self.http.post(url).form(form);
        self.send(counts, req).await
    }
}

fn hidden_csrf(page: &str) -> Option<String> {
    let at = page.find("name=\"csrf\" value=\"")? + "name=\"csrf\" value=\"".len();
    Some(page[at..].split('"').next()?.to_owned())
}

/// How long deliberate shedding asked us to wait, if that is what `r` is.
fn shed_wait(r: &reqwest::Response) -> Option<Duration> {
    if r.status() != StatusCode::SERVICE_UNAVAILABLE {
        return None;
    }
    let secs = r
        .headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .parse::<u64>()
        .ok()?;
    Some(Duration::from_secs(secs))
}

impl Browser {
    /// A legitimate step: after deliberate shedding it waits as told and
    /// tries again, as a person would after "busy, try again in a moment"
    /// (up to 20 times).
    async fn legit(
        &mut self,
        counts: &Counts,
        url: &str,
        form: Option<&[(&str, &str)]>,
    ) -> Option<reqwest::Response> {
        for _ in 0..20 {
            let r = match form {
                Some(form) => self.post(counts, url, form).await?,
                None => self.get(counts, url).await?,
            };
            match shed_wait(&r) {
                Some(wait) => tokio::time::sleep(wait).await,
                None => return Some(r),
            }
        }
        None
    }
}

/// Records one legitimate operation in the phase it started in.
fn record(phase: &Phase, name: &'static str, started: Instant, ok: bool) {
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    if ok {
        phase
            .legit
            .lock()
            .unwrap()
            .entry(name)
            .or_default()
            .push(ms);
    } else {
        phase.legit_failed.fetch_add(1, Ordering::Relaxed);
        eprintln!("legit {name} failed after {ms:.0} ms");
    }
}

/// The legitimate customer: visit, verify, read, download one attachment.
async fn customer(shared: &Shared) {
    let Some(link) = shared.legit_links.lock().unwrap().pop() else {
        return;
    };
    let mut b = Browser::new(shared);

    let p = shared.phase();
    let t = Instant::now();
    let r = b.legit(&p.counts, &link, None).await;
    let ok = r.is_some_and(|r| r.status() == StatusCode::OK);
    record(&p, "landing", t, ok);
    if !ok {
        return;
    }

    let p = shared.phase();
    let t = Instant::now();
    let r = b
        .legit(
            &p.counts,
            &format!("{link}/verify"),
            Some(&[("access_code", ACCESS_CODE)]),
        )
        .await;
    let location = r
        .filter(|r| r.status() == StatusCode::SEE_OTHER)
        .and_then(|r| {
            r.headers()
                .get(reqwest::header::LOCATION)?
                .to_str()
                .ok()
                .map(str::to_owned)
        })
        .filter(|l| l.starts_with("/pickup/"));
    record(&p, "verify", t, location.is_some());
    let Some(location) = location else { return };

    let p = shared.phase();
    let t = Instant::now();
    let r = b
        .legit(&p.counts, &format!("{}{location}", shared.base), None)
        .await;
    let mut file = None;
    if let Some(r) = r.filter(|r| r.status() == StatusCode::OK) {
        let page = r.text().await.unwrap_or_default();
        if let Some(at) = page.find("/files/") {
            let start = page[..at].rfind('"').map_or(0, |s| s + 1);
            let end = at + page[at..].find('"').unwrap_or(0);
            file = Some(format!("{}{}", shared.base, &page[start..end]));
        }
    }
    record(&p, "message", t, file.is_some());
    let Some(file) = file else { return };

    let p = shared.phase();
    let t = Instant::now();
    let ok = match b.legit(&p.counts, &file, None).await {
        Some(r) if r.status() == StatusCode::OK => r
            .bytes()
            .await
            .is_ok_and(|body| body.len() == LEGIT_ATTACHMENT),
        _ => false,
    };
    record(&p, "download", t, ok);
}

/// The legitimate agent: the sign-in page, then the sign-in, always in
/// the same browser (which keeps its cookies, as a real one does).
async fn agent(shared: &Shared, b: &mut Browser) {
    b.cookies
        .retain(|name, _| name.ends_with("sealpost-device"));
    let url = format!("{}/sign-in", shared.base);
    let p = shared.phase();
    let t = Instant::now();
    let csrf = match b.legit(&p.counts, &url, None).await {
        Some(r) => hidden_csrf(&r.text().await.unwrap_or_default()),
        None => None,
    };
    let ok = match csrf {
        Some(csrf) => b
            .legit(
                &p.counts,
                &url,
                Some(&[
                    ("csrf", csrf.as_str()),
                    ("email", AGENT_EMAIL),
                    ("password", AGENT_PASSWORD),
                ]),
            )
            .await
            .is_some_and(|r| r.status() == StatusCode::SEE_OTHER),
        None => false,
    };
    record(&p, "sign_in", t, ok);
}

/// The legitimate users, one operation after the other, until stopped.
async fn legit_loop(shared: Arc<Shared>) {
    let mut agent_browser = Browser::new(&shared);
    while !shared.stop.load(Ordering::Relaxed) {
        customer(&shared).await;
        agent(&shared, &mut agent_browser).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

async fn sample_rss(shared: Arc<Shared>, pid: u32) {
    while !shared.stop.load(Ordering::Relaxed) {
        if let Some(kib) = rss_kib(pid) {
            shared
                .phase()
                .peak_rss_kib
                .fetch_max(kib, Ordering::Relaxed);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// 400 browsers, each from its own address, signing in as unknown accounts
/// over and over until `until`.
async fn sign_in_flood(shared: Arc<Shared>, until: Instant) {
    let tasks: Vec<_> = (0..400)
        .map(|n| {
            let shared = Arc::clone(&shared);
            tokio::spawn(async move {
                let mut b = Browser::new(&shared);
                let url = format!("{}/sign-in", shared.base);
                let mut attempt = 0;
                while Instant::now() < until {
                    let p = shared.phase();
                    let Some(r) = b.get(&p.counts, &url).await else {
                        continue;
                    };
                    let csrf = hidden_csrf(&r.text().await.unwrap_or_default()).unwrap_or_default();
                    attempt += 1;
                    let email = format!("nobody{n}-{attempt}@example.net");
                    b.post(
                        &p.counts,
                        &url,
                        &[
                            ("csrf", csrf.as_str()),
                            ("email", email.as_str()),
                            ("password", "wrong password guess"),
                        ],
                    )
                    .await;
                }
            })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
}

/// One verified session opens 200 downloads of a 30 MiB attachment and
/// reads none of them until `until`.
async fn stalled_downloads(shared: Arc<Shared>, link: String, until: Instant) {
    let p = shared.phase();
    let mut b = Browser::new(&shared);
    let r = b
        .post(
            &p.counts,
            &format!("{link}/verify"),
            &[("access_code", ACCESS_CODE)],
        )
        .await;
    let Some(location) = r.and_then(|r| {
        r.headers()
            .get(reqwest::header::LOCATION)?
            .to_str()
            .ok()
            .map(str::to_owned)
    }) else {
        eprintln!("stall: could not verify the stall message");
        return;
    };
    let url = format!("{}{location}/files/1", shared.base);
    let b = Arc::new(tokio::sync::Mutex::new(b));
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let (b, url, p) = (Arc::clone(&b), url.clone(), Arc::clone(&p));
            tokio::spawn(async move {
                let (http, ip, cookies) = {
                    let b = b.lock().await;
                    (b.http.clone(), b.ip.clone(), b.cookie_header())
                };
                let r = http
                    .get(&url)
                    .header("x-forwarded-for", ip)
                    .header(reqwest::header::COOKIE, cookies)
                    .send()
                    .await;
                match r {
                    Ok(r) => {
                        p.counts.note(&r);
                        // Hold the response, read nothing.
                        tokio::time::sleep_until(until.into()).await;
                        drop(r);
                    }
                    Err(_) => {
                        p.counts.transport.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
}

/// Bursts of 50 parallel wrong answers, each burst on a fresh link, until
/// `until` or the links run out.
async fn wrong_answers(shared: Arc<Shared>, mut links: Vec<String>, until: Instant) {
    while Instant::now() < until {
        let Some(link) = links.pop() else { return };
        let p = shared.phase();
        let tasks: Vec<_> = (0..50)
            .map(|n| {
                let (shared, link, p) = (Arc::clone(&shared), link.clone(), Arc::clone(&p));
                tokio::spawn(async move {
                    let mut b = Browser::new(&shared);
                    let guess = format!("wrong-{n}");
                    b.post(
                        &p.counts,
                        &format!("{link}/verify"),
                        &[("access_code", guess.as_str())],
                    )
                    .await;
                })
            })
            .collect();
        for t in tasks {
            let _ = t.await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

async fn run(base: &str, pid: u32, seed_file: &str, secs: u64) -> Result<()> {
    let seeded = std::fs::read_to_string(seed_file).context("seed file")?;
    let mut by_kind: HashMap<&str, Vec<String>> = HashMap::new();
    for line in seeded.lines() {
        if let Some((kind, url)) = line.split_once(' ') {
            by_kind.entry(kind).or_default().push(url.to_owned());
        }
    }
    let take =
        |k: &str, by_kind: &mut HashMap<&str, Vec<String>>| by_kind.remove(k).unwrap_or_default();
    let legit = take("legit", &mut by_kind);
    let stall = take("stall", &mut by_kind).pop().context("no stall link")?;
    let burst = take("burst", &mut by_kind);

    let shared = Arc::new(Shared {
        base: base.trim_end_matches('/').to_owned(),
        phase: Mutex::new(Arc::new(Phase::default())),
        legit_links: Mutex::new(legit),
        stop: AtomicBool::new(false),
        next_ip: AtomicUsize::new(1),
    });
    let sampler = tokio::spawn(sample_rss(Arc::clone(&shared), pid));
    let legit = tokio::spawn(legit_loop(Arc::clone(&shared)));

    let phase_len = Duration::from_secs(secs);
    let mut results: Vec<(&str, Arc<Phase>)> = Vec::new();
    for name in [
        "quiet",
        "sign_in_flood",
        "stalled_downloads",
        "wrong_answers",
    ] {
        let phase = Arc::new(Phase::default());
        *shared.phase.lock().unwrap() = Arc::clone(&phase);
        let until = Instant::now() + phase_len;
        match name {
            "sign_in_flood" => sign_in_flood(Arc::clone(&shared), until).await,
            "stalled_downloads" => {
                stalled_downloads(Arc::clone(&shared), stall.clone(), until).await
            }
            "wrong_answers" => wrong_answers(Arc::clone(&shared), burst.clone(), until).await,
            _ => {}
        }
        tokio::time::sleep_until(until.into()).await;
        results.push((name, phase));
    }
    shared.stop.store(true, Ordering::Relaxed);
    let _ = legit.await;
    let _ = sampler.await;

    let mut all_legit = Vec::new();
    let mut errors = 0;
    let mut peak_kib = 0;
    for (name, p) in &results {
        let c = &p.counts;
        let failed = p.legit_failed.load(Ordering::Relaxed);
        let e5 = c.errors_5xx.load(Ordering::Relaxed);
        errors += e5 + failed;
        let peak = p.peak_rss_kib.load(Ordering::Relaxed);
        peak_kib = peak_kib.max(peak);
        println!(
            "phase {name}: responses ok={} 4xx={} shed_503={} errors_5xx={} transport_errors={} legit_failed={failed} peak_rss_mib={}",
            c.ok.load(Ordering::Relaxed),
            c.client_4xx.load(Ordering::Relaxed),
            c.shed_503.load(Ordering::Relaxed),
            e5,
            c.transport.load(Ordering::Relaxed),
            peak / 1024
        );
        let legit = p.legit.lock().unwrap();
        let mut ops: Vec<_> = legit.iter().collect();
        ops.sort_by_key(|(k, _)| **k);
        for (op, times) in ops {
            let mut t = times.clone();
            t.sort_by(f64::total_cmp);
            all_legit.extend_from_slice(&t);
            println!(
                "  legit {op:<9} n={:<4} p50_ms={:.0} p99_ms={:.0}",
                t.len(),
                percentile(&t, 0.5),
                percentile(&t, 0.99)
            );
        }
    }
    all_legit.sort_by(f64::total_cmp);
    println!(
        "legit_p99_ms={:.0} errors_5xx={errors} peak_rss_mib={}",
        percentile(&all_legit, 0.99),
        peak_kib / 1024
    );
    Ok(())
}
