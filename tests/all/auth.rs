//! Bearer tokens and roles: with tokens configured, a request without a valid token is 401 and a
//! role that is too low is 403 (read < write < admin), while `/health` stays open. Without tokens
//! the server refuses a non-loopback address unless told `--insecure`.

use serde_json::json;

use crate::harness::{Api, Launch, Reply, Server, assert_error, event};

const ADMIN: &str = "admin-secret";
const WRITE: &str = "write-secret";
const READ: &str = "read-secret";

/// Who asks: no token, an unknown token, or one of the three roles.
fn callers(api: &Api) -> [(&'static str, Api); 5] {
    [
        ("no token", api.clone()),
        ("unknown token", api.with_token("not-a-token")),
        ("read", api.with_token(READ)),
        ("write", api.with_token(WRITE)),
        ("admin", api.with_token(ADMIN)),
    ]
}

fn append_body(n: u32) -> serde_json::Value {
    json!({ "events": [event("Opened", json!({"n": n}))] })
}

/// What a caller must be answered.
#[derive(Clone, Copy, Debug)]
enum Access {
    /// Served, with this status.
    Allowed(u16),
    /// 401 `unauthorized`.
    Unauthorized,
    /// 403 `forbidden`.
    Forbidden,
    /// Anything but 401 or 403 (the request itself may be wrong).
    NotRefused,
}
use Access::{Allowed, Forbidden, NotRefused, Unauthorized};

#[track_caller]
fn assert_access(who: &str, what: &str, reply: &Reply, access: Access) {
    let context = format!(
        "{who} on {what}: expected {access:?}, got {} {}",
        reply.status, reply.body
    );
    match access {
        Allowed(status) => assert_eq!(reply.status, status, "{context}"),
        Unauthorized => assert_error(reply, 401, "unauthorized"),
        Forbidden => assert_error(reply, 403, "forbidden"),
        NotRefused => assert!(![401, 403].contains(&reply.status), "{context}"),
    }
}

#[test]
fn roles_decide_who_may_append_and_read() {
    let server = Launch::default().tokens(ADMIN, WRITE, READ).start();
    let api = server.api();
    api.with_token(WRITE)
        .append_ok("acct-1", json!([event("Opened", json!({}))]));

    // (append, read a stream, read the log) for each caller.
    let expected = [
        [Unauthorized, Unauthorized, Unauthorized],
        [Unauthorized, Unauthorized, Unauthorized],
        [Forbidden, Allowed(200), Allowed(200)],
        [Allowed(201), Allowed(200), Allowed(200)],
        [Allowed(201), Allowed(200), Allowed(200)],
    ];
    for ((who, caller), [append, stream, log]) in callers(&api).into_iter().zip(expected) {
        // `/health` needs no token at all.
        assert_access(who, "/health", &caller.get("/health"), Allowed(200));
        assert_access(
            who,
            "append",
            &caller.append("acct-1", &append_body(1)),
            append,
        );
        assert_access(who, "stream read", &caller.get("/streams/acct-1"), stream);
        assert_access(who, "log read", &caller.get("/events"), log);
    }
    // Only the appends with enough rights were written.
    assert_eq!(api.head(), 3);
}

#[test]
fn only_admin_may_upload_plugins() {
    let server = Launch::default().tokens(ADMIN, WRITE, READ).start();
    let api = server.api();
    let expected = [Unauthorized, Unauthorized, Forbidden, Forbidden, NotRefused];
    for ((who, caller), access) in callers(&api).into_iter().zip(expected) {
        // Junk is not a plugin: the admin may be told so, but not refused for its token.
        let reply = caller.send(
            "POST",
            "/plugins",
            &[("content-type", "application/wasm")],
            Some(b"junk".to_vec()),
        );
        assert_access(who, "POST /plugins", &reply, access);
    }
}

#[test]
fn malformed_authorization_headers_are_unauthorized() {
    let server = Launch::default().tokens(ADMIN, WRITE, READ).start();
    let api = server.api();
    let attempts = [
        format!("Basic {ADMIN}"),
        "Bearer".to_string(),
        "Bearer ".to_string(),
        ADMIN.to_string(),
        format!("Bearer {ADMIN}x"),
        format!("Bearer {}", &ADMIN[..ADMIN.len() - 1]),
    ];
    for header in &attempts {
        let reply = api.send(
            "GET",
            "/events",
            &[("authorization", header.as_str())],
            None,
        );
        assert_error(&reply, 401, "unauthorized");
    }
}

#[test]
fn tokens_can_come_from_the_environment() {
    let server = Launch::default()
        .env("EVHOST_ADMIN_TOKEN", ADMIN)
        .env("EVHOST_READ_TOKEN", READ)
        .start();
    let api = server.api();
    assert_error(&api.append("acct-1", &append_body(1)), 401, "unauthorized");
    assert_error(
        &api.with_token(READ).append("acct-1", &append_body(2)),
        403,
        "forbidden",
    );
    api.with_token(ADMIN)
        .append("acct-1", &append_body(3))
        .expect(201);
    api.with_token(READ).get("/streams/acct-1").expect(200);
}

#[test]
fn without_tokens_everything_is_open_on_loopback() {
    let server = Server::start();
    let api = server.api();
    api.append("acct-1", &append_body(1)).expect(201);
    api.get("/streams/acct-1").expect(200);
    let plugin = api.send(
        "POST",
        "/plugins",
        &[("content-type", "application/wasm")],
        Some(b"junk".to_vec()),
    );
    assert!(![401, 403].contains(&plugin.status), "{}", plugin.body);
}

#[test]
fn non_loopback_address_without_tokens_is_refused() {
    let failure = match Launch::default().listen("0.0.0.0:0").try_start() {
        Ok(server) => panic!("evhost started on {} without tokens", server.url()),
        Err(failure) => failure,
    };
    let status = failure.status.expect("evhost should exit, not hang");
    assert!(!status.success(), "{failure:?}");
    let stderr = failure.stderr.to_lowercase();
    assert!(
        stderr.contains("token") || stderr.contains("--insecure"),
        "{failure:?}"
    );
}

#[test]
fn non_loopback_address_with_a_token_starts() {
    let server = Launch::default()
        .listen("0.0.0.0:0")
        .arg("--admin-token")
        .arg(ADMIN)
        .start();
    let api = server.api();
    assert_eq!(api.get("/health").status, 200);
    assert_error(&api.get("/events"), 401, "unauthorized");
    api.with_token(ADMIN).get("/events").expect(200);
}

#[test]
fn insecure_allows_non_loopback_address_without_tokens() {
    let server = Launch::default()
        .listen("0.0.0.0:0")
        .arg("--insecure")
        .start();
    let api = server.api();
    assert_eq!(api.get("/health").status, 200);
    api.append("acct-1", &append_body(1)).expect(201);
}
