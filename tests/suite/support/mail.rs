//! Emails as a test reads them: waiting for them at the SMTP server, and
//! pulling the pickup link, the code and the Message-ID out of them.

use std::time::Duration;

use crate::support::smtp::{SmtpServer, header, parts};

/// Waits until `pred` holds for the emails the SMTP server accepted.
pub async fn wait_for_mail(smtp: &SmtpServer, what: &str, pred: impl Fn(&[Vec<u8>]) -> bool) {
    for _ in 0..600 {
        if pred(&smtp.accepted()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

/// Decoded text of accepted emails to `to` whose text contains `needle`.
pub fn mail_texts(smtp: &SmtpServer, to: &str, needle: &str) -> Vec<String> {
    smtp.accepted()
        .iter()
        .filter(|raw| header(raw, "To").is_some_and(|t| t.contains(to)))
        .map(|raw| parts(raw).0)
        .filter(|t| t.contains(needle))
        .collect()
}

/// The pickup link path in an email's text.
pub fn link_path(text: &str) -> String {
    let i = text.find("/p/").expect("a pickup link");
    text[i..]
        .split(|c: char| c.is_whitespace())
        .next()
        .expect("link")
        .to_owned()
}

pub fn six_digits(text: &str) -> String {
    text.split(|c: char| !c.is_ascii_digit())
        .find(|w| w.len() == 6)
        .expect("a 6-digit code")
        .to_owned()
}

/// Message-IDs of every accepted email, in arrival order.
pub fn message_ids(smtp: &SmtpServer) -> Vec<String> {
    smtp.accepted()
        .iter()
        .map(|raw| header(raw, "Message-ID").expect("Message-ID"))
        .collect()
}
