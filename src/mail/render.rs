//! Turns a [`Mail`] into an email: subject, text and HTML parts from paired
//! templates under `templates/mail/`, and the headers every email carries.
//!
//! Customer emails carry no customer data at all (no name, title, body,
//! file names or counts): only the organisation, the link or code, the
//! expiry, the support line and safety advice.

use std::time::{Duration, UNIX_EPOCH};

use askama::Template;
use lettre::Message;
use lettre::message::header::{Header, HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};

use super::{Alert, Mail, MailError};
use crate::text::format_time;

/// What every template needs about the organisation.
pub struct Context {
    pub org: String,
    pub support: String,
    /// Base URL of staff pages (for sender alerts).
    pub public_url: String,
    pub now: i64,
}

impl Context {
    /// Control characters (a newline in a name) would break headers and
    /// layout; they are dropped.
    pub fn new(org: &str, support: &str, public_url: &str, now: i64) -> Context {
        let clean = |s: &str| s.chars().filter(|c| !c.is_control()).collect::<String>();
        Context {
            org: clean(org),
            support: clean(support),
            public_url: public_url.to_owned(),
            now,
        }
    }
}

/// A rendered email, before addressing.
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
}

#[derive(Template)]
#[template(path = "mail/pickup_link.txt")]
struct PickupText<'a> {
    ctx: &'a Context,
    url: &'a str,
    expires: String,
}

#[derive(Template)]
#[template(path = "mail/pickup_link.html")]
struct PickupHtml<'a> {
    ctx: &'a Context,
    url: &'a str,
    expires: String,
}

#[derive(Template)]
#[template(path = "mail/request_link.txt")]
struct RequestText<'a> {
    ctx: &'a Context,
    url: &'a str,
    expires: String,
}

#[derive(Template)]
#[template(path = "mail/request_link.html")]
struct RequestHtml<'a> {
    ctx: &'a Context,
    url: &'a str,
    expires: String,
}

#[derive(Template)]
#[template(path = "mail/verification_code.txt")]
struct CodeText<'a> {
    ctx: &'a Context,
    code: &'a str,
    minutes: i64,
    expires: String,
}

#[derive(Template)]
#[template(path = "mail/verification_code.html")]
struct CodeHtml<'a> {
    ctx: &'a Context,
    code: &'a str,
    minutes: i64,
    expires: String,
}

#[derive(Template)]
#[template(path = "mail/sender_alert.txt")]
struct AlertText<'a> {
    ctx: &'a Context,
    headline: &'a str,
    message_id: String,
    link: String,
}

#[derive(Template)]
#[template(path = "mail/sender_alert.html")]
struct AlertHtml<'a> {
    ctx: &'a Context,
    headline: &'a str,
    message_id: String,
    link: String,
}

#[derive(Template)]
#[template(path = "mail/sign_in_alert.txt")]
struct SignInAlertText<'a> {
    ctx: &'a Context,
    link: String,
}

#[derive(Template)]
#[template(path = "mail/sign_in_alert.html")]
struct SignInAlertHtml<'a> {
    ctx: &'a Context,
    link: String,
}

#[derive(Template)]
#[template(path = "mail/staff_invite.txt")]
struct InviteText<'a> {
    ctx: &'a Context,
    url: &'a str,
}

#[derive(Template)]
#[template(path = "mail/staff_invite.html")]
struct InviteHtml<'a> {
    ctx: &'a Context,
    url: &'a str,
}

/// A PII-free alert to staff: a headline, the item's id and a portal link.
fn alert_mail(
    ctx: &Context,
    subject: &str,
    headline: &str,
    id: &str,
    link: String,
) -> Result<Rendered, MailError> {
    let err = |e: askama::Error| MailError::Build(e.to_string());
    Ok(Rendered {
        subject: subject.to_owned(),
        text: AlertText {
            ctx,
            headline,
            message_id: id.to_owned(),
            link: link.clone(),
        }
        .render()
        .map_err(err)?,
        html: AlertHtml {
            ctx,
            headline,
            message_id: id.to_owned(),
            link,
        }
        .render()
        .map_err(err)?,
    })
}

