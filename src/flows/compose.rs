//! The compose rules apart from HTTP: what a valid message is (the checked
//! form), and the one transaction that makes a sealed draft a sent message
//! (the vault's commit, the delivery record, the recipient, the one-time
//! link, the pickup email and the audit event commit together or not at all).

use secrecy::{ExposeSecret, SecretString};

use super::Acting;
use crate::app::App;
use crate::audit::{Action, Event};
use crate::deliveries::NewDelivery;
use crate::filetype::FileKind;
use crate::idempotency::Claim;
use crate::mail::Mail;
use crate::requests::{MAX_ITEM_CHARS, MAX_ITEMS, NewRequest};
use crate::settings::{MAX_EXPIRY_HOURS, MIN_EXPIRY_HOURS, Method, Settings};
use crate::staff::StaffEmail;
use crate::text::{normalise_access_code, normalise_fact};
use crate::vault::{Draft, MessageId, MessageMeta};
use crate::web::PageError;
use crate::web::upload::begin_with_text;

/// A request's instructions, in characters (the documents are the files).
pub const MAX_INSTRUCTIONS_CHARS: usize = 20_000;

/// A message's text, in characters (long documents are attachments).
pub const MAX_BODY_CHARS: usize = 200_000;

/// What a sender asks for, as entered: the portal's form or the API's
/// JSON, checked by [`check`].
#[derive(Clone, Debug, Default)]
pub struct Fields {
    pub recipient: String,
    pub phone: String,
    pub title: String,
    pub body: String,
    pub expiry_hours: String,
    /// Method names (`Method::as_str`), each once.
    pub methods: Vec<String>,
    pub access_code: String,
    pub known_fact: String,
    /// `keep` (until it expires) or `shred` (after pickup).
    pub retention: String,
    pub allow_reply: bool,
    /// The conversation an answer continues (a message id), or empty.
    pub conversation: String,
}

impl Fields {
    /// A new form: the organisation's default expiry, its first method,
    /// kept until it expires.
    pub fn defaults(settings: &Settings) -> Fields {
        Fields {
            expiry_hours: settings.default_expiry_hours.to_string(),
            methods: settings
                .methods
                .first()
                .map(|m| m.as_str().to_owned())
                .into_iter()
                .collect(),
            retention: "keep".to_owned(),
            ..Fields::default()
        }
    }
}

/// A message that was sent, and the access code generated for it (shown to
/// the sender once).
pub struct Sent {
    pub id: MessageId,
    pub generated: Option<SecretString>,
}

/// The answer to keep with a message made by an API call with an
/// `Idempotency-Key`: it commits with the message, so a retry finds it.
pub struct Completion<'a> {
    pub claim: &'a Claim,
    /// The call's status and body for what was sent.
    pub answer: &'a (dyn Fn(&Sent) -> (u16, Vec<u8>) + Send + Sync),
}

/// A checked compose form.
pub struct Checked {
    meta: MessageMeta,
    expires_at: i64,
    methods: Vec<Method>,
    access_code: Option<SecretString>,
    generated_code: bool,
    known_fact: Option<SecretString>,
    shred_after_pickup: bool,
    allow_reply: bool,
    conversation: Option<MessageId>,
}

impl Checked {
    /// When the link will stop working.
    pub fn expires_at(&self) -> i64 {
        self.expires_at
    }
}

