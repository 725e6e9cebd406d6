//! Seeds a large, realistic history for `bench/growth.sh`, and times one
//! expiry pass. The database is the one the usual `SEALPOST_*` variables
//! name (`SEALPOST_DATA_DIR` for SQLite, `SEALPOST_DATABASE_URL` for
//! PostgreSQL), as for `sealpost serve`:
//!
//!   growth_seed seed COUNT FRESH PUBLIC_URL   -> prints FRESH links, one a line
//!   growth_seed expiry PASSES                 -> prints `first_ms=X best_ms=Y`
//!
//! `seed` makes COUNT messages, all sent by `bench-agent@example.com`
//! (password from `GROWTH_PASSWORD`, no second factor):
//!
//! 1. A few hundred template messages go through the real API (vault,
//!    deliveries, outbox) with a spread of verification methods and some
//!    attachments; a few are to `known-customer@example.org`, whose blind
//!    index only the vault can compute.
//! 2. A plan of COUNT messages is drawn (fixed seed, so every run and size
//!    has the same mix): created over the past year, with a realistic
//!    spread of outcomes (downloaded, expired, emailed, link visited,
//!    verified, a few locked, revoked, delivery failed, shredded after
//!    pickup). Expired, revoked and picked-up-and-shredded messages are
//!    stored shredded, as the expiry job and a revoke leave them. The
//!    newest FRESH messages are just-emailed with an unused link (for the
//!    customer-side figures); three are to the known address.
//! 3. SQL copies the templates' rows into the plan (`INSERT ... SELECT`,
//!    fresh ids, blob keys and mail ids; each copy a random blind index,
//!    a different customer), then the templates go.
//! 4. The audit log gets each message's events in time order through the
//!    real chain (`AuditLog::record` with the clock at the event's time),
//!    so `sealpost audit verify` checks a chain of realistic length.
//! 5. The FRESH links are issued through the real API and printed.
//!
//! No statistics are gathered (no `ANALYZE`): a database that was never
//! analysed is what Sealpost has unless it analyses itself.
//!
//! `expiry` opens the app and runs the expiry job's pass
//! (`Deliveries::shred_due`) PASSES times: the first pass after opening and
//! the best of the rest. On a seeded database nothing is due, so this is
//! the cost of finding that out, which every instance pays every minute.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use sealpost::app::App;
use sealpost::audit::{Action, Actor, Event};
use sealpost::clock::Clock;
use sealpost::config::Config;
use sealpost::deliveries::NewDelivery;
use sealpost::settings::Method;
use sealpost::staff::{Role, StaffEmail};
use sealpost::store::Backend;
use sealpost::vault::{MessageId, MessageMeta, PartKind, PartMeta};
use secrecy::{ExposeSecret, SecretString};
use uuid::Uuid;

const AGENT: &str = "bench-agent@example.com";
const KNOWN_ADDRESS: &str = "known-customer@example.org";
/// Messages to the known address (live, recent): what `?q=` finds.
const KNOWN_MESSAGES: usize = 3;
/// Templates made through the real API; the plan copies them.
const TEMPLATES: usize = 200;
/// Live locked messages at least: more than one page of the sent list.
const MIN_LOCKED: usize = 30;
/// `pickup::flow::LOCK_AFTER`: failures that lock a message.
const LOCK_AFTER: i64 = 10;
/// Plan rows per multi-row INSERT (within both drivers' bind limits).
const PLAN_BATCH: usize = 50;
/// Audit events per transaction.
const AUDIT_BATCH: usize = 5000;
const DAY: i64 = 24 * 3600;
/// The sample client address events carry (TEST-NET-1).
const STAFF_IP: [u8; 4] = [192, 0, 2, 10];
const CUSTOMER_IP: [u8; 4] = [198, 51, 100, 20];

/// A clock the seeder moves: each audit event is stamped with its time.
#[derive(Clone)]
struct SeedClock(Arc<AtomicI64>);

impl SeedClock {
    fn set(&self, at: i64) {
        self.0.store(at, Ordering::SeqCst);
    }
}