pub fn render(ctx: &Context, mail: &Mail) -> Result<Rendered, MailError> {
    let err = |e: askama::Error| MailError::Build(e.to_string());
    let rendered = match mail {
        Mail::PickupLink { url, expires_at } => Rendered {
            subject: format!("Secure message from {}", ctx.org),
            text: PickupText {
                ctx,
                url,
                expires: format_time(*expires_at),
            }
            .render()
            .map_err(err)?,
            html: PickupHtml {
                ctx,
                url,
                expires: format_time(*expires_at),
            }
            .render()
            .map_err(err)?,
        },
        Mail::RequestLink { url, expires_at } => Rendered {
            subject: format!("Secure document request from {}", ctx.org),
            text: RequestText {
                ctx,
                url,
                expires: format_time(*expires_at),
            }
            .render()
            .map_err(err)?,
            html: RequestHtml {
                ctx,
                url,
                expires: format_time(*expires_at),
            }
            .render()
            .map_err(err)?,
        },
        Mail::VerificationCode { code, expires_at } => {
            // Rounded up, so a code valid for 9 min 30 s says 10.
            let minutes = ((expires_at - ctx.now + 59) / 60).max(1);
            Rendered {
                subject: format!("Your verification code from {}", ctx.org),
                text: CodeText {
                    ctx,
                    code,
                    minutes,
                    expires: format_time(*expires_at),
                }
                .render()
                .map_err(err)?,
                html: CodeHtml {
                    ctx,
                    code,
                    minutes,
                    expires: format_time(*expires_at),
                }
                .render()
                .map_err(err)?,
            }
        }
        Mail::SenderAlert { alert, message_id } => {
            let (subject, headline) = match alert {
                Alert::FirstPickup => (
                    "Sealpost: your message was picked up",
                    "The recipient verified and opened your secure message.",
                ),
                Alert::Locked => (
                    "Sealpost: a message was locked",
                    "Your secure message was locked after too many failed verification attempts. \
                     Only you or an administrator can unlock it.",
                ),
            };
            let link = format!("{}/messages/{message_id}", ctx.public_url);
            alert_mail(ctx, subject, headline, &message_id.to_string(), link)?
        }
        Mail::IncomingAlert { incoming_id } => {
            let headline =
                "A customer sent you a secure reply. It is waiting, encrypted, in Sealpost.";
            let link = format!("{}/inbox/{incoming_id}", ctx.public_url);
            alert_mail(
                ctx,
                "Sealpost: a secure reply is waiting",
                headline,
                &incoming_id.to_string(),
                link,
            )?
        }
        Mail::SubmissionAlert { incoming_id } => {
            let headline = "A customer sent the documents you requested. They are waiting, encrypted, in Sealpost.";
            let link = format!("{}/inbox/{incoming_id}", ctx.public_url);
            alert_mail(
                ctx,
                "Sealpost: requested documents arrived",
                headline,
                &incoming_id.to_string(),
                link,
            )?
        }
        Mail::SignInAlert => {
            let link = format!("{}/account", ctx.public_url);
            Rendered {
                subject: "Sealpost: many failed sign-ins on your account".to_owned(),
                text: SignInAlertText {
                    ctx,
                    link: link.clone(),
                }
                .render()
                .map_err(err)?,
                html: SignInAlertHtml { ctx, link }.render().map_err(err)?,
            }
        }
        Mail::StaffInvite { url } => Rendered {
            subject: format!("Your {} Sealpost account", ctx.org),
            text: InviteText { ctx, url }.render().map_err(err)?,
            html: InviteHtml { ctx, url }.render().map_err(err)?,
        },
    };
    Ok(rendered)
}

/// A header with one fixed value, as lettre's `Header` wants it.
macro_rules! fixed_header {
    ($(#[$doc:meta])* $name:ident, $header:literal, $value:literal) => {
        $(#[$doc])*
        #[derive(Clone)]
        struct $name;

        impl Header for $name {
            fn name() -> HeaderName {
                HeaderName::new_from_ascii_str($header)
            }

            fn parse(_: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
                Ok($name)
            }

            fn display(&self) -> HeaderValue {
                HeaderValue::new(Self::name(), $value.to_owned())
            }
        }
    };
}

fixed_header!(
    /// `Auto-Submitted: auto-generated` (RFC 3834): no out-of-office replies
    /// or auto-forwards for machine-sent mail.
    AutoSubmitted,
    "Auto-Submitted",
    "auto-generated"
);

fixed_header!(
    /// Exchange's spelling of the same wish.
    SuppressAutoResponse,
    "X-Auto-Response-Suppress",
    "All"
);

/// Addresses and assembles the email. `message_id` is the outbox row's
/// stable `Message-ID`, so a retry is recognisably the same email.
pub fn build(
    from: &Mailbox,
    to: &str,
    message_id: &str,
    date: i64,
    rendered: &Rendered,
) -> Result<Message, MailError> {
    let to: Mailbox = to.parse().map_err(|_| MailError::InvalidAddress)?;
    let date = UNIX_EPOCH + Duration::from_secs(u64::try_from(date).unwrap_or(0));
    Message::builder()
        .from(from.clone())
        .to(to)
        .subject(rendered.subject.clone())
        .message_id(Some(message_id.to_owned()))
        .date(date)
        .header(AutoSubmitted)
        .header(SuppressAutoResponse)
        .multipart(MultiPart::alternative_plain_html(
            rendered.text.clone(),
            rendered.html.clone(),
        ))
        .map_err(|e| MailError::Build(e.to_string()))
}
