//! Seeds messages for `bench/pickup.sh` through the public API (vault,
//! deliveries, links), the way compose stores them, without HTTP:
//!
//!   pickup_seed STATE_DIR COUNT PUBLIC_URL   -> prints one link per line
//!
//! Each message has a short body, expires in 7 days and asks for an access
//! code, so visiting a link renders the full landing page; its pickup email
//! is queued in the outbox, for the server's worker to send.

use std::path::Path;

use anyhow::{Context, Result, bail};
use sealpost::app::App;
use sealpost::audit::Actor;
use sealpost::config::Config;
use sealpost::deliveries::NewDelivery;
use sealpost::settings::Method;
use sealpost::staff::{Role, StaffEmail};
use sealpost::vault::{MessageMeta, PartKind, PartMeta};
use secrecy::{ExposeSecret, SecretString};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [state, count, public_url] = args.as_slice() else {
        bail!("usage: pickup_seed STATE_DIR COUNT PUBLIC_URL");
    };
    let count: usize = count.parse().context("COUNT")?;
    let vars = [(
        "SEALPOST_DATA_DIR".to_owned(),
        Path::new(state).display().to_string(),
    )];
    let app = App::open(Config::load(None, vars)?).await?;
    let email = StaffEmail::parse("bench-agent@example.com")?;
    let sender = match app.accounts.find(&email).await {
        Ok(a) => a.id,
        Err(_) => {
            app.accounts
                .create(
                    Actor::Cli,
                    &email,
                    Role::Agent,
                    SecretString::from("bench agent passphrase"),
                )
                .await?
        }
    };
    let access_hash = app
        .hasher
        .hash_unchecked(SecretString::from("Bench-Code-1"))
        .await?;
    for i in 0..count {
        let mut draft = app.vault.begin_message();
        let body = format!("Benchmark message {i}");
        let draft = tokio::task::spawn_blocking(move || {
            draft
                .seal_part(
                    PartKind::Body,
                    &PartMeta {
                        file_name: None,
                        content_type: Some("text/plain; charset=utf-8".into()),
                        item: None,
                    },
                    body.as_bytes(),
                )
                .map(|_| draft)
        })
        .await??;
        let address = format!("customer{i}@example.org");
        let meta = MessageMeta {
            recipient_address: Some(address.clone()),
            ..MessageMeta::default()
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
                    expires_at: app.clock.now() + 7 * 24 * 3600,
                    methods: vec![Method::AccessCode],
                    access_code_hash: Some(access_hash.clone()),
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
        // The notification, queued with the message as compose does.
        app.outbox
            .enqueue(
                &mut tx,
                &address,
                &sealpost::mail::Mail::PickupLink {
                    url: url.expose_secret().to_owned(),
                    expires_at: app.clock.now() + 7 * 24 * 3600,
                },
                Some(id),
            )
            .await?;
        tx.commit().await?;
        println!("{}", url.expose_secret());
    }
    app.db.close().await;
    Ok(())
}
