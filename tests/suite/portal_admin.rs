//! Admin pages, invitations and the first-run setup link over HTTP: the
//! real router on a loopback port, a real database (SQLite, or PostgreSQL
//! when SEALPOST_TEST_DATABASE_URL is set).

use sealpost::app::App;
use sealpost::settings::{MAX_LOGO_BYTES, Method};
use sealpost::staff::{Role, StaffId};
use secrecy::ExposeSecret;

use crate::support::START;
use crate::support::env::TestEnv;
use crate::support::http::{
    Browser, PASSWORD, Resp, create_staff, element_text, input_value, page_link, portal,
};

/// START as a day, for export ranges and file names.
const TODAY: &str = "2027-01-15";
const NEW_PASSWORD: &str = "a quiet lighthouse at dawn";
const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01";

async fn count_actions(app: &App, action: &str) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM audit_log WHERE action = $1")
        .bind(action)
        .fetch_one(app.db.pool())
        .await
        .unwrap()
}

async fn details(app: &App, action: &str) -> Vec<(String, serde_json::Value)> {
    let rows: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT actor, detail FROM audit_log WHERE action = $1 ORDER BY id")
            .bind(action)
            .fetch_all(app.db.pool())
            .await
            .unwrap();
    rows.into_iter()
        .map(|(actor, d)| (actor, serde_json::from_str(&d.unwrap_or_default()).unwrap()))
        .collect()
}

/// Path and query of a full link (`http://host/invite/…` → `/invite/…`).
fn path_of(url: &str) -> String {
    let rest = &url[url.find("://").unwrap() + 3..];
    rest[rest.find('/').unwrap()..].to_owned()
}

fn logo_form(csrf: Option<&str>, name: &str, data: Vec<u8>) -> reqwest::multipart::Form {
    let mut form = reqwest::multipart::Form::new();
    if let Some(t) = csrf {
        form = form.text("csrf", t.to_owned());
    }
    form.part(
        "logo",
        reqwest::multipart::Part::bytes(data).file_name(name.to_owned()),
    )
}

/// Invites `email` through the admin page and returns the link's path.
async fn invite(app: &App, admin: &mut Browser, email: &str, role: &str) -> String {
    let r = admin
        .submit(
            "/admin/staff",
            "/admin/staff/invite",
            &[("email", email), ("role", role)],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("We emailed"), "{}", r.body);
    assert!(
        !r.body.contains("/invite/"),
        "the admin never sees the link"
    );
    let to = email.trim().to_lowercase();
    let mails = crate::support::http::dev_mail(app, admin, &to).await;
    let last = mails.last().expect("an invitation email");
    crate::support::http::link_in(last, "/invite/").expect("invite link in the email")
}

