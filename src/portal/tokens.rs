//! `/account/tokens`: a staff member's own API tokens (list, create,
//! revoke), and the parts the service accounts' page shares with it.
//!
//! A new token's value is on one page only: the answer to the create POST,
//! marked `no-store`. It is never put in the session, a URL or a log, and
//! the list shows ids, never values (the database has only keyed hashes).

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::auth::CurrentStaff;
use crate::app::App;
use crate::staff::StaffId;
use crate::staff::tokens::{
    MAX_NAME_CHARS, NewApiToken, Scope, Scopes, TokenError, TokenId, TokenInfo,
};
use crate::text::format_time;
use crate::web::csrf::CsrfForm;
use crate::web::{Nav, PageError, PageResult};

/// Where the own tokens page lives (also where its forms post).
const OWN: &str = "/account/tokens";
/// Longest lifetime a page may give a token, in days (about ten years).
pub const MAX_EXPIRY_DAYS: u32 = 3650;
/// The expiry choices: (form value, label). `days` takes the number field.
const EXPIRIES: [(&str, &str); 5] = [
    ("30", "In 30 days"),
    ("90", "In 90 days"),
    ("365", "In a year"),
    ("never", "Never (until revoked)"),
    ("days", "After this many days:"),
];
const DEFAULT_EXPIRY: &str = "90";

/// A token as the lists show it: never its value.
pub(super) struct TokenRow {
    id: String,
    name: String,
    scopes: String,
    created: String,
    expires: String,
    last_used: String,
    last_ip: String,
    state: &'static str,
    active: bool,
}

impl TokenRow {
    fn new(t: TokenInfo, now: i64) -> TokenRow {
        let state = if t.revoked_at.is_some() {
            "revoked"
        } else if t.expires_at.is_some_and(|at| at <= now) {
            "expired"
        } else {
            "active"
        };
        TokenRow {
            id: t.id.to_string(),
            name: t.name,
            scopes: t
                .scopes
                .iter()
                .map(Scope::as_str)
                .collect::<Vec<_>>()
                .join(", "),
            created: format_time(t.created_at),
            expires: t.expires_at.map_or_else(|| "never".to_owned(), format_time),
            last_used: t
                .last_used_at
                .map_or_else(|| "never".to_owned(), format_time),
            last_ip: t.last_used_ip.unwrap_or_default(),
            state,
            active: state == "active",
        }
    }
}

/// `owner`'s tokens for a list, newest first.
pub(super) async fn token_rows(app: &App, owner: StaffId) -> Result<Vec<TokenRow>, PageError> {
    let now = app.clock.now();
    Ok(app
        .tokens
        .of_owner(owner)
        .await?
        .into_iter()
        .map(|t| TokenRow::new(t, now))
        .collect())
}

/// The create form as typed (or its defaults).
pub(super) struct TokenFields {
    name: String,
    /// (value, description, ticked), the admin scope only where offered.
    scopes: Vec<(&'static str, &'static str, bool)>,
    expiry: String,
    days: String,
    expiries: &'static [(&'static str, &'static str)],
    max_days: u32,
    max_name: usize,
}

impl TokenFields {
    pub(super) fn empty(offer_admin: bool) -> TokenFields {
        TokenFields {
            name: String::new(),
            scopes: offered(offer_admin)
                .map(|s| (s.as_str(), s.describe(), false))
                .collect(),
            expiry: DEFAULT_EXPIRY.to_owned(),
            days: String::new(),
            expiries: &EXPIRIES,
            max_days: MAX_EXPIRY_DAYS,
            max_name: MAX_NAME_CHARS,
        }
    }
}

/// The scopes a form offers: `admin` only for an administrator's token.
fn offered(offer_admin: bool) -> impl Iterator<Item = Scope> {
    Scope::ALL
        .into_iter()
        .filter(move |s| offer_admin || *s != Scope::Admin)
}

/// A valid create form.
#[derive(Debug, PartialEq)]
pub(super) struct Choice {
    name: String,
    scopes: Scopes,
    /// Lifetime in days; `None`: until revoked.
    days: Option<u32>,
}

impl Choice {
    pub(super) fn into_new(self, owner: StaffId, now: i64) -> NewApiToken {
        NewApiToken {
            owner,
            name: self.name,
            scopes: self.scopes,
            expires_at: self.days.map(|d| now + i64::from(d) * 24 * 3600),
        }
    }
}