impl Clock for SeedClock {
    fn now(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

fn unix_now() -> Result<i64> {
    Ok(i64::try_from(
        SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs(),
    )?)
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["seed", count, fresh, public_url] => {
            seed(
                count.parse().context("COUNT")?,
                fresh.parse().context("FRESH")?,
                public_url,
            )
            .await
        }
        ["expiry", passes] => expiry(passes.parse().context("PASSES")?).await,
        _ => bail!("usage: growth_seed seed COUNT FRESH PUBLIC_URL | growth_seed expiry PASSES"),
    }
}

async fn open(clock: SeedClock) -> Result<App> {
    let config = Config::load(None, std::env::vars())?;
    Ok(App::open_with_clock(config, Arc::new(clock)).await?)
}

async fn expiry(passes: usize) -> Result<()> {
    let clock = SeedClock(Arc::new(AtomicI64::new(unix_now()?)));
    let app = open(clock.clone()).await?;
    let mut first = None;
    let mut best = f64::INFINITY;
    for _ in 0..passes.max(2) {
        clock.set(unix_now()?);
        let t = Instant::now();
        let shredded = app.deliveries.shred_due().await?;
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        if shredded > 0 {
            eprintln!("expiry pass shredded {shredded} message(s); the figure includes that work");
        }
        match first {
            None => first = Some(ms),
            Some(_) => best = best.min(ms),
        }
    }
    app.db.close().await;
    println!("first_ms={:.2} best_ms={best:.2}", first.unwrap_or(0.0));
    Ok(())
}

/// splitmix64: a small, fixed-seed generator, so every run draws the same plan.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [lo, hi] (hi >= lo).
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        let width = u64::try_from(hi - lo + 1).unwrap_or(1).max(1);
        lo + i64::try_from(self.next() % width).unwrap_or(0)
    }

    fn bytes32(&mut self) -> Vec<u8> {
        (0..4).flat_map(|_| self.next().to_le_bytes()).collect()
    }

    /// Picks by weight.
    fn pick<T: Copy>(&mut self, table: &[(u32, T)]) -> T {
        let total: u32 = table.iter().map(|(w, _)| w).sum();
        let mut n = u32::try_from(self.next() % u64::from(total.max(1))).unwrap_or(0);
        for (w, v) in table {
            if n < *w {
                return *v;
            }
            n -= w;
        }
        table[0].1
    }
}

/// What became of a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    /// Live, emailed, link unused (the newest ones carry the bench's links).
    Emailed,
    DeliveryFailed,
    LinkVisited,
    Verified,
    Downloaded,
    /// Downloaded, "shred after first pickup", and shredded.
    PickedUpShredded,
    Locked,
    /// Expired and shredded by the expiry job, having got this far.
    Expired(Reached),
    Revoked,
}

/// How far an expired message had got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reached {
    Emailed,
    DeliveryFailed,
    LinkVisited,
    Verified,
    Downloaded,
    Locked,
}

/// The mix of a year's history: mostly downloaded, expired and emailed.
const OUTCOMES: [(u32, Outcome); 14] = [
    (315, Outcome::Downloaded),
    (35, Outcome::PickedUpShredded),
    (200, Outcome::Emailed),
    (50, Outcome::LinkVisited),
    (30, Outcome::Verified),
    (20, Outcome::DeliveryFailed),
    (20, Outcome::Locked),
    (30, Outcome::Revoked),
    (150, Outcome::Expired(Reached::Downloaded)),
    (80, Outcome::Expired(Reached::Emailed)),
    (30, Outcome::Expired(Reached::LinkVisited)),
    (10, Outcome::Expired(Reached::Verified)),
    (20, Outcome::Expired(Reached::DeliveryFailed)),
    (10, Outcome::Expired(Reached::Locked)),
];

/// One template made through the API.
struct Template {
    id: MessageId,
    methods: Vec<Method>,
    parts: usize,
    known: bool,
}