async fn set_password(b: &mut Browser, path: &str, pw: &str, repeat: &str) -> Resp {
    b.submit(path, path, &[("password", pw), ("password_repeat", repeat)])
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_get_404_on_every_admin_page_and_action() {
    let env = TestEnv::new().await;
    let (app, _clock, base) = portal(&env, START).await;
    let admin_id = create_staff(&app, "admin@example.com", Role::Admin).await;
    let agent_id = create_staff(&app, "agent@example.com", Role::Agent).await;
    let before = app.settings.load().await.unwrap();
    let events_before: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_log")
        .fetch_one(app.db.pool())
        .await
        .unwrap();

    let mut b = Browser::signed_in(&base, "agent@example.com").await;
    let sent = b.get("/sent").await;
    assert!(
        !sent.body.contains("href=\"/admin\""),
        "no admin link for agents"
    );
    for page in ["/admin", "/admin/settings", "/admin/staff", "/admin/audit"] {
        assert_eq!(b.get(page).await.status, 404, "GET {page}");
    }
    let token = b.csrf("/sent").await;
    let admin = admin_id.to_string();
    let agent = agent_id.to_string();
    let posts: Vec<(String, Vec<(&str, &str)>)> = vec![
        (
            "/admin/settings".into(),
            vec![
                ("organisation", "Evil"),
                ("default_expiry_hours", "1"),
                ("size_limit_mib", "1"),
                ("method", "email_code"),
            ],
        ),
        (
            "/admin/staff/invite".into(),
            vec![("email", "mallory@example.com"), ("role", "admin")],
        ),
        (format!("/admin/staff/{admin}/disable"), vec![]),
        (format!("/admin/staff/{admin}/reset-totp"), vec![]),
        (format!("/admin/staff/{agent}/disable"), vec![]),
        (
            "/admin/audit/export".into(),
            vec![("from", TODAY), ("to", TODAY), ("format", "csv")],
        ),
    ];
    for (path, fields) in posts {
        let mut all = vec![("csrf", token.as_str())];
        all.extend(fields);
        let r = b.post(&path, &all).await;
        assert_eq!(r.status, 404, "POST {path}");
        assert!(!r.body.contains("id,at,actor"), "{path} leaked an export");
    }
    let r = b
        .post_multipart(
            "/admin/logo",
            logo_form(Some(&token), "x.png", PNG.to_vec()),
        )
        .await;
    assert_eq!(r.status, 404, "POST /admin/logo");

    // Nothing changed, nothing was recorded, and the agent is still signed in.
    assert_eq!(app.settings.load().await.unwrap(), before);
    assert!(app.settings.logo().await.unwrap().is_none());
    assert_eq!(app.accounts.count().await.unwrap(), 2);
    let state = app.accounts.state(admin_id).await.unwrap().unwrap();
    assert!(!state.account.disabled);
    let events_after: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_log")
        .fetch_one(app.db.pool())
        .await
        .unwrap();
    assert_eq!(events_after, events_before + 1, "only the agent's sign-in");
    assert_eq!(b.get("/sent").await.status, 200);

    // Signed out: sent to sign in, as for any staff page.
    let mut anon = Browser::new(&base);
    let r = anon.get("/admin/settings").await;
    assert_eq!(r.status, 303);
    assert!(r.location().unwrap().starts_with("/sign-in"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_changes_settings_and_bad_values_are_refused() {
    let env = TestEnv::new().await;
    let (app, _clock, base) = portal(&env, START).await;
    create_staff(&app, "admin@example.com", Role::Admin).await;
    let mut b = Browser::signed_in(&base, "admin@example.com").await;

    let overview = b.get("/admin").await;
    assert_eq!(overview.status, 200);
    for link in ["/admin/settings", "/admin/staff", "/admin/audit"] {
        assert!(
            overview.body.contains(&format!("href=\"{link}\"")),
            "{link}"
        );
    }
    let page = b.get("/admin/settings").await;
    assert_eq!(page.status, 200);
    // Every visible input has a label.
    for id in [
        "organisation",
        "support_line",
        "default_expiry_hours",
        "size_limit_mib",
        "logo",
    ] {
        assert!(page.body.contains(&format!("<label for=\"{id}\"")), "{id}");
    }
    assert_eq!(
        input_value(&page.body, "organisation").as_deref(),
        Some("Sealpost")
    );

    let r = b
        .submit(
            "/admin/settings",
            "/admin/settings",
            &[
                ("organisation", "Acme Insurance"),
                ("support_line", "Questions? Call 0800 123 456"),
                ("default_expiry_hours", "48"),
                ("size_limit_mib", "25"),
                ("method", "access_code"),
                ("method", "known_fact"),
                ("totp_required", "on"),
                ("kinds_shown", "1"),
                ("kind", "pdf"),
                ("kind", "png"),
            ],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(r.location(), Some("/admin/settings?done=saved"));
    let s = app.settings.load().await.unwrap();
    assert_eq!(s.organisation, "Acme Insurance");
    assert_eq!(s.support_line, "Questions? Call 0800 123 456");
    assert_eq!(s.default_expiry_hours, 48);
    assert_eq!(s.size_limit_mib, 25);
    assert_eq!(s.methods, vec![Method::AccessCode, Method::KnownFact]);
    assert!(s.totp_required);
    assert_eq!(
        s.accepted_kinds,
        vec![
            sealpost::filetype::FileKind::Pdf,
            sealpost::filetype::FileKind::Png
        ]
    );
    let changed = details(&app, "settings.changed").await;
    assert_eq!(changed.len(), 1);
    assert!(changed[0].0.starts_with("staff:"));

    // TOTP is now required, so the admin must enrol before going on:
    // switch it off again directly to keep the rest of the test simple.
    let mut s2 = s.clone();
    s2.totp_required = false;
    app.settings
        .save(sealpost::audit::Actor::Cli, &s2)
        .await
        .unwrap();
    let page = b.get("/admin/settings").await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("Settings") && page.body.contains("Acme Insurance"));

    let good = [
        ("organisation", "Acme"),
        ("support_line", ""),
        ("default_expiry_hours", "24"),
        ("size_limit_mib", "10"),
        ("method", "email_code"),
    ];
    let cases: Vec<(&str, &str, &str)> = vec![
        ("default_expiry_hours", "0", "between 1 hour and 30 days"),
        ("default_expiry_hours", "721", "between 1 hour and 30 days"),
        ("default_expiry_hours", "two days", "whole number of hours"),
        ("size_limit_mib", "0", "size limit"),
        ("size_limit_mib", "-5", "whole number of mib"),
        ("organisation", "   ", "organisation name"),
        ("method", "", "verification method"),
    ];
    for (name, value, message) in cases {
        let fields: Vec<(&str, &str)> = good
            .iter()
            .map(|(k, v)| if *k == name { (*k, value) } else { (*k, *v) })
            .filter(|(k, v)| !(*k == "method" && v.is_empty()))
            .collect();
        let r = b
            .submit("/admin/settings", "/admin/settings", &fields)
            .await;
        assert_eq!(r.status, 422, "{name}={value:?}");
        let errors = r.body[r.body.find("id=\"form-errors\"").expect("errors shown")..].to_owned();
        assert!(
            errors.to_lowercase().contains(message),
            "{name}={value:?}: {errors}"
        );
        // The form comes back as typed.
        if name != "method" && !value.trim().is_empty() {
            assert_eq!(input_value(&r.body, name).as_deref(), Some(value));
        }
    }
    // Every file kind unticked: customers could send nothing.
    let mut fields = good.to_vec();
    fields.push(("kinds_shown", "1"));
    let r = b
        .submit("/admin/settings", "/admin/settings", &fields)
        .await;
    assert_eq!(r.status, 422);
    assert!(
        r.body.contains("Accept at least one kind of file"),
        "{}",
        r.body
    );
    assert_eq!(app.settings.load().await.unwrap(), s2, "nothing saved");
    assert_eq!(details(&app, "settings.changed").await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logo_upload_png_is_served_and_svg_is_refused() {
    let env = TestEnv::new().await;
    let (app, _clock, base) = portal(&env, START).await;
    create_staff(&app, "admin@example.com", Role::Admin).await;
    let mut b = Browser::signed_in(&base, "admin@example.com").await;
    let mut anon = Browser::new(&base);
    assert_eq!(anon.get("/logo").await.status, 404);

    let token = b.csrf("/admin/settings").await;
    let r = b
        .post_multipart(
            "/admin/logo",
            logo_form(Some(&token), "logo.png", PNG.to_vec()),
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(r.location(), Some("/admin/settings?done=logo"));
    let served = anon.get("/logo").await;
    assert_eq!(served.status, 200);
    assert_eq!(served.header("content-type"), Some("image/png"));
    assert_eq!(served.header("x-content-type-options"), Some("nosniff"));
    // The test client keeps bodies as (lossy) text: compare likewise, and the length.
    assert_eq!(served.body, String::from_utf8_lossy(PNG));
    assert_eq!(
        served.header("content-length"),
        Some(PNG.len().to_string().as_str())
    );
    assert!(
        b.get("/admin/settings")
            .await
            .body
            .contains("src=\"/logo\"")
    );

    // SVG (can carry script), oversized, and empty uploads: refused, logo unchanged.
    let svg = b"<svg xmlns=\"http://www.w3.org/2000/svg\" onload=\"alert(1)\"/>".to_vec();
    let r = b
        .post_multipart("/admin/logo", logo_form(Some(&token), "logo.svg", svg))
        .await;
    assert_eq!(r.status, 422);
    assert!(
        element_text(&r.body, "logo-error")
            .unwrap()
            .contains("PNG or JPEG")
    );
    let mut big = PNG.to_vec();
    big.resize(MAX_LOGO_BYTES + 1, 0);
    let r = b
        .post_multipart("/admin/logo", logo_form(Some(&token), "big.png", big))
        .await;
    assert!(r.status == 422 || r.status == 413, "{}", r.status);
    assert!(r.body.contains("at most 256 KiB"));
    let r = b
        .post_multipart("/admin/logo", logo_form(Some(&token), "", Vec::new()))
        .await;
    assert_eq!(r.status, 422);
    // The token must come first.
    let r = b
        .post_multipart(
            "/admin/logo",
            logo_form(None, "logo.png", b"\xff\xd8\xff".to_vec()),
        )
        .await;
    assert_eq!(r.status, 403);
    let (content_type, data) = app.settings.logo().await.unwrap().unwrap();
    assert_eq!(content_type, "image/png");
    assert_eq!(data, PNG);
    assert_eq!(details(&app, "settings.changed").await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invitation_link_works_once_and_the_colleague_signs_in() {
    let env = TestEnv::new().await;
    let (app, _clock, base) = portal(&env, START).await;
    create_staff(&app, "admin@example.com", Role::Admin).await;
    let mut admin = Browser::signed_in(&base, "admin@example.com").await;

    // Refused invitations: bad address, existing address, bad role.
    for (email, role, message) in [
        ("not-an-address", "agent", "email address"),
        ("Admin@Example.com", "agent", "already exists"),
        ("new@example.com", "superuser", "Choose a role"),
    ] {
        let r = admin
            .submit(
                "/admin/staff",
                "/admin/staff/invite",
                &[("email", email), ("role", role)],
            )
            .await;
        assert_eq!(r.status, 422, "{email}");
        assert!(
            element_text(&r.body, "form-error")
                .unwrap()
                .contains(message)
        );
    }
    assert_eq!(app.accounts.count().await.unwrap(), 1);

    let path = invite(&app, &mut admin, "New.Colleague@example.com", "agent").await;
    let token = path.trim_start_matches("/invite/").to_owned();
    assert_eq!(token.len(), 43, "256 bits, base64url");
    let staff = admin.get("/admin/staff").await;
    assert!(staff.body.contains("new.colleague@example.com"));
    assert!(staff.body.contains(">invited<"));

    // Audited with ids only; only a keyed hash of the token is stored.
    let invited = details(&app, "staff.invited").await;
    assert_eq!(invited.len(), 1);
    assert_eq!(invited[0].1["role"], "agent");
    let new_id = invited[0].1["staff_id"].as_str().unwrap().to_owned();
    assert!(!invited[0].1.to_string().contains("colleague"));
    let stored: Vec<Vec<u8>> = sqlx::query_scalar("SELECT token_hash FROM staff_links")
        .fetch_all(app.db.pool())
        .await
        .unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(
        stored[0],
        app.vault
            .keyed_hash(sealpost::vault::Purpose::StaffLink, &base64_decode(&token),)
    );
    let db = env.database_bytes(&app).await;
    assert!(
        !db.windows(token.len()).any(|w| w == token.as_bytes()),
        "the token itself is stored"
    );

    // Before the link is used the account cannot sign in.
    let mut c = Browser::new(&base);
    assert_eq!(
        c.sign_in("new.colleague@example.com", PASSWORD)
            .await
            .status,
        401
    );

    // Opening the link changes nothing; mistakes do not use it up.
    let page = c.get(&path).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("new.colleague@example.com"));
    assert!(page.body.contains("<label for=\"password_repeat\""));
    let r = set_password(&mut c, &path, NEW_PASSWORD, "something else entirely").await;
    assert_eq!(r.status, 422);
    assert!(r.body.contains("do not match"));
    let r = set_password(&mut c, &path, "short", "short").await;
    assert_eq!(r.status, 422);
    assert!(r.body.contains("at least 8 characters"));
    let r = set_password(&mut c, &path, NEW_PASSWORD, NEW_PASSWORD).await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(r.location(), Some("/sign-in?reason=password-set"));

    // Once only: the page and the form are both gone now.
    let again = c.get(&path).await;
    assert_eq!(again.status, 404);
    assert!(element_text(&again.body, "link-invalid").is_some());
    let token_csrf = c.csrf("/sign-in").await;
    let r = c
        .post(
            &path,
            &[
                ("csrf", &token_csrf),
                ("password", "another fine passphrase"),
                ("password_repeat", "another fine passphrase"),
            ],
        )
        .await;
    assert_eq!(r.status, 404);
    // An unknown token gets the very same page.
    let unknown = c.get(&format!("/invite/{}", "A".repeat(43))).await;
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.body, again.body);
    assert_eq!(c.get("/invite/garbage").await.body, again.body);

    let r = c.sign_in("new.colleague@example.com", NEW_PASSWORD).await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(r.location(), Some("/sent"));
    assert_eq!(c.get("/sent").await.status, 200);
    assert_eq!(c.get("/admin").await.status, 404, "invited as an agent");
    let accepted = details(&app, "staff.invite_accepted").await;
    assert_eq!(accepted.len(), 1);
    assert_eq!(accepted[0].0, format!("staff:{new_id}"));
    assert!(admin.get("/admin/staff").await.body.contains(">active<"));
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_invitation_is_refused() {
    let env = TestEnv::new().await;
    let (app, clock, base) = portal(&env, START).await;
    create_staff(&app, "admin@example.com", Role::Admin).await;
    let mut admin = Browser::signed_in(&base, "admin@example.com").await;
    let path = invite(&app, &mut admin, "late@example.com", "admin").await;
    let mut c = Browser::new(&base);
    assert_eq!(c.get(&path).await.status, 200);
    let token = input_value(&c.get(&path).await.body, "csrf").unwrap();

    clock.advance(73 * 3600);
    let r = c.get(&path).await;
    assert_eq!(r.status, 404);
    assert!(element_text(&r.body, "link-invalid").is_some());
    let r = c
        .post(
            &path,
            &[
                ("csrf", &token),
                ("password", NEW_PASSWORD),
                ("password_repeat", NEW_PASSWORD),
            ],
        )
        .await;
    assert_eq!(r.status, 404);
    assert_eq!(
        c.sign_in("late@example.com", NEW_PASSWORD).await.status,
        401
    );
    assert_eq!(count_actions(&app, "staff.invite_accepted").await, 0);
    let mut admin = Browser::signed_in(&base, "admin@example.com").await;
    assert!(
        admin
            .get("/admin/staff")
            .await
            .body
            .contains("invitation expired")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_disables_a_user_and_their_session_ends() {
    let env = TestEnv::new().await;
    let (app, _clock, base) = portal(&env, START).await;
    let admin_id = create_staff(&app, "admin@example.com", Role::Admin).await;
    let agent_id = create_staff(&app, "agent@example.com", Role::Agent).await;
    let mut agent = Browser::signed_in(&base, "agent@example.com").await;
    assert_eq!(agent.get("/sent").await.status, 200);
    let mut admin = Browser::signed_in(&base, "admin@example.com").await;

    let list = admin.get("/admin/staff").await;
    assert!(
        list.body
            .contains(&format!("/admin/staff/{agent_id}/disable"))
    );
    assert!(
        !list
            .body
            .contains(&format!("/admin/staff/{admin_id}/disable")),
        "no button to disable yourself"
    );

    // Not yourself, even by crafting the request.
    let r = admin
        .submit(
            "/admin/staff",
            &format!("/admin/staff/{admin_id}/disable"),
            &[],
        )
        .await;
    assert_eq!(r.status, 422);
    assert!(
        element_text(&r.body, "form-error")
            .unwrap()
            .contains("your own account")
    );
    assert!(
        !app.accounts
            .state(admin_id)
            .await
            .unwrap()
            .unwrap()
            .account
            .disabled
    );

    // Unknown ids are a plain 404.
    let r = admin
        .submit(
            "/admin/staff",
            "/admin/staff/00000000-0000-4000-8000-000000000000/disable",
            &[],
        )
        .await;
    assert_eq!(r.status, 404);
    let r = admin
        .submit("/admin/staff", "/admin/staff/nonsense/disable", &[])
        .await;
    assert_eq!(r.status, 404);

    let r = admin
        .submit(
            "/admin/staff",
            &format!("/admin/staff/{agent_id}/disable"),
            &[],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(r.location(), Some("/admin/staff?done=disabled"));
    let r = agent.get("/sent").await;
    assert_eq!(r.status, 303);
    assert_eq!(r.location(), Some("/sign-in?reason=ended"));
    assert_eq!(
        agent.sign_in("agent@example.com", PASSWORD).await.status,
        401
    );
    let page = admin.get("/admin/staff?done=disabled").await;
    assert!(page.body.contains(">disabled<"));
    let disabled = details(&app, "staff.disabled").await;
    assert_eq!(disabled.len(), 1);
    assert_eq!(disabled[0].0, format!("staff:{admin_id}"));
    assert_eq!(disabled[0].1["staff_id"], agent_id.to_string());
    // The admin is still signed in.
    assert_eq!(admin.get("/admin").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_resets_a_users_two_step_verification() {
    use sealpost::clock::Clock;
    let env = TestEnv::new().await;
    let (app, clock, base) = portal(&env, START).await;
    let admin_id = create_staff(&app, "admin@example.com", Role::Admin).await;
    let agent_id: StaffId = create_staff(&app, "agent@example.com", Role::Agent).await;
    let enrolment = app.totp.begin("Sealpost", "agent@example.com").unwrap();
    let code = sealpost::staff::totp::code_at(enrolment.secret_base32.expose_secret(), clock.now())
        .unwrap();
    app.totp
        .confirm(agent_id, &enrolment.sealed_seed, &code, None)
        .await
        .unwrap()
        .expect("enrolled");
    assert!(
        app.accounts
            .state(agent_id)
            .await
            .unwrap()
            .unwrap()
            .totp_enabled
    );

    let mut admin = Browser::signed_in(&base, "admin@example.com").await;
    let list = admin.get("/admin/staff").await;
    let row = &list.body[list.body.find(&format!("id=\"staff-{agent_id}\"")).unwrap()..];
    let row = &row[..row.find("</tr>").unwrap()];
    assert!(row.contains("<td>on</td>"), "{row}");
    let r = admin
        .submit(
            "/admin/staff",
            &format!("/admin/staff/{agent_id}/reset-totp"),
            &[],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(r.location(), Some("/admin/staff?done=totp-reset"));
    assert!(
        !app.accounts
            .state(agent_id)
            .await
            .unwrap()
            .unwrap()
            .totp_enabled
    );
    assert_eq!(app.totp.recovery_codes_left(agent_id).await.unwrap(), 0);
    let reset = details(&app, "staff.totp_reset").await;
    assert_eq!(reset.len(), 1);
    assert_eq!(reset[0].0, format!("staff:{admin_id}"));
    assert_eq!(reset[0].1["staff_id"], agent_id.to_string());
    // The password alone signs in now.
    let mut agent = Browser::new(&base);
    let r = agent.sign_in("agent@example.com", PASSWORD).await;
    assert_eq!(r.location(), Some("/sent"));
    let list = admin.get("/admin/staff").await;
    let row = &list.body[list.body.find(&format!("id=\"staff-{agent_id}\"")).unwrap()..];
    assert!(row[..row.find("</tr>").unwrap()].contains("<td>off</td>"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_export_downloads_csv_and_json_and_is_audited() {
    let env = TestEnv::new().await;
    let (app, _clock, base) = portal(&env, START).await;
    create_staff(&app, "admin@example.com", Role::Admin).await;
    let mut admin = Browser::signed_in(&base, "admin@example.com").await;
    let page = admin.get("/admin/audit").await;
    assert_eq!(page.status, 200);
    assert_eq!(input_value(&page.body, "to").as_deref(), Some(TODAY));

    let r = admin
        .submit(
            "/admin/audit",
            "/admin/audit/export",
            &[("from", TODAY), ("to", TODAY), ("format", "csv")],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.header("content-disposition"),
        Some("attachment; filename=\"sealpost-audit-2027-01-15-2027-01-15.csv\"")
    );
    assert!(r.header("content-type").unwrap().starts_with("text/csv"));
    assert!(
        r.header("content-security-policy")
            .unwrap()
            .contains("sandbox")
    );
    let mut lines = r.body.lines();
    assert_eq!(
        lines.next(),
        Some("id,at,actor,action,message_id,ip,detail")
    );
    let actions: Vec<&str> = lines.map(|l| l.split(',').nth(3).unwrap()).collect();
    assert_eq!(actions, ["staff.created", "staff.signed_in"]);

    let r = admin
        .submit(
            "/admin/audit",
            "/admin/audit/export",
            &[("from", "2027-01-01"), ("to", TODAY), ("format", "json")],
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-disposition"),
        Some("attachment; filename=\"sealpost-audit-2027-01-01-2027-01-15.json\"")
    );
    let events: Vec<serde_json::Value> = serde_json::from_str(&r.body).unwrap();
    let actions: Vec<&str> = events
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        ["staff.created", "staff.signed_in", "audit.exported"]
    );
    assert_eq!(events[2]["actor"], events[1]["actor"], "the admin exported");

    // A day range outside the log: just the header.
    let r = admin
        .submit(
            "/admin/audit",
            "/admin/audit/export",
            &[
                ("from", "2020-01-01"),
                ("to", "2020-01-02"),
                ("format", "csv"),
            ],
        )
        .await;
    assert_eq!(r.body.trim(), "id,at,actor,action,message_id,ip,detail");

    // Bad input: the form again, nothing exported or recorded.
    for (from, to, format, message) in [
        ("15/01/2027", TODAY, "csv", "like 2026-11-29"),
        (TODAY, "2027-01-01", "csv", "must not be before"),
        (TODAY, TODAY, "xml", "CSV or JSON"),
    ] {
        let r = admin
            .submit(
                "/admin/audit",
                "/admin/audit/export",
                &[("from", from), ("to", to), ("format", format)],
            )
            .await;
        assert_eq!(r.status, 422, "{from} {to} {format}");
        assert!(r.header("content-disposition").is_none());
        assert!(
            element_text(&r.body, "form-error")
                .unwrap()
                .contains(message)
        );
    }
    let exported = details(&app, "audit.exported").await;
    assert_eq!(exported.len(), 3);
    assert_eq!(exported[0].1["events"], 2);
    assert!(exported[0].0.starts_with("staff:"));
    assert!(matches!(
        app.audit.verify().await.unwrap(),
        sealpost::audit::Verification::Intact { events: 5 }
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_link_creates_the_first_admin_once() {
    let env = TestEnv::new().await;
    let (app, _clock, base) = portal(&env, START).await;
    let first = app.links.issue_setup_link().await.unwrap().expect("a link");
    let url = app.links.issue_setup_link().await.unwrap().expect("a link");
    let url = url.expose_secret();
    assert!(
        url.starts_with(&format!("{}/setup/", app.config.public_url)),
        "{url}"
    );
    assert_eq!(count_actions(&app, "setup.link_issued").await, 2);
    let path = path_of(url);
    let mut b = Browser::new(&base);
    // Issuing a new link ended the first one.
    assert_eq!(b.get(&path_of(first.expose_secret())).await.status, 404);

    let page = b.get(&path).await;
    assert_eq!(page.status, 200);
    for id in ["email", "password", "password_repeat"] {
        assert!(page.body.contains(&format!("<label for=\"{id}\"")), "{id}");
    }
    let r = b
        .submit(
            &path,
            &path,
            &[
                ("email", "boss@example.com"),
                ("password", "password"),
                ("password_repeat", "password"),
            ],
        )
        .await;
    assert_eq!(r.status, 422);
    assert!(r.body.contains("too common"));
    assert_eq!(
        input_value(&r.body, "email").as_deref(),
        Some("boss@example.com")
    );
    let r = b
        .submit(
            &path,
            &path,
            &[
                ("email", "boss@example.com"),
                ("password", NEW_PASSWORD),
                ("password_repeat", "not the same"),
            ],
        )
        .await;
    assert_eq!(r.status, 422);
    assert_eq!(app.accounts.count().await.unwrap(), 0);

    let token = b.csrf(&path).await;
    let fields = [
        ("csrf", token.as_str()),
        ("email", "Boss@Example.com"),
        ("password", NEW_PASSWORD),
        ("password_repeat", NEW_PASSWORD),
    ];
    let r = b.post(&path, &fields).await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(r.location(), Some("/sign-in?reason=password-set"));
    assert_eq!(app.accounts.count().await.unwrap(), 1);

    // Second use: refused, and no second account.
    let r = b.post(&path, &fields).await;
    assert_eq!(r.status, 404);
    assert!(element_text(&r.body, "link-invalid").is_some());
    assert_eq!(b.get(&path).await.status, 404);
    assert_eq!(app.accounts.count().await.unwrap(), 1);

    // The new admin signs in and reaches the admin pages.
    let r = b.sign_in("boss@example.com", NEW_PASSWORD).await;
    assert_eq!(r.location(), Some("/sent"));
    assert_eq!(b.get("/admin").await.status, 200);
    let created = details(&app, "staff.created").await;
    assert_eq!(created.len(), 1);
    assert_eq!(created[0].1["role"], "admin");

    // Once someone exists there is no setup link.
    assert!(app.links.issue_setup_link().await.unwrap().is_none());
    assert_eq!(count_actions(&app, "setup.link_issued").await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_link_expires_after_an_hour_and_needs_an_empty_installation() {
    let env = TestEnv::new().await;
    let (app, clock, base) = portal(&env, START).await;
    let url = app.links.issue_setup_link().await.unwrap().unwrap();
    let path = path_of(url.expose_secret());
    let mut b = Browser::new(&base);
    assert_eq!(b.get(&path).await.status, 200);
    let token = b.csrf(&path).await;
    clock.advance(3601);
    assert_eq!(b.get(&path).await.status, 404);
    let r = b
        .post(
            &path,
            &[
                ("csrf", &token),
                ("email", "boss@example.com"),
                ("password", NEW_PASSWORD),
                ("password_repeat", NEW_PASSWORD),
            ],
        )
        .await;
    assert_eq!(r.status, 404);
    assert_eq!(app.accounts.count().await.unwrap(), 0);

    // A fresh link stops working as soon as an account exists some other
    // way (e.g. `sealpost admin create-user`).
    let url = app.links.issue_setup_link().await.unwrap().unwrap();
    let path = path_of(url.expose_secret());
    assert_eq!(b.get(&path).await.status, 200);
    create_staff(&app, "cli@example.com", Role::Admin).await;
    assert_eq!(b.get(&path).await.status, 404);
}

/// The event ids of an audit list page, in page order.
fn event_ids(body: &str) -> Vec<i64> {
    body.split("<tr id=\"event-")
        .skip(1)
        .map(|rest| rest[..rest.find('"').unwrap()].parse().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_list_pages_by_event_id_newest_first() {
    use sealpost::audit::{Action, Actor, Event, Verification};
    let env = TestEnv::new().await;
    let (app, _clock, base) = portal(&env, START).await;
    create_staff(&app, "admin@example.com", Role::Admin).await;
    let mut admin = Browser::signed_in(&base, "admin@example.com").await;
    let note = || async {
        let event = Event::new(Actor::Cli, Action::OrphansSwept);
        app.audit.record_now(&event).await.unwrap()
    };
    for _ in 0..110 {
        note().await;
    }
    let Verification::Intact { events } = app.audit.verify().await.unwrap() else {
        panic!("the chain is intact");
    };
    let n = i64::try_from(events).unwrap();
    let ids = |from: i64, to: i64| (from..=to).rev().collect::<Vec<_>>();

    // Newest first, 50 a page; the first page links only onwards.
    let first = admin.get("/admin/audit").await;
    assert_eq!(first.status, 200);
    assert_eq!(event_ids(&first.body), ids(n - 49, n));
    assert!(first.body.contains("blobs.swept"), "actions are shown");
    assert!(page_link(&first.body, "prev").is_none() && page_link(&first.body, "first").is_none());
    let next = page_link(&first.body, "next").expect("an older page");
    assert_eq!(next, format!("/admin/audit?older={}", n - 49));
    // Events recorded meanwhile do not shift the pages already linked.
    note().await;
    note().await;
    let second = admin.get(&next).await;
    assert_eq!(event_ids(&second.body), ids(n - 99, n - 50));
    let third = admin.get(&page_link(&second.body, "next").unwrap()).await;
    assert_eq!(event_ids(&third.body), ids(1, n - 100));
    assert!(page_link(&third.body, "next").is_none() && page_link(&third.body, "last").is_none());
    // Oldest: the 50 first events; newer from there, the 50 after them.
    let last = admin.get(&page_link(&first.body, "last").unwrap()).await;
    assert_eq!(event_ids(&last.body), ids(1, 50));
    assert!(page_link(&last.body, "next").is_none());
    let up = admin.get(&page_link(&last.body, "prev").unwrap()).await;
    assert_eq!(event_ids(&up.body), ids(51, 100));
    // Back from the second page: the 50 after it, and the two new ones
    // beyond (so a newer page is linked).
    let back = admin.get(&page_link(&second.body, "prev").unwrap()).await;
    assert_eq!(event_ids(&back.body), ids(n - 49, n));
    assert!(page_link(&back.body, "prev").is_some());
    // A damaged link is refused, not guessed at.
    for bad in [
        "/admin/audit?older=x",
        "/admin/audit?older=1&newer=2",
        "/admin/audit?older=end",
    ] {
        assert_eq!(admin.get(bad).await.status, 400, "{bad}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staff_list_pages_by_address_with_ids_in_links() {
    use sealpost::staff::StaffEmail;
    let env = TestEnv::new().await;
    let (app, _clock, base) = portal(&env, START).await;
    create_staff(&app, "admin@example.com", Role::Admin).await;
    let mut admin = Browser::signed_in(&base, "admin@example.com").await;
    let loopback = std::net::IpAddr::from([127, 0, 0, 1]);
    for i in 0..54 {
        let email = StaffEmail::parse(&format!("staff-{i:02}@example.com")).unwrap();
        let actor = sealpost::audit::Actor::Cli;
        app.links
            .invite(actor, loopback, &email, Role::Agent)
            .await
            .unwrap();
    }
    let rows = |body: &str| body.matches("<tr id=\"staff-").count();

    // 55 accounts by address, 50 a page: admin@ and staff-00 … staff-48.
    let first = admin.get("/admin/staff").await;
    assert_eq!(first.status, 200);
    assert_eq!(rows(&first.body), 50);
    assert!(first.body.contains("admin@example.com") && first.body.contains("staff-48@"));
    assert!(!first.body.contains("staff-49@"));
    let next = page_link(&first.body, "next").expect("a next page");
    assert!(
        next.starts_with("/admin/staff?after=") && !next.contains('@'),
        "{next}"
    );
    let second = admin.get(&next).await;
    assert_eq!(rows(&second.body), 5);
    assert!(second.body.contains("staff-49@") && second.body.contains("staff-53@"));
    assert!(page_link(&second.body, "next").is_none());
    // Last: the 50 last addresses (staff-04 … staff-53), linking back.
    let last = admin.get(&page_link(&first.body, "last").unwrap()).await;
    assert_eq!(rows(&last.body), 50);
    assert!(last.body.contains("staff-04@") && last.body.contains("staff-53@"));
    assert!(!last.body.contains("staff-03@"));
    assert!(page_link(&last.body, "prev").is_some() && page_link(&last.body, "next").is_none());
    let back = admin.get(&page_link(&second.body, "prev").unwrap()).await;
    assert_eq!(rows(&back.body), 50);
    assert!(back.body.contains("admin@example.com") && !back.body.contains("staff-49@"));
    assert_eq!(
        page_link(&second.body, "first").as_deref(),
        Some("/admin/staff")
    );
    assert_eq!(admin.get("/admin/staff?after=nonsense").await.status, 400);
}