pub fn check(f: &Fields, settings: &Settings, now: i64) -> Result<Checked, Vec<String>> {
    let mut errors = Vec::new();
    let recipient = f.recipient.trim();
    if StaffEmail::parse(recipient).is_err() {
        errors.push("Enter the customer's email address, like name@example.com.".to_owned());
    }
    let phone = f.phone.trim();
    if !phone.is_empty()
        && (phone.len() > 32
            || !phone
                .chars()
                .all(|c| c.is_ascii_digit() || " +-().".contains(c)))
    {
        errors.push("The phone number may contain only digits, spaces and + - ( ).".to_owned());
    }
    if f.title.chars().count() > 200 {
        errors.push("The internal title must be at most 200 characters.".to_owned());
    }
    let hours: Option<u32> = f.expiry_hours.trim().parse().ok();
    let hours = match hours {
        Some(h) if (MIN_EXPIRY_HOURS..=MAX_EXPIRY_HOURS).contains(&h) => h,
        _ => {
            errors.push("Choose an expiry between 1 hour and 30 days.".to_owned());
            0
        }
    };
    let mut methods = Vec::new();
    for m in &f.methods {
        match m.parse::<Method>() {
            Ok(m) if settings.allows(m) && !methods.contains(&m) => methods.push(m),
            _ => {
                let e = "Choose verification methods from the list.";
                if !errors.iter().any(|x| x == e) {
                    errors.push(e.to_owned());
                }
            }
        }
    }
    if methods.is_empty() {
        errors.push("Choose how the customer verifies before reading.".to_owned());
    }
    let access = normalise_access_code(&f.access_code);
    let (access_code, generated_code) = if methods.contains(&Method::AccessCode) {
        if access.is_empty() {
            (Some(generate_access_code()), true)
        } else if access.chars().count() < 6 || access.chars().count() > 64 {
            errors.push(
                "An access code must be 6 to 64 characters, not counting spaces and dashes (or leave it empty to generate one)."
                    .to_owned(),
            );
            (None, false)
        } else {
            (Some(SecretString::from(access)), false)
        }
    } else {
        (None, false)
    };
    let fact = normalise_fact(&f.known_fact);
    let known_fact = if methods.contains(&Method::KnownFact) {
        if fact.chars().count() < 4 || fact.chars().count() > 64 {
            errors.push("Enter the fact the customer must know (4 to 64 characters), e.g. the last 4 digits of their account.".to_owned());
        }
        Some(SecretString::from(fact))
    } else {
        None
    };
    let shred_after_pickup = match f.retention.as_str() {
        "shred" => true,
        "keep" => false,
        _ => {
            errors.push("Choose whether to keep the message until it expires.".to_owned());
            false
        }
    };
    let conversation = match f.conversation.trim() {
        "" => None,
        c => match c.parse::<MessageId>() {
            Ok(id) => Some(id),
            Err(_) => {
                errors.push(
                    "The conversation to answer is not valid; open it again from its message."
                        .to_owned(),
                );
                None
            }
        },
    };
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Checked {
        meta: MessageMeta {
            recipient_address: Some(recipient.to_owned()),
            recipient_phone: (!phone.is_empty()).then(|| phone.to_owned()),
            title: (!f.title.trim().is_empty()).then(|| f.title.trim().to_owned()),
            reference: None,
            items: Vec::new(),
        },
        expires_at: now + i64::from(hours) * 3600,
        methods,
        access_code,
        generated_code,
        known_fact,
        shred_after_pickup,
        allow_reply: f.allow_reply,
        conversation,
    })
}

/// The address a conversation's messages go to, for an answer from
/// `who` (who sent one of them, or is an administrator). An answer shows
/// the customer the whole conversation, so it may go only to the address
/// its live messages went to; once all were shredded it cannot be known,
/// and the conversation cannot be continued.
pub async fn conversation_recipient(
    app: &App,
    who: &Acting,
    id: MessageId,
) -> Result<Result<String, String>, PageError> {
    let messages = app.deliveries.conversation(id).await?;
    if messages.is_empty() || !(who.sees_all || messages.iter().any(|d| d.sender == who.staff)) {
        return Err(PageError::NotFound);
    }
    let Some(live) = messages.iter().rev().find(|d| d.sealed_recipient.is_some()) else {
        return Ok(Err(
            "This conversation's messages were all shredded, so it cannot be continued. Write a new message instead.".to_owned(),
        ));
    };
    let address = app.deliveries.open_recipient(live)?;
    Ok(Ok(address.expose_secret().to_owned()))
}

/// What a document request asks for beyond a message's fields.
#[derive(Clone, Debug, Default)]
pub struct Asking {
    /// The checklist, one item per line.
    pub items: String,
    /// File kinds by name (`FileKind::as_str`).
    pub kinds: Vec<String>,
    pub max_mib: String,
}

/// A checked request: what the upload accepts (the checklist's names go
/// into the sealed message's metadata).
pub struct Asked {
    items: u32,
    accepted: Vec<FileKind>,
    max_bytes: u64,
}