/// Reads the create form; on refusal, says everything that is wrong.
pub(super) fn parse_token_form(
    pairs: &[(String, String)],
    offer_admin: bool,
) -> (TokenFields, Result<Choice, Vec<String>>) {
    let field = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim().to_owned())
            .unwrap_or_default()
    };
    let ticked: Vec<&str> = pairs
        .iter()
        .filter(|(k, _)| k == "scope")
        .map(|(_, v)| v.as_str())
        .collect();
    let mut f = TokenFields::empty(offer_admin);
    f.name = field("name");
    f.expiry = field("expiry");
    f.days = field("expiry_days");
    for (value, _, on) in &mut f.scopes {
        *on = ticked.contains(value);
    }

    let mut errors = Vec::new();
    if f.name.is_empty()
        || f.name.chars().count() > MAX_NAME_CHARS
        || f.name.chars().any(char::is_control)
    {
        errors.push(format!(
            "Give the token a name of 1 to {MAX_NAME_CHARS} characters, so you recognise it in the list."
        ));
    }
    let mut scopes = Vec::new();
    for t in &ticked {
        match t.parse::<Scope>() {
            Ok(Scope::Admin) if !offer_admin => {
                errors.push("Only an administrator's token may have the admin scope.".to_owned())
            }
            Ok(s) => scopes.push(s),
            Err(_) => errors.push("Choose scopes from the list.".to_owned()),
        }
    }
    let scopes = Scopes::new(scopes).map_err(|_| {
        if ticked.is_empty() {
            errors.push("Tick at least one scope: what the token may do.".to_owned());
        }
    });
    let days = match f.expiry.as_str() {
        "never" => Ok(None),
        "days" => match f.days.parse::<u32>() {
            Ok(d) if (1..=MAX_EXPIRY_DAYS).contains(&d) => Ok(Some(d)),
            _ => Err(format!(
                "Enter the number of days as a whole number from 1 to {MAX_EXPIRY_DAYS}, or choose another expiry."
            )),
        },
        "30" => Ok(Some(30)),
        "90" => Ok(Some(90)),
        "365" => Ok(Some(365)),
        _ => Err("Choose when the token expires.".to_owned()),
    };
    let days = days.map_err(|e| errors.push(e));
    let result = match (scopes, days) {
        (Ok(scopes), Ok(days)) if errors.is_empty() => Ok(Choice {
            name: f.name.clone(),
            scopes,
            days,
        }),
        _ => Err(errors),
    };
    (f, result)
}