/// One planned message: every time and state the copy gets, and the
/// events its audit trail needs.
struct Planned {
    id: MessageId,
    src: usize,
    fresh: bool,
    created_at: i64,
    expires_at: i64,
    status: &'static str,
    status_at: i64,
    shred_after_pickup: bool,
    locked_at: Option<i64>,
    revoked_at: Option<i64>,
    failures: i64,
    link_consumed_at: Option<i64>,
    shred_at: Option<i64>,
    shredded_at: Option<i64>,
    /// A copy of a known-address template keeps its blind index.
    keep_index: bool,
    recipient_index: Option<Vec<u8>>,
    link_hash: Option<Vec<u8>>,
    mail_at: i64,
    mail_failed: bool,
    visited_at: Option<i64>,
    code_at: Option<i64>,
    verified_at: Option<i64>,
    downloaded_at: Option<i64>,
    /// Failed verifications, each with its time.
    failed_at: Vec<i64>,
}

impl Planned {
    fn live(&self) -> bool {
        self.shredded_at.is_none()
    }
}

async fn seed(count: usize, fresh: usize, public_url: &str) -> Result<()> {
    let password =
        std::env::var("GROWTH_PASSWORD").unwrap_or_else(|_| "growth bench passphrase".to_owned());
    let now = unix_now()?;
    let year_ago = now - 366 * DAY;
    let clock = SeedClock(Arc::new(AtomicI64::new(year_ago)));
    let app = open(clock.clone()).await?;
    let started = Instant::now();
    let step = |what: &str| eprintln!("[{:6.1} s] {what}", started.elapsed().as_secs_f64());

    let email = StaffEmail::parse(AGENT)?;
    let sender = match app.accounts.find(&email).await {
        Ok(a) => a.id,
        Err(_) => {
            app.accounts
                .create(
                    Actor::Cli,
                    &email,
                    Role::Agent,
                    SecretString::from(password),
                )
                .await?
        }
    };
    let templates = make_templates(&app, sender, year_ago).await?;
    step(&format!(
        "{} templates sealed through the vault",
        templates.len()
    ));

    let plan = draw_plan(count, fresh, now, &templates);
    let backend = app.db.backend();
    write_plan(&app, backend, &plan, &templates).await?;
    step(&format!("plan of {} messages written", plan.len()));
    copy_rows(&app).await?;
    step("rows copied from the templates");
    drop_templates(&app).await?;
    step("templates removed");

    let events = audit_trail(&plan, &templates, &sender.to_string(), year_ago, now);
    let total = events.len();
    for (n, chunk) in events.chunks(AUDIT_BATCH).enumerate() {
        let mut tx = app.db.begin().await?;
        for (at, event) in chunk {
            clock.set(*at);
            app.audit.record(&mut tx, event).await?;
        }
        tx.commit().await?;
        if (n + 1) % 20 == 0 {
            step(&format!(
                "audit events: {} of {total}",
                (n + 1) * AUDIT_BATCH
            ));
        }
    }
    step(&format!("{total} audit events chained"));

    clock.set(now);
    let fresh_ids: Vec<MessageId> = plan.iter().filter(|p| p.fresh).map(|p| p.id).collect();
    let mut links = Vec::with_capacity(fresh_ids.len());
    for chunk in fresh_ids.chunks(200) {
        let mut tx = app.db.begin().await?;
        for id in chunk {
            let url = app.deliveries.issue_link(&mut tx, *id, public_url).await?;
            links.push(url.expose_secret().to_owned());
        }
        tx.commit().await?;
    }
    // Orphaned template blobs (their rows are gone); copies have none.
    app.vault.sweep(Duration::ZERO).await?;
    app.db.close().await;
    step(&format!("{} fresh links issued; done", links.len()));
    println!("{}", links.join("\n"));
    Ok(())
}