/// Checks a document request's form: the message's fields (the
/// instructions are its text) and the checklist, kinds and size.
pub fn check_request(
    f: &Fields,
    a: &Asking,
    settings: &Settings,
    now: i64,
) -> Result<(Checked, Asked), Vec<String>> {
    let mut errors = Vec::new();
    let items: Vec<String> = a
        .items
        .lines()
        .map(|l| l.trim().to_owned())
        .filter(|l| !l.is_empty())
        .collect();
    if items.is_empty() {
        errors.push("List at least one document to ask for, one per line.".to_owned());
    } else if items.len() > MAX_ITEMS {
        errors.push(format!(
            "Ask for at most {MAX_ITEMS} documents in one request."
        ));
    }
    if items.iter().any(|i| i.chars().count() > MAX_ITEM_CHARS) {
        errors.push(format!(
            "Name each document in at most {MAX_ITEM_CHARS} characters."
        ));
    }
    let mut accepted = Vec::new();
    for k in &a.kinds {
        match FileKind::parse(k) {
            Some(kind) if !settings.accepted_kinds.contains(&kind) => errors.push(format!(
                "{} files are not accepted by your organisation; choose from the list.",
                kind.label()
            )),
            Some(kind) if !accepted.contains(&kind) => accepted.push(kind),
            Some(_) => {}
            None => errors.push("Choose accepted file types from the list.".to_owned()),
        }
    }
    if accepted.is_empty() && a.kinds.is_empty() {
        errors.push("Choose at least one accepted file type.".to_owned());
    }
    let max_mib = match a.max_mib.trim().parse::<u64>() {
        Ok(m) if (1..=settings.size_limit_mib).contains(&m) => m,
        _ => {
            errors.push(format!(
                "Enter the largest upload in MiB as a whole number from 1 to {} (the organisation's limit).",
                settings.size_limit_mib
            ));
            0
        }
    };
    let checked = check(f, settings, now);
    let mut checked = match checked {
        Ok(c) if errors.is_empty() => c,
        Ok(_) => return Err(errors),
        Err(mut more) => {
            more.extend(errors);
            return Err(more);
        }
    };
    let count = u32::try_from(items.len()).unwrap_or(u32::MAX);
    checked.meta.items = items;
    // A request is answered by upload, never by reply.
    checked.allow_reply = false;
    Ok((
        checked,
        Asked {
            items: count,
            accepted,
            max_bytes: max_mib * 1024 * 1024,
        },
    ))
}

/// Checks and sends a document request: its instructions become the
/// message's text. `Err` lists what to tell the sender.
pub async fn send_request(
    app: &App,
    who: &Acting,
    settings: &Settings,
    f: &Fields,
    a: &Asking,
    done: Option<Completion<'_>>,
) -> Result<Result<Sent, Vec<String>>, PageError> {
    if f.body.chars().count() > MAX_INSTRUCTIONS_CHARS {
        return Ok(Err(vec![format!(
            "The instructions are too long (at most {MAX_INSTRUCTIONS_CHARS} characters)."
        )]));
    }
    let (checked, asked) = match check_request(f, a, settings, app.clock.now()) {
        Ok(ok) => ok,
        Err(errors) => return Ok(Err(errors)),
    };
    let draft = begin_with_text(&app.vault, settings.size_limit_bytes(), &f.body).await?;
    commit(app, who, draft, checked, 0, Some(asked), done)
        .await
        .map(Ok)
}

/// Eight digits in two groups: easy to read out on the phone, and the
/// customer side limits guesses per message.
fn generate_access_code() -> SecretString {
    use rand::RngExt;
    let n: u32 = rand::rng().random_range(0..100_000_000);
    let s = format!("{n:08}");
    SecretString::from(format!("{}-{}", &s[..4], &s[4..]))
}

/// Checks the fields (and that an answer goes to its conversation's
/// customer), without sealing anything.
pub async fn prepare(
    app: &App,
    who: &Acting,
    settings: &Settings,
    f: &Fields,
) -> Result<Result<Checked, Vec<String>>, PageError> {
    if f.body.chars().count() > MAX_BODY_CHARS {
        return Ok(Err(vec![format!(
            "The message text is too long (at most {MAX_BODY_CHARS} characters); attach long documents as files."
        )]));
    }
    let checked = match check(f, settings, app.clock.now()) {
        Ok(c) => c,
        Err(errors) => return Ok(Err(errors)),
    };
    if let Some(conversation) = checked.conversation {
        let to = checked
            .meta
            .recipient_address
            .as_deref()
            .unwrap_or_default();
        match conversation_recipient(app, who, conversation).await? {
            Ok(address) if app.vault.recipient_index(&address) == app.vault.recipient_index(to) => {
            }
            Ok(_) => {
                return Ok(Err(vec![
                    "An answer goes to the customer of the conversation; to write to someone else, start a new message.".to_owned(),
                ]));
            }
            Err(e) => return Ok(Err(vec![e])),
        }
    }
    Ok(Ok(checked))
}

