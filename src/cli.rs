//! The command line: `sealpost serve | migrate | config | keys … | export … | sweep`
//! on this installation, and `sealpost send | request | status` against a
//! server's API (`remote`).

mod remote;

use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use crate::app::{self, App};
use crate::audit::{self, Action, Actor, Event, Verification};
use crate::config::{Config, LogFormat};
use crate::staff::tokens::{NewApiToken, Scopes, TokenId};
use crate::staff::{Role, ServiceName, StaffEmail};
use crate::vault::{MasterKeyId, MessageId};
use secrecy::{ExposeSecret, SecretString};

#[derive(Debug, Parser)]
#[command(
    name = "sealpost",
    version,
    about = "Self-hosted secure message portal"
)]
struct Cli {
    /// TOML configuration file (settings in SEALPOST_* variables override it)
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run Sealpost (applies database migrations first)
    Serve,
    /// Apply database migrations and exit
    Migrate,
    /// Print the effective configuration, secrets redacted
    Config,
    /// Master key custody: status, rotation, retirement
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Write a message's age files and a manifest for an escrow holder
    Export {
        /// The message id
        message_id: String,
        /// Folder to create (must not exist, or be empty)
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// The audit log
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Staff accounts
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Send a message through a server's API (exit codes: sealpost send --help)
    #[command(after_help = EXIT_CODES)]
    Send(remote::Send),
    /// Ask a customer for documents through a server's API
    #[command(after_help = EXIT_CODES)]
    Request(remote::Request),
    /// Where a message stands (e.g. downloaded), through a server's API
    #[command(after_help = EXIT_CODES)]
    Status(remote::Status),
    /// Remove orphaned blobs and unfinished uploads now
    Sweep {
        /// Only remove orphans older than this many hours
        #[arg(long, default_value_t = 24)]
        grace_hours: u64,
    },
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Create a staff account
    CreateUser {
        #[arg(long)]
        email: String,
        #[arg(long, value_parser = ["admin", "agent"])]
        role: String,
        /// Read the password from this file instead of prompting
        #[arg(long, value_name = "FILE")]
        password_file: Option<PathBuf>,
    },
    /// Set a new password for a staff account
    ResetPassword {
        #[arg(long)]
        email: String,
        /// Read the password from this file instead of prompting
        #[arg(long, value_name = "FILE")]
        password_file: Option<PathBuf>,
    },
    /// Disable a staff account (it can no longer sign in)
    DisableUser {
        #[arg(long)]
        email: String,
    },
    /// Create a service account (an integration that only holds API
    /// tokens and never signs in); prints its id
    CreateServiceAccount {
        /// Lower-case letters, digits and hyphens, e.g. helpdesk-sync
        #[arg(long)]
        name: String,
        #[arg(long, value_parser = ["admin", "agent"], default_value = "agent")]
        role: String,
    },
    /// Create an API token for a staff account; writes it to FILE (mode
    /// 0600, which must not exist) and prints only its id
    CreateToken {
        /// The account the token acts for
        #[arg(long, required_unless_present = "service", conflicts_with = "service")]
        email: Option<String>,
        /// The service account the token acts for, by name
        #[arg(long, value_name = "NAME")]
        service: Option<String>,
        /// Comma-separated: messages:send, messages:read, inbox:read, admin
        #[arg(long, value_name = "SCOPES")]
        scope: String,
        /// Lifetime, e.g. 30d, 12h (default: until revoked)
        #[arg(long, value_name = "SPAN")]
        expires: Option<String>,
        /// A name to recognise it by in lists
        #[arg(long, default_value = "command line")]
        name: String,
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Revoke an API token by id
    RevokeToken {
        /// The token id, as `create-token` printed it
        id: String,
    },
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Check the hash chain; exits non-zero and names the first bad event
    Verify,
    /// Write the events of a date range (UTC, both days included) to stdout
    Export {
        /// First day, YYYY-MM-DD
        #[arg(long)]
        from: String,
        /// Last day, YYYY-MM-DD
        #[arg(long)]
        to: String,
        #[arg(long, value_parser = ["csv", "json"], default_value = "csv")]
        format: String,
    },
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Show each master key and how many items it wraps
    Status,
    /// Add a new master key and re-wrap everything to it (resumes an
    /// unfinished rotation instead, if there is one)
    Rotate,
    /// Remove a master key that nothing depends on any more
    Retire {
        /// The key id, as `keys status` shows it
        id: String,
    },
}

/// What `send`, `request` and `status` exit with, for scripts.
const EXIT_CODES: &str = "Exit codes: 0 done, 1 a local problem (e.g. a file that cannot be read), \
2 wrong usage, 3 the token is missing, invalid or lacks the scope, 4 no such message, \
5 the server refused the request, 6 the server could not be reached or failed (after retries). \
The token comes from --token-file or SEALPOST_TOKEN, never from the command line.";

pub fn main() -> ExitCode {
    crate::tls::install_crypto_provider();
    let cli = Cli::parse();
    // The API client needs no configuration, database or keys.
    let cli = match cli.command {
        Command::Send(args) => return remote::send(args),
        Command::Request(args) => return remote::request(args),
        Command::Status(args) => return remote::status(args),
        command => Cli { command, ..cli },
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let config = Config::load(cli.config.as_deref(), std::env::vars())?;
    if let Command::Config = cli.command {
        print!("{}", config.to_redacted_toml());
        return Ok(());
    }
    init_tracing(&config.log, config.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(dispatch(cli.command, config))
}

fn init_tracing(filter: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        // One object per line with the event's fields at the top level,
        // as log shippers expect; no colour codes.
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        // Colour codes only for a person at a terminal, not in log files.
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
    };
}

/// A rotation's progress on a terminal: one line, rewritten per batch.
fn show_progress(done: u64, total: u64) {
    use std::io::{IsTerminal, Write};
    let mut err = std::io::stderr();
    if err.is_terminal() {
        let _ = write!(err, "\rre-wrapped {done} of {total} keys");
        if done >= total {
            let _ = writeln!(err);
        }
    }
}

async fn dispatch(command: Command, config: Config) -> Result<()> {
    match command {
        Command::Config => Ok(()),
        // `main` runs these before any configuration is read.
        Command::Send(_) | Command::Request(_) | Command::Status(_) => {
            anyhow::bail!("an API command reached the local dispatcher")
        }
        Command::Migrate => {
            let db = app::open_db(&config).await?;
            db.close().await;
            println!("database is up to date");
            Ok(())
        }
        Command::Serve => {
            let app = App::open(config).await?;
            crate::server::serve(app).await?;
            Ok(())
        }
        Command::Keys(KeysCommand::Status) => {
            let app = App::open(config).await?;
            print_key_status(&app).await
        }
        Command::Keys(KeysCommand::Rotate) => {
            let app = App::open(config).await?;
            let report = app.vault.rotate_with_progress(&show_progress).await?;
            let detail = serde_json::json!({
                "key_id": report.target.as_str(),
                "added_key": report.added_key,
                "rewrapped": report.rewrapped,
            });
            app.audit
                .record_now(&Event::new(Actor::Cli, Action::KeysRotated).detail(detail))
                .await?;
            if report.added_key {
                println!("added master key {}", report.target);
            } else {
                println!(
                    "finished an interrupted rotation to master key {} (no new key added)",
                    report.target
                );
            }
            println!("re-wrapped {} item(s)", report.rewrapped);
            println!(
                "Back up {} now. Retire old keys with `sealpost keys retire ID` once `keys status` shows they wrap nothing.",
                app.config.master_key_file.display()
            );
            Ok(())
        }
        Command::Keys(KeysCommand::Retire { id }) => {
            let app = App::open(config).await?;
            app.vault.retire(&MasterKeyId::from_db(id.clone())).await?;
            let detail = serde_json::json!({ "key_id": id });
            app.audit
                .record_now(&Event::new(Actor::Cli, Action::KeyRetired).detail(detail))
                .await?;
            println!("retired master key {id}; it is no longer in the key file");
            Ok(())
        }
        Command::Export { message_id, out } => {
            let id = MessageId::from_str(&message_id)
                .map_err(|_| anyhow::anyhow!("{message_id:?} is not a message id"))?;
            let app = App::open(config).await?;
            let report = app.vault.export(id, &out).await?;
            app.audit
                .record_now(&Event::new(Actor::Cli, Action::MessageExported).message(id))
                .await?;
            println!("exported to {}:", report.dir.display());
            for f in report.files {
                println!("  {f}");
            }
            Ok(())
        }
        Command::Admin(admin) => run_admin(admin, config).await,
        Command::Audit(AuditCommand::Verify) => {
            let app = App::open(config).await?;
            match app.audit.verify().await? {
                Verification::Intact { events } => {
                    println!("audit log intact: {events} event(s) verified");
                    Ok(())
                }
                Verification::Broken { id, reason } => {
                    anyhow::bail!("audit log broken at event #{id}: {reason}")
                }
            }
        }
        Command::Audit(AuditCommand::Export { from, to, format }) => {
            let (from, to) = audit::day_range(&from, &to).map_err(|e| match e {
                audit::DayRangeError::Backwards => {
                    anyhow::anyhow!("--to must not be before --from")
                }
                other => other.into(),
            })?;
            let format = audit::ExportFormat::parse(&format)
                .ok_or_else(|| anyhow::anyhow!("the format must be csv or json"))?;
            let app = App::open(config).await?;
            let events = app.audit.events_between(from, to).await?;
            let detail = serde_json::json!({ "from": from, "to": to, "events": events.len() });
            app.audit
                .record_now(&Event::new(Actor::Cli, Action::AuditExported).detail(detail))
                .await?;
            audit::write_export(std::io::stdout().lock(), format, &events)?;
            Ok(())
        }
        Command::Sweep { grace_hours } => {
            let app = App::open(config).await?;
            let grace = Duration::from_secs(grace_hours.saturating_mul(3600));
            let r = app.vault.sweep(grace).await?;
            let detail = serde_json::json!({
                "removed_blobs": r.removed_blobs,
                "removed_partials": r.removed_partials,
            });
            app.audit
                .record_now(&Event::new(Actor::Cli, Action::OrphansSwept).detail(detail))
                .await?;
            println!(
                "removed {} orphaned blob(s) and {} unfinished upload(s); {} blob(s) in use",
                r.removed_blobs, r.removed_partials, r.kept_blobs
            );
            Ok(())
        }
    }
}

async fn run_admin(command: AdminCommand, config: Config) -> Result<()> {
    match command {
        AdminCommand::CreateUser {
            email,
            role,
            password_file,
        } => {
            let email = StaffEmail::parse(&email)?;
            let role: Role = role.parse()?;
            let password = read_password(password_file.as_deref())?;
            let app = App::open(config).await?;
            let id = app
                .accounts
                .create(Actor::Cli, &email, role, password)
                .await?;
            println!("created {} account {id}", role.as_str());
        }
        AdminCommand::ResetPassword {
            email,
            password_file,
        } => {
            let email = StaffEmail::parse(&email)?;
            let password = read_password(password_file.as_deref())?;
            let app = App::open(config).await?;
            app.accounts
                .reset_password(Actor::Cli, &email, password)
                .await?;
            println!("password changed");
        }
        AdminCommand::CreateServiceAccount { name, role } => {
            let name = ServiceName::parse(&name)?;
            let role: Role = role.parse()?;
            let app = App::open(config).await?;
            let id = app
                .accounts
                .create_service(Actor::Cli, None, &name, role)
                .await?;
            println!("{id}");
        }
        AdminCommand::CreateToken {
            email,
            service,
            scope,
            expires,
            name,
            out,
        } => {
            let email = match (email, service) {
                (Some(email), _) => StaffEmail::parse(&email)?,
                (None, Some(service)) => ServiceName::parse(&service)?.email(),
                (None, None) => anyhow::bail!("name the account: --email or --service"),
            };
            let scopes = Scopes::parse_list(&scope)?;
            let lifetime = expires
                .map(|e| {
                    crate::text::parse_span(&e)
                        .with_context(|| format!("--expires {e:?}: use e.g. 30d, 12h or 90m"))
                })
                .transpose()?;
            if out.exists() {
                anyhow::bail!("{} exists; name a new file for the token", out.display());
            }
            let app = App::open(config).await?;
            let owner = app.accounts.find(&email).await?;
            let new = NewApiToken {
                owner: owner.id,
                name,
                scopes,
                expires_at: lifetime.map(|secs| app.clock.now() + secs),
            };
            let (id, value) = app.tokens.create(Actor::Cli, new).await?;
            let written = crate::private_fs::write_new(&out, value.expose_secret().as_bytes());
            if let Err(e) = written {
                // A token nobody holds must not stay usable.
                app.tokens.revoke(Actor::Cli, id, None).await?;
                return Err(e).with_context(|| format!("writing {}", out.display()));
            }
            println!("{id}");
        }
        AdminCommand::RevokeToken { id } => {
            let id = TokenId::parse(&id).context("not a token id")?;
            let app = App::open(config).await?;
            if app.tokens.revoke(Actor::Cli, id, None).await? {
                println!("token revoked");
            } else {
                println!("token was already revoked");
            }
        }
        AdminCommand::DisableUser { email } => {
            let email = StaffEmail::parse(&email)?;
            let app = App::open(config).await?;
            if app.accounts.disable(Actor::Cli, &email).await? {
                println!("account disabled");
            } else {
                println!("account was already disabled");
            }
        }
    }
    Ok(())
}

/// A password from a file (trailing newline removed) or typed twice at a
/// prompt that does not echo.
fn read_password(file: Option<&std::path::Path>) -> Result<SecretString> {
    if let Some(path) = file {
        let text = zeroize::Zeroizing::new(
            std::fs::read_to_string(path)
                .with_context(|| format!("reading the password file {}", path.display()))?,
        );
        return Ok(SecretString::from(
            text.trim_end_matches(['\r', '\n']).to_owned(),
        ));
    }
    let first = zeroize::Zeroizing::new(rpassword::prompt_password("Password: ")?);
    let second = zeroize::Zeroizing::new(rpassword::prompt_password("Repeat password: ")?);
    if *first != *second {
        anyhow::bail!("the passwords do not match");
    }
    Ok(SecretString::from(first.to_string()))
}

async fn print_key_status(app: &App) -> Result<()> {
    let keys = app.vault.key_status().await?;
    println!(
        "{:<16}  {:<20}  {:<8}  {:>8}  {:>7}  {:<7}",
        "ID", "CREATED", "STATE", "MESSAGES", "SECRETS", "IN FILE"
    );
    for k in keys {
        let state = if k.retired_at.is_some() {
            "retired"
        } else if k.newest {
            "wrapping"
        } else {
            "active"
        };
        println!(
            "{:<16}  {:<20}  {:<8}  {:>8}  {:>7}  {:<7}",
            k.id,
            crate::text::format_time_rfc3339(k.created_at),
            state,
            k.messages,
            k.secrets,
            if k.in_key_file { "yes" } else { "no" }
        );
    }
    Ok(())
}
