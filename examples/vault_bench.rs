//! Drives the vault's public API for `bench/vault.sh`: one process per
//! operation so the script can measure wall time and peak RSS of each.
//!
//!   vault_bench init STATE_DIR              -> first-run setup (key file, schema)
//!   vault_bench seal STATE_DIR INPUT        -> prints the message id
//!   vault_bench open STATE_DIR MESSAGE_ID OUTPUT
//!
//! STATE_DIR holds a SQLite database, the blob folder and the master key.
//! Sealing includes every fsync and the database commit; opening writes the
//! plaintext to OUTPUT and fsyncs it, as `age -d -o OUTPUT` followed by
//! `sync OUTPUT` does. The input file is read, and the output written, on
//! helper threads, as the server reads uploads and writes downloads on other
//! threads than the one running the cipher.

use std::fs::File;
use std::path::Path;
use std::str::FromStr;

use anyhow::{Context, Result, bail};
use sealpost::app::App;
use sealpost::config::Config;
use sealpost::vault::{MessageId, MessageMeta, PartKind, PartMeta};

fn config(state: &Path) -> Result<Config> {
    let vars = [("SEALPOST_DATA_DIR".to_owned(), state.display().to_string())];
    Ok(Config::load(None, vars)?)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["init", state] => {
            App::open(config(Path::new(state))?).await?.db.close().await;
        }
        ["seal", state, input] => {
            let app = App::open(config(Path::new(state))?).await?;
            let vault = app.vault.clone();
            let input = input.to_string();
            let draft = tokio::task::spawn_blocking(move || -> Result<_> {
                let mut draft = vault.begin_message();
                let file = File::open(&input).with_context(|| format!("open {input}"))?;
                draft.seal_part(
                    PartKind::Attachment,
                    &PartMeta::default(),
                    sealpost::vault::PipelinedReader::new(file)?,
                )?;
                Ok(draft)
            })
            .await??;
            let sealed = app.vault.seal(draft, &MessageMeta::default())?;
            let mut tx = app.db.begin().await?;
            let id = app.vault.commit(&mut tx, sealed).await?;
            tx.commit().await?;
            println!("{id}");
        }
        ["open", state, id, output] => {
            let app = App::open(config(Path::new(state))?).await?;
            let id = MessageId::from_str(id)?;
            let key = app.vault.unlock(id).await?;
            let part = app
                .vault
                .parts(id)
                .await?
                .into_iter()
                .next()
                .context("no part")?;
            let output = output.to_string();
            let vault = app.vault.clone();
            tokio::task::spawn_blocking(move || -> Result<()> {
                let out = File::create(&output)?;
                let mut w = sealpost::vault::PipelinedWriter::new(out)?;
                vault.open_part(&key, &part)?.copy_to(&mut w)?;
                w.finish()?.sync_all()?;
                Ok(())
            })
            .await??;
        }
        _ => bail!(
            "usage: vault_bench init STATE_DIR | seal STATE_DIR INPUT | open STATE_DIR MESSAGE_ID OUTPUT"
        ),
    }
    Ok(())
}