/// Checks the text fields and starts the draft with the body as part 0.
pub async fn begin(
    app: &App,
    who: &Acting,
    settings: &Settings,
    f: &Fields,
) -> Result<Result<(Draft, Checked), Vec<String>>, PageError> {
    let checked = match prepare(app, who, settings, f).await? {
        Ok(c) => c,
        Err(errors) => return Ok(Err(errors)),
    };
    let draft = begin_with_text(&app.vault, settings.size_limit_bytes(), &f.body).await?;
    Ok(Ok((draft, checked)))
}

pub async fn commit(
    app: &App,
    who: &Acting,
    draft: Draft,
    checked: Checked,
    attachments: u32,
    asked: Option<Asked>,
    done: Option<Completion<'_>>,
) -> Result<Sent, PageError> {
    let hash = |s: Option<SecretString>| async move {
        match s {
            Some(s) => app
                .hasher
                .hash_unchecked(s)
                .await
                .map(Some)
                .map_err(PageError::from),
            None => Ok(None),
        }
    };
    let generated = checked
        .generated_code
        .then(|| checked.access_code.clone())
        .flatten();
    let access_code_hash = hash(checked.access_code.clone()).await?;
    let known_fact_hash = hash(checked.known_fact.clone()).await?;
    let id = draft.id();
    let sent = Sent { id, generated };
    let sealed = app.vault.seal(draft, &checked.meta)?;
    let address = checked.meta.recipient_address.clone().unwrap_or_default();
    let mut tx = app.db.begin().await?;
    app.vault.commit(&mut tx, sealed).await?;
    let url = app
        .deliveries
        .insert(
            &mut tx,
            &NewDelivery {
                message_id: id,
                sender: who.staff,
                expires_at: checked.expires_at,
                methods: checked.methods.clone(),
                access_code_hash,
                known_fact_hash,
                shred_after_pickup: checked.shred_after_pickup,
                allow_reply: checked.allow_reply,
                conversation_id: checked.conversation,
                is_request: asked.is_some(),
            },
            &address,
            &app.config.public_url,
        )
        .await
        .map_err(PageError::internal)?;
    let url = url.expose_secret().to_owned();
    let expires_at = checked.expires_at;
    let (mail, action) = match &asked {
        Some(asked) => {
            app.requests
                .insert(
                    &mut tx,
                    &NewRequest {
                        id,
                        items: asked.items,
                        accepted: asked.accepted.clone(),
                        max_bytes: asked.max_bytes,
                    },
                )
                .await?;
            (Mail::RequestLink { url, expires_at }, Action::RequestSent)
        }
        None => (Mail::PickupLink { url, expires_at }, Action::MessageSent),
    };
    // The notification commits with the message: never one without the other.
    app.outbox
        .enqueue_for_new(&mut tx, &address, &mail, id)
        .await?;
    let methods: Vec<&str> = checked.methods.iter().map(|m| m.as_str()).collect();
    let mut detail = serde_json::json!({
        "attachments": attachments,
        "methods": methods,
        "expires_at": checked.expires_at,
        "shred_after_pickup": checked.shred_after_pickup,
        "allow_reply": checked.allow_reply,
        "answer": checked.conversation.is_some(),
    });
    if let Some(asked) = &asked {
        let kinds: Vec<&str> = asked.accepted.iter().map(|k| k.as_str()).collect();
        detail["items"] = asked.items.into();
        detail["accepted"] = kinds.into();
        detail["max_bytes"] = asked.max_bytes.into();
    }
    let event = Event::new(who.actor(), action)
        .message(id)
        .ip(who.ip)
        .detail(detail);
    app.audit.record(&mut tx, &event).await?;
    if let Some(done) = done {
        let (status, body) = (done.answer)(&sent);
        app.idempotency
            .complete(&mut tx, done.claim, id, status, &body)
            .await?;
    }
    tx.commit().await?;
    app.metrics.message_sent();
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_access_codes_are_in_normal_form() {
        use secrecy::ExposeSecret;
        let c = generate_access_code();
        assert_eq!(normalise_access_code(c.expose_secret()), c.expose_secret());
    }

    #[test]
    fn generated_codes_have_eight_digits() {
        use secrecy::ExposeSecret;
        let c = generate_access_code();
        assert_eq!(c.expose_secret().len(), 9);
        assert!(
            c.expose_secret()
                .chars()
                .filter(char::is_ascii_digit)
                .count()
                == 8
        );
    }
}