/// Templates through the real API: a spread of verification methods, some
/// attachments, internal titles; the first few to the known address.
async fn make_templates(
    app: &App,
    sender: sealpost::ids::StaffId,
    at: i64,
) -> Result<Vec<Template>> {
    // argon2 once per distinct answer: copies share the hash string.
    let access_hash = app
        .hasher
        .hash_unchecked(SecretString::from("4821-7730"))
        .await?;
    let fact_hash = app
        .hasher
        .hash_unchecked(SecretString::from("4471"))
        .await?;
    let spread: [&[Method]; 5] = [
        &[Method::AccessCode],
        &[Method::EmailCode],
        &[Method::AccessCode],
        &[Method::KnownFact, Method::EmailCode],
        &[Method::AccessCode, Method::KnownFact],
    ];
    let mut out = Vec::with_capacity(TEMPLATES);
    for i in 0..TEMPLATES {
        let known = i < KNOWN_MESSAGES;
        let methods = spread[i % spread.len()].to_vec();
        let attachment = i % 3 == 1;
        let mut draft = app.vault.begin_message();
        let body = format!(
            "Dear customer,\n\nplease find the documents for case {} attached.\n\nKind regards",
            10_000 + i
        );
        let draft = tokio::task::spawn_blocking(move || -> Result<_> {
            let text = PartMeta {
                item: None,
                file_name: None,
                content_type: Some("text/plain; charset=utf-8".into()),
            };
            draft.seal_part(PartKind::Body, &text, body.as_bytes())?;
            if attachment {
                let pdf = PartMeta {
                    item: None,
                    file_name: Some(format!("statement-{i}.pdf")),
                    content_type: Some("application/pdf".into()),
                };
                draft.seal_part(PartKind::Attachment, &pdf, &[0x25u8; 4096][..])?;
            }
            Ok(draft)
        })
        .await??;
        let address = if known {
            KNOWN_ADDRESS.to_owned()
        } else {
            format!("customer{i}@example.org")
        };
        let meta = MessageMeta {
            items: Vec::new(),
            recipient_address: Some(address.clone()),
            recipient_phone: (i % 4 == 0).then(|| format!("+44 20 7946 {:04}", i)),
            title: (i % 2 == 0).then(|| format!("Case {} statement", 10_000 + i)),
            reference: None,
        };
        let id = draft.id();
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
                    expires_at: at + 7 * DAY,
                    methods: methods.clone(),
                    access_code_hash: methods
                        .contains(&Method::AccessCode)
                        .then(|| access_hash.clone()),
                    known_fact_hash: methods
                        .contains(&Method::KnownFact)
                        .then(|| fact_hash.clone()),
                    shred_after_pickup: false,
                    allow_reply: false,
                    conversation_id: None,
                    is_request: false,
                },
                &address,
                "http://template",
            )
            .await?;
        app.outbox
            .enqueue(
                &mut tx,
                &address,
                &sealpost::mail::Mail::PickupLink {
                    url: url.expose_secret().to_owned(),
                    expires_at: at + 7 * DAY,
                },
                Some(id),
            )
            .await?;
        tx.commit().await?;
        out.push(Template {
            id,
            methods,
            parts: 1 + usize::from(attachment),
            known,
        });
    }
    Ok(out)
}

/// Draws COUNT messages: the newest FRESH just emailed, three to the known
/// address in the last weeks, the rest spread over the year.
fn draw_plan(count: usize, fresh: usize, now: i64, templates: &[Template]) -> Vec<Planned> {
    let mut rng = Rng(0x5EA1_9057);
    let known: Vec<usize> = (0..templates.len())
        .filter(|&i| templates[i].known)
        .collect();
    let others: Vec<usize> = (0..templates.len())
        .filter(|&i| !templates[i].known)
        .collect();
    let known_count = known.len().min(count);
    let fresh = fresh.min(count - known_count);
    let mut plan = Vec::with_capacity(count);
    for n in 0..count {
        let (src, created_at, outcome, is_fresh) = if n < fresh {
            // Sent in the last hours, one every two minutes.
            let src = others[n % others.len()];
            (
                src,
                now - 120 * (i64::try_from(n).unwrap_or(0) + 1),
                Outcome::Emailed,
                true,
            )
        } else if n < fresh + known_count {
            let k = n - fresh;
            let outcome = [Outcome::Downloaded, Outcome::Emailed, Outcome::Verified][k % 3];
            (known[k], now - [1, 6, 20][k % 3] * DAY, outcome, false)
        } else {
            let src = others[usize::try_from(rng.next()).unwrap_or(0) % others.len()];
            // A full page of live locked messages at every size, so the
            // locked filter's pages compared do the same work (1,000
            // messages' 2 % would fill only part of one).
            let outcome = if n < fresh + known_count + MIN_LOCKED {
                Outcome::Locked
            } else {
                rng.pick(&OUTCOMES)
            };
            let oldest = now - 365 * DAY;
            let created = match outcome {
                // Expired: sent at least two days ago.
                Outcome::Expired(_) => rng.range(oldest, now - 2 * DAY),
                _ => rng.range(oldest, now - 3600),
            };
            (src, created, outcome, false)
        };
        plan.push(plan_one(
            &mut rng, now, templates, src, created_at, outcome, is_fresh,
        ));
    }
    plan
}