/// The page of one owner's tokens: the list and the create form.
#[derive(Template, WebTemplate)]
#[template(path = "portal/tokens.html")]
pub(super) struct TokensPage {
    pub(super) nav: Option<Nav>,
    pub(super) csrf: String,
    /// "Your API tokens", or the service account's name.
    pub(super) heading: String,
    /// Where the create form posts; `{base}/{id}/revoke` revokes.
    pub(super) base: String,
    /// Where "back" goes.
    pub(super) back: (String, &'static str),
    pub(super) rows: Vec<TokenRow>,
    pub(super) form: TokenFields,
    /// New tokens can be made (not for a disabled service account).
    pub(super) can_create: bool,
    /// A service account's id, for its disable button.
    pub(super) service: Option<ServiceView>,
    pub(super) notice: Option<&'static str>,
    pub(super) errors: Vec<String>,
}

/// What the tokens page shows of a service account.
pub(super) struct ServiceView {
    pub(super) id: String,
    pub(super) role: &'static str,
    pub(super) disabled: bool,
}

/// The one page that shows a new token's value.
#[derive(Template, WebTemplate)]
#[template(path = "portal/token_created.html")]
struct CreatedPage {
    nav: Option<Nav>,
    name: String,
    id: String,
    scopes: String,
    expires: String,
    value: String,
    back: String,
}

/// The answer to a create POST that worked: the value, once, never stored
/// by the browser or a proxy.
pub(super) async fn created(
    app: &App,
    staff: &CurrentStaff,
    id: TokenId,
    value: SecretString,
    back: String,
) -> PageResult {
    let info = app.tokens.get(id).await?;
    let page = CreatedPage {
        nav: staff.nav(),
        name: info.name,
        id: id.to_string(),
        scopes: info
            .scopes
            .iter()
            .map(Scope::as_str)
            .collect::<Vec<_>>()
            .join(", "),
        expires: info
            .expires_at
            .map_or_else(|| "never".to_owned(), format_time),
        value: value.expose_secret().to_owned(),
        back,
    };
    Ok(([(header::CACHE_CONTROL, "no-store")], page).into_response())
}

/// `page` with `status`.
pub(super) fn with_status(status: StatusCode, page: TokensPage) -> Response {
    (status, page).into_response()
}

/// What a refused create becomes: the form's words, or a page error.
pub(super) fn refusal(e: TokenError) -> Result<String, PageError> {
    match e {
        TokenError::Invalid(m) => {
            let mut chars = m.chars();
            Ok(chars
                .next()
                .map(|c| format!("{}{}.", c.to_uppercase(), chars.as_str()))
                .unwrap_or_default())
        }
        other => Err(other.into()),
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct DoneQuery {
    done: String,
}

impl DoneQuery {
    pub(super) fn done(&self) -> &str {
        &self.done
    }
}

pub(super) fn notice(done: &str) -> Option<&'static str> {
    match done {
        "revoked" => Some("The token is revoked: it stops working at once."),
        "already" => Some("That token was already revoked."),
        "created" => Some("The service account is created. Give it a token below."),
        "disabled" => Some("The service account is disabled: none of its tokens work any more."),
        _ => None,
    }
}

async fn own_page(
    app: &App,
    staff: &CurrentStaff,
    form: TokenFields,
    notice: Option<&'static str>,
    errors: Vec<String>,
) -> Result<TokensPage, PageError> {
    Ok(TokensPage {
        nav: staff.nav(),
        csrf: staff.csrf.clone(),
        heading: "Your API tokens".to_owned(),
        base: OWN.to_owned(),
        back: ("/account".to_owned(), "Your account"),
        rows: token_rows(app, staff.id()).await?,
        form,
        can_create: true,
        service: None,
        notice,
        errors,
    })
}

pub async fn page(
    State(app): State<App>,
    staff: CurrentStaff,
    Query(q): Query<DoneQuery>,
) -> PageResult {
    let form = TokenFields::empty(staff.is_admin());
    let view = own_page(&app, &staff, form, notice(q.done()), Vec::new()).await?;
    Ok(view.into_response())
}

/// Creates a token for the signed-in member and shows it once.
pub async fn create(
    State(app): State<App>,
    staff: CurrentStaff,
    CsrfForm(pairs): CsrfForm<Vec<(String, String)>>,
) -> PageResult {
    let (form, parsed) = parse_token_form(&pairs, staff.is_admin());
    let errors = match parsed {
        Ok(choice) => {
            let new = choice.into_new(staff.id(), app.clock.now());
            match app
                .tokens
                .create_from(staff.actor(), Some(staff.ip), new)
                .await
            {
                Ok((id, value)) => return created(&app, &staff, id, value, OWN.to_owned()).await,
                Err(e) => vec![refusal(e)?],
            }
        }
        Err(errors) => errors,
    };
    let view = own_page(&app, &staff, form, None, errors).await?;
    Ok(with_status(StatusCode::UNPROCESSABLE_ENTITY, view))
}

#[derive(Deserialize)]
pub struct Empty {}

/// Revokes one of the member's own tokens; anyone else's is not found.
pub async fn revoke(
    State(app): State<App>,
    staff: CurrentStaff,
    Path(id): Path<String>,
    CsrfForm(_): CsrfForm<Empty>,
) -> PageResult {
    let id = TokenId::parse(&id).ok_or(PageError::NotFound)?;
    let revoked = app
        .tokens
        .revoke_from(staff.actor(), Some(staff.ip), id, Some(staff.id()))
        .await?;
    let done = if revoked { "revoked" } else { "already" };
    Ok(Redirect::to(&format!("{OWN}?done={done}")).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn the_form_parses_and_says_what_is_wrong() {
        let (_, ok) = parse_token_form(
            &form(&[
                ("name", " helpdesk "),
                ("scope", "messages:read"),
                ("scope", "messages:send"),
                ("expiry", "30"),
            ]),
            false,
        );
        let ok = ok.unwrap();
        assert_eq!(ok.name, "helpdesk");
        assert_eq!(ok.scopes.to_string(), "messages:send,messages:read");
        assert_eq!(ok.days, Some(30));

        let (_, never) = parse_token_form(
            &form(&[("name", "n"), ("scope", "inbox:read"), ("expiry", "never")]),
            false,
        );
        assert_eq!(never.unwrap().days, None);
        let days = |d: &str| {
            parse_token_form(
                &form(&[
                    ("name", "n"),
                    ("scope", "inbox:read"),
                    ("expiry", "days"),
                    ("expiry_days", d),
                ]),
                false,
            )
            .1
        };
        assert_eq!(days("7").unwrap().days, Some(7));
        assert_eq!(days("3650").unwrap().days, Some(3650));
        for bad in ["", "0", "-1", "3651", "1.5", "ten", "30d"] {
            let e = days(bad).unwrap_err();
            assert!(e[0].contains("number of days"), "{bad:?}: {e:?}");
        }

        let (f, bad) = parse_token_form(
            &form(&[("name", ""), ("scope", "admin"), ("expiry", "1000")]),
            false,
        );
        let errors = bad.unwrap_err();
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(errors[1].contains("admin scope"));
        assert!(
            f.scopes.iter().all(|(v, _, _)| *v != "admin"),
            "not offered to an agent"
        );
        let (_, admin) = parse_token_form(
            &form(&[("name", "n"), ("scope", "admin"), ("expiry", "never")]),
            true,
        );
        assert_eq!(admin.unwrap().scopes.to_string(), "admin");
        let (_, none) = parse_token_form(&form(&[("name", "n"), ("expiry", "30")]), true);
        assert!(none.unwrap_err()[0].contains("at least one scope"));
        let (_, odd) = parse_token_form(
            &form(&[("name", "n"), ("scope", "messages:write"), ("expiry", "30")]),
            true,
        );
        assert_eq!(
            odd.unwrap_err(),
            vec!["Choose scopes from the list.".to_owned()]
        );
    }
}
