//! Staff accounts from the command line: argon2id hashes only, the
//! password policy, duplicates, reset, disable; every change audited.

use sealpost::audit::Verification;
use sealpost::staff::StaffEmail;
use secrecy::SecretString;

use crate::support::env::{TestEnv, runtime};

const PASSWORD: &str = "CANARY-PW correct horse battery";

fn password_file(env: &TestEnv, name: &str, password: &str) -> String {
    let path = env.dir.path().join(name);
    std::fs::write(&path, format!("{password}\n")).expect("write");
    path.display().to_string()
}

/// `sealpost admin create-user` with a password file.
fn create_user(env: &TestEnv, email: &str, role: &str, password_file: &str) -> (bool, String) {
    run(
        env,
        &[
            "admin",
            "create-user",
            "--email",
            email,
            "--role",
            role,
            "--password-file",
            password_file,
        ],
    )
}

fn run(env: &TestEnv, args: &[&str]) -> (bool, String) {
    let out = env.sealpost(args);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn create_reset_disable_from_the_command_line() {
    // A runtime of its own, not #[tokio::test]: the `sealpost` binary runs and is waited for from this thread, between async steps.
    let rt = runtime();
    let env = rt.block_on(TestEnv::new());
    let pw = password_file(&env, "pw", PASSWORD);
    let (ok, text) = create_user(&env, "Jane.Doe@Example.com", "admin", &pw);
    assert!(ok, "{text}");
    assert!(text.contains("created admin account"), "{text}");

    // Same address in another case: refused.
    let (ok, text) = create_user(&env, "jane.doe@example.com", "agent", &pw);
    assert!(!ok);
    assert!(text.contains("already exists"), "{text}");

    let app = rt.block_on(env.app());
    let email = StaffEmail::parse("jane.doe@example.com").expect("email");
    let account = rt.block_on(app.accounts.find(&email)).expect("account");
    assert_eq!(account.role, sealpost::staff::Role::Admin);
    assert!(!account.disabled);
    let hash = rt
        .block_on(app.accounts.password_hash(&email))
        .expect("hash")
        .expect("some");
    assert!(
        hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{hash}"
    );
    let verify = |pw: &str, hash: &str| {
        rt.block_on(
            app.hasher
                .verify(SecretString::from(pw.to_owned()), hash.to_owned()),
        )
        .expect("verify")
    };
    assert!(
        verify(PASSWORD, &hash),
        "the trailing newline of the file is not part of the password"
    );
    // The password is nowhere in the database.
    let db = rt.block_on(env.database_bytes(&app));
    crate::support::canaries::assert_no_canaries("database", &db, &["CANARY-PW correct horse"]);

    let new_pw = password_file(&env, "pw2", "another long passphrase here");
    let (ok, text) = run(
        &env,
        &[
            "admin",
            "reset-password",
            "--email",
            "jane.doe@example.com",
            "--password-file",
            &new_pw,
        ],
    );
    assert!(ok, "{text}");
    let hash2 = rt
        .block_on(app.accounts.password_hash(&email))
        .expect("hash")
        .expect("some");
    assert!(!verify(PASSWORD, &hash2));
    assert!(verify("another long passphrase here", &hash2));

    let (ok, text) = run(
        &env,
        &["admin", "disable-user", "--email", "jane.doe@example.com"],
    );
    assert!(ok && text.contains("account disabled"), "{text}");
    let (ok, text) = run(
        &env,
        &["admin", "disable-user", "--email", "jane.doe@example.com"],
    );
    assert!(ok && text.contains("already disabled"), "{text}");
    // A new process (here: a fresh pool) sees the account disabled.
    let app = rt.block_on(env.app());
    assert!(
        rt.block_on(app.accounts.find(&email))
            .expect("account")
            .disabled
    );
    let (ok, text) = run(
        &env,
        &["admin", "disable-user", "--email", "nobody@example.com"],
    );
    assert!(!ok && text.contains("no staff account"), "{text}");

    // Every change is in the audit log, by id, and the chain holds.
    let events = rt
        .block_on(app.audit.events_between(0, crate::support::env::now() + 60))
        .expect("events");
    let actions: Vec<&str> = events.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        ["staff.created", "staff.password_reset", "staff.disabled"]
    );
    for e in &events {
        let detail = e.detail.as_deref().unwrap_or_default();
        assert!(detail.contains(&account.id.to_string()), "{detail}");
        assert!(
            !detail.contains("jane"),
            "audit details carry ids, not addresses: {detail}"
        );
    }
    assert_eq!(
        rt.block_on(app.audit.verify()).expect("verify"),
        Verification::Intact { events: 3 }
    );
}

#[test]
fn weak_passwords_and_bad_input_are_refused_with_a_clear_reason() {
    let rt = runtime();
    let env = rt.block_on(TestEnv::new());
    let cases = [
        ("short", "at least 8"),
        ("password123", "too common"),
        ("bob.smith rules!", "email address"),
    ];
    for (i, (pw, reason)) in cases.iter().enumerate() {
        let file = password_file(&env, &format!("pw{i}"), pw);
        let (ok, text) = create_user(&env, "bob.smith@example.com", "agent", &file);
        assert!(!ok, "{pw:?} accepted");
        assert!(text.contains(reason), "{pw:?}: {text}");
    }
    let long = password_file(&env, "long", &"x1".repeat(65));
    let (ok, text) = create_user(&env, "bob.smith@example.com", "agent", &long);
    assert!(!ok && text.contains("at most 128"), "{text}");
    let good = password_file(&env, "good", "a perfectly fine passphrase");
    let (ok, text) = create_user(&env, "not-an-address", "agent", &good);
    assert!(!ok && text.contains("not a valid email"), "{text}");
    let (ok, _) = create_user(&env, "bob.smith@example.com", "root", &good);
    assert!(!ok, "unknown role accepted");
    let app = rt.block_on(env.app());
    assert_eq!(
        rt.block_on(app.accounts.count()).expect("count"),
        0,
        "nothing was created"
    );
}