fn plan_one(
    rng: &mut Rng,
    now: i64,
    templates: &[Template],
    src: usize,
    created_at: i64,
    outcome: Outcome,
    fresh: bool,
) -> Planned {
    let t = &templates[src];
    let email_code = t.methods.contains(&Method::EmailCode);
    let expires_at = match outcome {
        Outcome::Expired(_) => {
            let lifetime = rng.pick(&[(1u32, DAY), (6, 7 * DAY), (2, 14 * DAY), (1, 30 * DAY)]);
            (created_at + lifetime).min(now - rng.range(120, DAY))
        }
        _ if fresh => created_at + 7 * DAY,
        // Live: at least two hours left, so nothing expires during the bench.
        _ => now + rng.range(2 * 3600, 30 * DAY),
    };
    let span = (expires_at.min(now) - created_at).max(60);
    let at = |f: f64| created_at + (span as f64 * f) as i64;
    let reached = match outcome {
        Outcome::Expired(r) => r,
        Outcome::Emailed | Outcome::Revoked => Reached::Emailed,
        Outcome::DeliveryFailed => Reached::DeliveryFailed,
        Outcome::LinkVisited => Reached::LinkVisited,
        Outcome::Verified => Reached::Verified,
        Outcome::Downloaded | Outcome::PickedUpShredded => Reached::Downloaded,
        Outcome::Locked => Reached::Locked,
    };
    let mut p = Planned {
        id: MessageId::new(),
        src,
        fresh,
        created_at,
        expires_at,
        status: "emailed",
        status_at: created_at,
        shred_after_pickup: outcome == Outcome::PickedUpShredded,
        locked_at: None,
        revoked_at: None,
        failures: 0,
        link_consumed_at: None,
        shred_at: None,
        shredded_at: None,
        keep_index: t.known,
        recipient_index: None,
        link_hash: None,
        mail_at: at(0.002),
        mail_failed: reached == Reached::DeliveryFailed,
        visited_at: None,
        code_at: None,
        verified_at: None,
        downloaded_at: None,
        failed_at: Vec::new(),
    };
    p.status_at = p.mail_at;
    if p.mail_failed {
        p.status = "delivery_failed";
    }
    let visited = matches!(
        reached,
        Reached::LinkVisited | Reached::Verified | Reached::Downloaded | Reached::Locked
    );
    if visited {
        let v = at(0.02 + 0.3 * rng.unit());
        p.visited_at = Some(v);
        p.status = "link_visited";
        p.status_at = v;
        let step = (span / 200).max(1);
        if email_code {
            p.code_at = Some(v + step);
        }
        let wrong = match reached {
            Reached::Locked => LOCK_AFTER,
            _ => rng.pick(&[(8u32, 0i64), (2, 1), (1, 2)]),
        };
        for k in 0..wrong {
            p.failed_at.push(v + step * (2 + k));
        }
        p.failures = wrong;
        let after = v + step * (3 + wrong);
        if reached == Reached::Locked {
            p.locked_at = Some(after);
        }
        if matches!(reached, Reached::Verified | Reached::Downloaded) {
            p.verified_at = Some(after);
            p.link_consumed_at = Some(after);
            p.status = "verified";
            p.status_at = after;
        }
        if reached == Reached::Downloaded {
            let d = after + step;
            p.downloaded_at = Some(d);
            p.status = "downloaded";
            p.status_at = d;
        }
    }
    match outcome {
        Outcome::Expired(_) => p.shredded_at = Some(expires_at + rng.range(1, 60)),
        Outcome::Revoked => {
            let r = at(0.1 + 0.8 * rng.unit());
            p.revoked_at = Some(r);
            p.shredded_at = Some(r);
        }
        Outcome::PickedUpShredded => {
            let d = p.downloaded_at.unwrap_or(created_at);
            let s = d + 3600.min((now - d) / 2);
            p.shred_at = Some(s);
            p.shredded_at = Some(s + rng.range(1, 60).min((now - s).max(0)));
        }
        _ => {}
    }
    if p.live() {
        p.recipient_index = (!p.keep_index).then(|| rng.bytes32());
        p.link_hash = Some(rng.bytes32());
    }
    p
}

