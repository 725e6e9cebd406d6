//! Who is calling the API: the bearer token, checked once per request by
//! [`authenticate`] (which also audits the call), read by handlers as a
//! [`Caller`]. Cookies play no part here, so the API has no CSRF surface;
//! and the portal's extractors read only sessions, so a token opens no page.

use std::net::IpAddr;

use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::http::header;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use secrecy::SecretString;

use super::ApiError;
use crate::app::App;
use crate::audit::{Action, Actor, Event};
use crate::ids::{MessageId, StaffId};
use crate::staff::tokens::{Authenticated, Scope};
use crate::web::PageError;
use crate::web::client_ip::ClientIp;

/// The authenticated caller of an API route.
#[derive(Clone, Debug)]
pub struct Caller {
    pub auth: Authenticated,
    pub ip: IpAddr,
}

impl Caller {
    pub fn id(&self) -> StaffId {
        self.auth.owner.account.id
    }

    pub fn actor(&self) -> Actor {
        Actor::Staff(self.id().to_string())
    }

    /// 403 unless the token grants `scope`.
    pub fn require(&self, scope: Scope) -> Result<(), ApiError> {
        if self.auth.allows(scope) {
            Ok(())
        } else {
            Err(PageError::Forbidden(format!(
                "This token does not have the `{scope}` scope. Create a token that has it."
            ))
            .into())
        }
    }

    /// Whether the caller sees everyone's items (an admin's token with the
    /// `admin` scope), not only their own.
    pub fn sees_all(&self) -> bool {
        self.auth.allows(Scope::Admin)
    }

    /// Who acts, as the shared flows see it.
    pub fn acting(&self) -> crate::flows::Acting {
        crate::flows::Acting {
            staff: self.id(),
            sees_all: self.sees_all(),
            ip: self.ip,
        }
    }
}

impl FromRequestParts<App> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _app: &App) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or(ApiError(PageError::Unauthorized))
    }
}

/// The message a call concerned, for its audit event: a handler puts it in
/// its response's extensions.
#[derive(Clone, Copy, Debug)]
pub struct Concerns(pub MessageId);

/// Checks the bearer token of every API route (401 problem otherwise),
/// runs the route, and records one `api.call` audit event with the token,
/// route template, method and status.
pub async fn authenticate(
    State(app): State<App>,
    ClientIp(ip): ClientIp,
    mut req: Request,
    next: Next,
) -> Response {
    let Some(presented) = bearer(&req) else {
        return ApiError(PageError::Unauthorized).into_response();
    };
    let auth = match app.tokens.authenticate(&presented, ip).await {
        Ok(auth) => auth,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let method = req.method().as_str().to_owned();
    let caller = Caller { auth, ip };
    let actor = caller.actor();
    let token = caller.auth.token.id.to_string();
    req.extensions_mut().insert(caller);
    let response = next.run(req).await;
    let mut event = Event::new(actor, Action::ApiCall)
        .ip(ip)
        .detail(serde_json::json!({
            "token": token,
            "method": method,
            "route": route,
            "status": response.status().as_u16(),
        }));
    if let Some(Concerns(id)) = response.extensions().get::<Concerns>() {
        event = event.message(*id);
    }
    if let Err(e) = app.audit.record_now(&event).await {
        // The call happened; an answer it cannot audit is not given.
        return ApiError::from(e).into_response();
    }
    response
}

/// The token of an `Authorization: Bearer …` header.
fn bearer(req: &Request) -> Option<SecretString> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| SecretString::from(token.trim().to_owned()))
}