/// The plan as a table, so the copies are plain `INSERT ... SELECT`s.
async fn write_plan(
    app: &App,
    backend: Backend,
    plan: &[Planned],
    templates: &[Template],
) -> Result<()> {
    let blob = match backend {
        Backend::Sqlite => "BLOB",
        Backend::Postgres => "BYTEA",
    };
    // One transaction: on SQLite every commit is an fsync.
    let mut tx = app.db.begin().await?;
    sqlx::query("DROP TABLE IF EXISTS growth_plan")
        .execute(&mut *tx)
        .await?;
    sqlx::query(&format!(
        "CREATE TABLE growth_plan (
            n BIGINT NOT NULL, id TEXT NOT NULL, src TEXT NOT NULL,
            created_at BIGINT NOT NULL, expires_at BIGINT NOT NULL,
            status TEXT NOT NULL, status_at BIGINT NOT NULL, shred_after_pickup BIGINT NOT NULL,
            locked_at BIGINT, revoked_at BIGINT, failures BIGINT NOT NULL,
            link_consumed_at BIGINT, shred_at BIGINT, shredded_at BIGINT,
            keep_index BIGINT NOT NULL, recipient_index {blob}, link_hash {blob},
            part0 TEXT NOT NULL, blob0 TEXT NOT NULL, part1 TEXT NOT NULL, blob1 TEXT NOT NULL,
            mail_id TEXT NOT NULL, mail_at BIGINT NOT NULL, mail_failed BIGINT NOT NULL,
            code_id TEXT, code_hash {blob}, code_at BIGINT, code_used_at BIGINT)"
    ))
    .execute(&mut *tx)
    .await?;
    let host: String = sqlx::query_scalar("SELECT mail_message_id FROM outbox LIMIT 1")
        .fetch_one(&mut *tx)
        .await?;
    let host = host
        .rsplit_once('@')
        .map_or("sealpost.invalid", |(_, h)| h.trim_end_matches('>'))
        .to_owned();
    const COLUMNS: usize = 28;
    let mut rng = Rng(0xC0DE);
    for (b, chunk) in plan.chunks(PLAN_BATCH).enumerate() {
        let rows: Vec<String> = (0..chunk.len())
            .map(|r| {
                let cells: Vec<String> = (1..=COLUMNS)
                    .map(|c| format!("${}", r * COLUMNS + c))
                    .collect();
                format!("({})", cells.join(", "))
            })
            .collect();
        let sql = format!("INSERT INTO growth_plan VALUES {}", rows.join(", "));
        let mut q = sqlx::query(&sql);
        for (r, p) in chunk.iter().enumerate() {
            let n = i64::try_from(b * PLAN_BATCH + r)?;
            let hex = |u: Uuid| u.simple().to_string();
            // An email code was sent to a live message: one code row, used
            // if it verified (a shred deletes the codes).
            let code = p.code_at.filter(|_| p.live());
            q = q
                .bind(n)
                .bind(p.id.to_string())
                .bind(templates[p.src].id.to_string())
                .bind(p.created_at)
                .bind(p.expires_at)
                .bind(p.status)
                .bind(p.status_at)
                .bind(i64::from(p.shred_after_pickup))
                .bind(p.locked_at)
                .bind(p.revoked_at)
                .bind(p.failures)
                .bind(p.link_consumed_at)
                .bind(p.shred_at)
                .bind(p.shredded_at)
                .bind(i64::from(p.keep_index))
                .bind(p.recipient_index.clone())
                .bind(p.link_hash.clone())
                .bind(Uuid::new_v4().to_string())
                .bind(hex(Uuid::new_v4()))
                .bind(Uuid::new_v4().to_string())
                .bind(hex(Uuid::new_v4()))
                .bind(format!("<{}@{host}>", Uuid::new_v4()))
                .bind(p.mail_at)
                .bind(i64::from(p.mail_failed))
                .bind(code.map(|_| Uuid::new_v4().to_string()))
                .bind(code.map(|_| rng.bytes32()))
                .bind(code)
                .bind(code.and(p.verified_at));
        }
        q.execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Copies the templates' rows into the plan, in time order (so outbox ids
/// and physical order follow time, as they would have).
async fn copy_rows(app: &App) -> Result<()> {
    let statements = [
        "INSERT INTO messages (id, recipient, escrow_recipients, recipient_index, sealed_meta,
             part_count, plain_size, created_at, shredded_at)
         SELECT p.id, m.recipient, m.escrow_recipients,
             CASE WHEN p.shredded_at IS NOT NULL THEN NULL
                  WHEN p.keep_index = 1 THEN m.recipient_index ELSE p.recipient_index END,
             CASE WHEN p.shredded_at IS NULL THEN m.sealed_meta END,
             m.part_count, m.plain_size, p.created_at, p.shredded_at
         FROM growth_plan p JOIN messages m ON m.id = p.src ORDER BY p.created_at",
        "INSERT INTO message_keys (message_id, master_key_id, wrapped_identity)
         SELECT p.id, k.master_key_id, k.wrapped_identity
         FROM growth_plan p JOIN message_keys k ON k.message_id = p.src
         WHERE p.shredded_at IS NULL ORDER BY p.created_at",
        "INSERT INTO message_parts (id, message_id, position, kind, blob_key, plain_size,
             cipher_size, sealed_meta)
         SELECT CASE WHEN mp.position = 0 THEN p.part0 ELSE p.part1 END, p.id, mp.position,
             mp.kind, CASE WHEN mp.position = 0 THEN p.blob0 ELSE p.blob1 END,
             mp.plain_size, mp.cipher_size, mp.sealed_meta
         FROM growth_plan p JOIN message_parts mp ON mp.message_id = p.src
         WHERE p.shredded_at IS NULL ORDER BY p.created_at, mp.position",
        "INSERT INTO deliveries (message_id, sender_id, created_at, expires_at, verification,
             access_code_hash, known_fact_hash, shred_after_pickup, status, status_at,
             link_generation, locked_at, revoked_at, link_hash, sealed_recipient,
             link_consumed_at, failures, shred_at, shredded_at)
         SELECT p.id, d.sender_id, p.created_at, p.expires_at, d.verification,
             CASE WHEN p.shredded_at IS NULL THEN d.access_code_hash END,
             CASE WHEN p.shredded_at IS NULL THEN d.known_fact_hash END,
             p.shred_after_pickup, p.status, p.status_at, 1, p.locked_at, p.revoked_at,
             p.link_hash, CASE WHEN p.shredded_at IS NULL THEN d.sealed_recipient END,
             p.link_consumed_at, p.failures, p.shred_at, p.shredded_at
         FROM growth_plan p JOIN deliveries d ON d.message_id = p.src ORDER BY p.created_at",
        "INSERT INTO outbox (kind, message_id, payload, mail_message_id, created_at, attempts,
             next_attempt_at, sent_at, failed_at, last_error)
         SELECT o.kind, p.id, NULL, p.mail_id, p.created_at, 1, p.created_at,
             CASE WHEN p.mail_failed = 0 THEN p.mail_at END,
             CASE WHEN p.mail_failed = 1 THEN p.mail_at END,
             CASE WHEN p.mail_failed = 1 THEN 'smtp_550' END
         FROM growth_plan p JOIN outbox o ON o.message_id = p.src ORDER BY p.created_at",
        "INSERT INTO pickup_codes (id, message_id, code_hash, created_at, expires_at,
             wrong_guesses, used_at)
         SELECT p.code_id, p.id, p.code_hash, p.code_at, p.code_at + 600, 0, p.code_used_at
         FROM growth_plan p WHERE p.code_id IS NOT NULL ORDER BY p.created_at",
    ];
    let mut tx = app.db.begin().await?;
    for sql in statements {
        sqlx::query(sql).execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// The templates' rows go (their blobs with the sweep at the end); the plan too.
async fn drop_templates(app: &App) -> Result<()> {
    let templates = "(SELECT DISTINCT src FROM growth_plan)";
    let mut tx = app.db.begin().await?;
    for (table, column) in [
        ("outbox", "message_id"),
        ("pickup_codes", "message_id"),
        ("deliveries", "message_id"),
        ("message_parts", "message_id"),
        ("message_keys", "message_id"),
        ("messages", "id"),
    ] {
        sqlx::query(&format!(
            "DELETE FROM {table} WHERE {column} IN {templates}"
        ))
        .execute(&mut *tx)
        .await?;
    }
    sqlx::query("DROP TABLE growth_plan")
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

/// Every planned message's events, and a daily sign-in, in time order.
fn audit_trail(
    plan: &[Planned],
    templates: &[Template],
    sender: &str,
    start: i64,
    now: i64,
) -> Vec<(i64, Event)> {
    let staff = || Actor::Staff(sender.to_owned());
    let staff_ip = Some(std::net::IpAddr::from(STAFF_IP));
    let customer_ip = Some(std::net::IpAddr::from(CUSTOMER_IP));
    let mut events: Vec<(i64, Event)> = Vec::with_capacity(plan.len() * 5);
    let mut day = start + DAY;
    while day < now {
        events.push((day, Event::new(staff(), Action::SignedIn).ip(staff_ip)));
        day += DAY;
    }
    let mut outbox_id = 0i64;
    for p in plan {
        let id = p.id;
        let t = &templates[p.src];
        let methods: Vec<&str> = t.methods.iter().map(|m| m.as_str()).collect();
        outbox_id += 1;
        events.push((
            p.created_at,
            Event::new(staff(), Action::MessageSent)
                .message(id)
                .ip(staff_ip)
                .detail(serde_json::json!({
                    "attachments": t.parts - 1,
                    "methods": methods,
                    "expires_at": p.expires_at,
                    "shred_after_pickup": p.shred_after_pickup,
                })),
        ));
        let mail = if p.mail_failed {
            Action::MailFailed
        } else {
            Action::MailSent
        };
        events.push((
            p.mail_at,
            Event::new(Actor::System, mail).message(id).detail(
                serde_json::json!({ "outbox_id": outbox_id, "kind": "pickup_link", "attempts": 1 }),
            ),
        ));
        let customer = |action| {
            Event::new(Actor::Customer, action)
                .message(id)
                .ip(customer_ip)
        };
        if let Some(v) = p.visited_at {
            events.push((
                v,
                Event::new(Actor::Anonymous, Action::LinkVisited)
                    .message(id)
                    .detail(serde_json::json!({ "agent": "browser" })),
            ));
        }
        if let Some(c) = p.code_at {
            events.push((c, customer(Action::CodeSent)));
        }
        for f in &p.failed_at {
            events.push((*f, customer(Action::VerificationFailed)));
        }
        if let Some(l) = p.locked_at {
            events.push((l, customer(Action::MessageLocked)));
        }
        if let Some(v) = p.verified_at {
            events.push((v, customer(Action::Verified)));
        }
        if let Some(d) = p.downloaded_at {
            events.push((d, customer(Action::Downloaded)));
        }
        if let Some(r) = p.revoked_at {
            events.push((
                r,
                Event::new(staff(), Action::MessageRevoked)
                    .message(id)
                    .ip(staff_ip)
                    .detail(serde_json::json!({ "cancelled_mail": 0 })),
            ));
        } else if let Some(s) = p.shredded_at {
            let reason = if p.shred_after_pickup {
                "picked_up"
            } else {
                "expired"
            };
            events.push((
                s,
                Event::new(Actor::System, Action::MessageShredded)
                    .message(id)
                    .detail(serde_json::json!({ "reason": reason, "cancelled_mail": 0 })),
            ));
        }
    }
    // Stable: a message's events at the same second stay in order.
    events.sort_by_key(|(at, _)| *at);
    events
}
