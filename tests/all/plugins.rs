//! Deploying and listing plugins: every kind of upload the host cannot run is refused with a
//! 400 `invalid_plugin` whose reason names the problem, and leaves nothing behind; a component
//! that passes is listed with its version (the SHA-256 of its bytes), its limits and its
//! versions; a deployed plugin survives `kill -9` and a clean shutdown and comes back from its
//! cached compiled artifact without being compiled again; only the admin may deploy and only a
//! writer may send commands.

use std::time::Duration;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::harness::{Api, Launch, Reply, Rng, Server, assert_error, guest_wasm, send_raw};

const ADMIN: &str = "plugin-admin";
const WRITE: &str = "plugin-write";
const READ: &str = "plugin-read";

/// The longest a log line may take to reach the test after the answer it went with.
const LOG_WAIT: Duration = Duration::from_secs(30);

/// The largest upload the host takes.
const MAX_PLUGIN_BYTES: usize = 128 << 20;

/// An upload the host must refuse, and words its reason must contain.
struct Refused {
    name: &'static str,
    bytes: Vec<u8>,
    reason_words: &'static [&'static str],
}

fn refused_uploads() -> Vec<Refused> {
    let mut rng = Rng::new(0x706c_7567);
    let random: Vec<u8> = (0..64 * 1024).map(|_| rng.next_u64() as u8).collect();
    let counter = guest_wasm("fixture-counter");
    let refused = |name, bytes, reason_words| Refused {
        name,
        bytes,
        reason_words,
    };
    vec![
        refused("random bytes", random, &["not WebAssembly"]),
        refused("empty body", Vec::new(), &["empty"]),
        refused(
            "a core module",
            b"\0asm\x01\0\0\0".to_vec(),
            &["core WebAssembly module", "wasm32-wasip2"],
        ),
        refused(
            "WebAssembly of an unknown layer",
            b"\0asm\x0d\0\x02\0".to_vec(),
            &["unknown kind"],
        ),
        refused(
            "a truncated component",
            counter[..counter.len() / 2].to_vec(),
            &["does not compile"],
        ),
        refused(
            "a component of another world",
            guest_wasm("fixture-other-world"),
            &["not a world of evhost:plugin", "[add]"],
        ),
        refused(
            "a filesystem import",
            guest_wasm("fixture-imports-filesystem"),
            &["wasi:filesystem/", "not granted"],
        ),
        refused(
            "a sockets import",
            guest_wasm("fixture-imports-sockets"),
            &["wasi:sockets/tcp", "not granted"],
        ),
        refused(
            "a describe that traps",
            guest_wasm("fixture-describe-trap"),
            &["describe failed", "trapped"],
        ),
        refused(
            "a describe of another kind",
            guest_wasm("fixture-kind-mismatch"),
            &["projection", "world handler"],
        ),
    ]
}

/// Asserts a 400 `invalid_plugin` whose `reason` contains each of `words`.
#[track_caller]
fn assert_invalid_plugin(what: &str, reply: &Reply, words: &[&str]) {
    assert_eq!(
        reply.status, 400,
        "{what}: expected 400 invalid_plugin; body: {}",
        reply.body
    );
    assert_eq!(
        reply.error_code(),
        "invalid_plugin",
        "{what}: {}",
        reply.body
    );
    let body = reply.json();
    let reason = body["error"]["reason"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: no reason in {body}"));
    for word in words {
        assert!(
            reason.contains(word),
            "{what}: the reason does not say {word:?}: {reason}"
        );
    }
}

/// The names `GET /plugins` lists.
fn listed_names(api: &Api) -> Vec<String> {
    let list = api.get("/plugins").expect(200);
    list.as_array()
        .unwrap_or_else(|| panic!("GET /plugins is not an array: {list}"))
        .iter()
        .map(|plugin| plugin["name"].as_str().expect("a name").to_string())
        .collect()
}

/// The lowercase hex SHA-256 of `bytes`: the version the host must give them.
fn version_of(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `GET /plugins/{name}`, asserting 200.
fn details(api: &Api, name: &str) -> Value {
    api.get(&format!("/plugins/{name}")).expect(200)
}

/// The entry of `version` in a plugin's details.
fn version_entry<'a>(details: &'a Value, version: &str) -> &'a Value {
    details["versions"]
        .as_array()
        .unwrap_or_else(|| panic!("no versions array: {details}"))
        .iter()
        .find(|v| v["version"] == version)
        .unwrap_or_else(|| panic!("version {version} is not listed: {details}"))
}

/// `POST /plugins?{query}` with `wasm`, sent the way curl sends it: the answer is read while the
/// body is still being written. A deploy refused for its parameters, its content type or its
/// token is answered before the host reads the body, and a client that reads only once it has
/// written everything may find the connection closed instead of the answer.
fn upload(server: &Server, query: &str, headers: &[(&str, &str)], wasm: &[u8]) -> Reply {
    let mut headers = headers.to_vec();
    if !headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("content-type"))
    {
        headers.push(("content-type", "application/wasm"));
    }
    let path = format!("/plugins?{query}");
    send_raw(server.url(), "POST", &path, &headers, wasm)
        .unwrap_or_else(|e| panic!("POST {path} got no answer: {e}"))
}

fn increment(stream: &str, by: u64) -> Value {
    json!({"stream": stream, "type": "Increment", "data": {"by": by}})
}

/// Sends an increment to the counter and returns the total it reached.
#[track_caller]
fn increment_ok(api: &Api, stream: &str, by: u64) -> u64 {
    let answer = api.command("counter", &increment(stream, by)).expect(200);
    answer["events"][0]["data"]["total"]
        .as_u64()
        .unwrap_or_else(|| panic!("no total in {answer}"))
}

#[test]
fn invalid_uploads_are_refused_with_a_reason_and_leave_nothing() {
    let server = Server::start();
    let api = server.api();
    for upload in refused_uploads() {
        let reply = api.deploy(&upload.bytes, "");
        assert_invalid_plugin(upload.name, &reply, upload.reason_words);
        assert_eq!(
            listed_names(&api),
            Vec::<String>::new(),
            "{}: something is listed after a refused upload",
            upload.name
        );
    }
    // The name the mismatched component gave itself was not kept either.
    assert_error(&api.get("/plugins/mismatch"), 404, "plugin_not_found");
    // The guest's own words about its trap reach the log, tagged as an upload.
    let line = server.wait_for_log_line("describe failed on purpose", Duration::from_secs(10));
    assert!(line.contains("plugin upload@"), "untagged: {line}");

    let health = api.get("/health").expect(200);
    assert_eq!(health["status"], "ok");
    assert_eq!(health["head"], 0, "a refused upload appended events");
    // The host still takes a good plugin after all that.
    api.deploy_guest("fixture-counter");
    assert_eq!(listed_names(&api), ["counter"]);

    // A category has one handler: another handler claiming it is refused, naming the owner.
    let squatter = api.deploy(&guest_wasm("fixture-category-squatter"), "");
    assert_invalid_plugin(
        "category squatter",
        &squatter,
        &["category counter", "counter"],
    );
    assert_eq!(listed_names(&api), ["counter"]);
}

#[test]
fn a_deploy_is_answered_listed_and_shown_in_detail() {
    let server = Server::start();
    let api = server.api();
    let wasm = guest_wasm("fixture-counter");
    let version = version_of(&wasm);

    let first = api.deploy(&wasm, "").expect(201);
    assert_eq!(
        first,
        json!({"name": "counter", "kind": "handler", "version": version, "status": "running"}),
        "the version is the SHA-256 of the bytes"
    );
    // The same bytes again: the same version, not a new one.
    let again = api.deploy(&wasm, "").expect(200);
    assert_eq!(again, first);

    let list = api.get("/plugins").expect(200);
    assert_eq!(
        list,
        json!([{
            "name": "counter",
            "kind": "handler",
            "active_version": version,
            "candidate_version": null,
            "candidate": null,
            "status": "running",
            "position": null,
            "lag": null,
            "error": null,
        }])
    );

    let shown = details(&api, "counter");
    for (field, expected) in [
        ("name", json!("counter")),
        ("kind", json!("handler")),
        ("active_version", json!(version)),
        ("status", json!("running")),
        ("category", json!("counter")),
        (
            "description",
            json!("Test fixture: counts up, optionally up to a limit"),
        ),
        (
            "limits",
            json!({"memory_mib": 128, "timeout_ms": 1000, "state_mib": 1024}),
        ),
        ("parked", json!(0)),
        ("error", json!(null)),
    ] {
        assert_eq!(shown[field], expected, "{field} of {shown}");
    }
    assert!(shown["subscriptions"].is_object(), "subscriptions: {shown}");
    let versions = shown["versions"].as_array().expect("versions");
    assert_eq!(versions.len(), 1, "one upload, twice: {shown}");
    let entry = &versions[0];
    assert_eq!(entry["version"], version);
    assert_eq!(entry["state"], "active");
    assert_eq!(entry["size_bytes"], wasm.len() as u64);
    // The second upload of the same bytes took the compiled artifact the first one stored.
    assert_eq!(entry["loaded_from"], "cache");
    assert_eq!(api.metric("evhost_plugin_compilations_total "), 1.0);
    assert_eq!(entry["limits"], shown["limits"]);
    let uploaded_at = entry["uploaded_at"].as_str().unwrap_or_default();
    assert!(
        uploaded_at.len() >= 20 && uploaded_at.ends_with('Z'),
        "uploaded_at is not RFC 3339 UTC: {entry}"
    );

    // A second version becomes active, the first stays loaded as the previous version (ready
    // for a rollback); its bytes deployed again make it active once more.
    let wasm_v2 = guest_wasm("fixture-counter-v2");
    let version_v2 = version_of(&wasm_v2);
    assert_eq!(api.deploy(&wasm_v2, "").expect(201)["version"], version_v2);
    let shown = details(&api, "counter");
    assert_eq!(shown["active_version"], version_v2);
    assert_eq!(version_entry(&shown, &version_v2)["state"], "active");
    let old = version_entry(&shown, &version);
    assert_eq!(old["state"], "previous");
    assert!(
        old.get("loaded_from").is_some(),
        "the previous version of a handler stays loaded: {old}"
    );
    assert_eq!(
        api.command("counter", &increment("counter-1", 1))
            .expect(200)["events"][0]["data"]["build"],
        "v2"
    );
    assert_eq!(api.deploy(&wasm, "").expect(200)["version"], version);
    let shown = details(&api, "counter");
    assert_eq!(shown["active_version"], version);
    assert_eq!(version_entry(&shown, &version_v2)["state"], "previous");
    assert_eq!(shown["versions"].as_array().map(Vec::len), Some(2));
    assert_eq!(listed_names(&api), ["counter"]);

    assert_error(&api.get("/plugins/nobody"), 404, "plugin_not_found");
    assert_error(&api.get("/plugins/Counter"), 404, "plugin_not_found");
}

#[test]
fn limits_given_at_deploy_are_shown_and_replace_earlier_ones() {
    let server = Server::start();
    let api = server.api();
    let wasm = guest_wasm("fixture-hostile");
    let limits = |api: &Api| {
        let shown = details(api, "hostile");
        let active = shown["active_version"].as_str().expect("an active version");
        assert_eq!(
            version_entry(&shown, active)["limits"],
            shown["limits"],
            "the active version's limits differ from the plugin's: {shown}"
        );
        shown["limits"].clone()
    };

    api.deploy(&wasm, "memory_mib=32&timeout_ms=200")
        .expect(201);
    assert_eq!(
        limits(&api),
        json!({"memory_mib": 32, "timeout_ms": 200, "state_mib": 1024})
    );
    // Only the limit given now changes.
    api.deploy(&wasm, "timeout_ms=300").expect(200);
    assert_eq!(
        limits(&api),
        json!({"memory_mib": 32, "timeout_ms": 300, "state_mib": 1024})
    );
    // The largest limits there are, and `promote`, are accepted.
    api.deploy(&wasm, "memory_mib=1024&timeout_ms=60000&promote=manual")
        .expect(200);
    assert_eq!(
        limits(&api),
        json!({"memory_mib": 1024, "timeout_ms": 60000, "state_mib": 1024})
    );
    api.deploy(&wasm, "promote=auto").expect(200);
    assert_eq!(
        limits(&api),
        json!({"memory_mib": 1024, "timeout_ms": 60000, "state_mib": 1024})
    );
}

#[test]
fn malformed_deploy_requests_are_refused() {
    let server = Server::start();
    let api = server.api();
    let wasm = guest_wasm("fixture-counter");
    // A good component each time: what is refused is the request around it.
    for query in [
        "memory_mib=0",
        "memory_mib=1025",
        "memory_mib=-1",
        "memory_mib=abc",
        "memory_mib=",
        "memory_mib=1.5",
        "timeout_ms=0",
        "timeout_ms=60001",
        "timeout_ms=99999999999999999999999",
        "timeout_ms=fast",
        "promote=sometimes",
        "promote=",
        "memory=64",
        "timeout_ms=100&timeout=100",
    ] {
        let reply = upload(&server, query, &[], &wasm);
        assert_eq!(
            reply.status, 400,
            "POST /plugins?{query}: expected 400 invalid_request; body: {}",
            reply.body
        );
        assert_eq!(
            reply.error_code(),
            "invalid_request",
            "?{query}: {}",
            reply.body
        );
    }
    for content_type in ["application/json", "text/plain", "multipart/form-data"] {
        let reply = upload(&server, "", &[("content-type", content_type)], &wasm);
        assert_eq!(
            reply.status, 400,
            "a {content_type} upload: expected 400 invalid_request; body: {}",
            reply.body
        );
        assert_eq!(reply.error_code(), "invalid_request", "{}", reply.body);
    }
    let oversized = vec![0u8; MAX_PLUGIN_BYTES + 1];
    let reply = upload(&server, "", &[], &oversized);
    assert_error(&reply, 413, "payload_too_large");
    assert_eq!(listed_names(&api), Vec::<String>::new());

    // Plain bytes, or a parameter on the content type, are fine.
    let reply = api.send(
        "POST",
        "/plugins",
        &[("content-type", "application/octet-stream")],
        Some(wasm.clone()),
    );
    assert_eq!(reply.expect(201)["name"], "counter");
    let reply = api.send(
        "POST",
        "/plugins",
        &[("content-type", "Application/Wasm; charset=binary")],
        Some(wasm),
    );
    assert_eq!(reply.expect(200)["name"], "counter");
}

#[test]
fn deployed_plugins_come_back_from_the_cache_after_kill_9_and_shutdown() {
    let mut server = Server::start();
    let api = server.api();
    let wasm = guest_wasm("fixture-counter");
    let version = api.deploy(&wasm, "timeout_ms=500").expect(201)["version"].clone();
    assert_eq!(increment_ok(&api, "counter-1", 2), 2);
    assert_eq!(api.metric("evhost_plugin_compilations_total"), 1.0);
    let listed_before = api.get("/plugins").expect(200);

    let mut total = 2;
    for how in ["kill -9", "a clean shutdown"] {
        if how == "a clean shutdown" {
            server.terminate();
        }
        server.restart();
        let api = server.api();
        assert_eq!(
            api.get("/plugins").expect(200),
            listed_before,
            "after {how} the listing changed"
        );
        let shown = details(&api, "counter");
        assert_eq!(shown["active_version"], version, "after {how}");
        assert_eq!(
            shown["limits"],
            json!({"memory_mib": 128, "timeout_ms": 500, "state_mib": 1024}),
            "after {how} the limits given at deploy are lost"
        );
        assert_eq!(
            version_entry(&shown, version.as_str().unwrap())["loaded_from"],
            "cache",
            "after {how}: {shown}"
        );
        assert_eq!(
            api.metric("evhost_plugin_compilations_total"),
            0.0,
            "after {how} the plugin was compiled again"
        );
        assert_eq!(
            api.metric("evhost_plugin_cache_loads_total"),
            1.0,
            "after {how}"
        );
        // The state is rebuilt from the stream by the reloaded handler.
        total += 3;
        assert_eq!(increment_ok(&api, "counter-1", 3), total, "after {how}");
    }
}

/// Hosts given one `--compile-cache` compile a component once between them: the first host
/// compiles it and keeps the artifact, a host with a store of its own loads it from there and
/// runs it, and a damaged artifact is compiled again and replaced, the deploy unharmed.
#[test]
fn hosts_sharing_a_compile_cache_compile_a_component_once() {
    let cache = tempfile::tempdir().expect("a compile cache");
    let cache_dir = cache.path().join("compiled");
    let launch = || Launch::default().env("EVHOST_COMPILE_CACHE", cache_dir.to_str().unwrap());
    let wasm = guest_wasm("fixture-counter");
    let artifacts = || {
        std::fs::read_dir(&cache_dir)
            .expect("the cache directory is made")
            .map(|entry| entry.unwrap().path())
            .collect::<Vec<_>>()
    };

    let first = launch().start();
    first.api().deploy(&wasm, "").expect(201);
    assert_eq!(increment_ok(&first.api(), "counter-1", 2), 2);
    assert!(!first.stderr().contains("found in the compile cache"));
    let kept = artifacts();
    assert_eq!(kept.len(), 1, "one artifact, nothing partial: {kept:?}");
    // Wasmtime's compiled artifacts are ELF files.
    let is_artifact = |bytes: &[u8]| bytes.starts_with(b"\x7fELF");
    assert!(is_artifact(&std::fs::read(&kept[0]).unwrap()));

    let second = launch().start();
    second.api().deploy(&wasm, "").expect(201);
    second.wait_for_log_line("found in the compile cache", LOG_WAIT);
    assert_eq!(increment_ok(&second.api(), "counter-1", 5), 5);

    std::fs::write(&kept[0], b"not an artifact").unwrap();
    let third = launch().start();
    third.api().deploy(&wasm, "").expect(201);
    third.wait_for_log_line("does not load", LOG_WAIT);
    assert_eq!(increment_ok(&third.api(), "counter-1", 1), 1);
    assert!(
        is_artifact(&std::fs::read(&kept[0]).unwrap()),
        "the damaged artifact is replaced"
    );
}

#[test]
fn deploying_needs_admin_and_commands_need_write() {
    let server = Launch::default().tokens(ADMIN, WRITE, READ).start();
    let api = server.api();
    let (admin, writer, reader) = (
        api.with_token(ADMIN),
        api.with_token(WRITE),
        api.with_token(READ),
    );
    let wasm = guest_wasm("fixture-counter");

    let deploy_as = |token: &str| {
        let authorization = format!("Bearer {token}");
        upload(
            &server,
            "",
            &[("authorization", authorization.as_str())],
            &wasm,
        )
    };
    assert_error(&upload(&server, "", &[], &wasm), 401, "unauthorized");
    assert_error(&deploy_as(READ), 403, "forbidden");
    assert_error(&deploy_as(WRITE), 403, "forbidden");
    assert_eq!(listed_names(&admin), Vec::<String>::new());
    assert_eq!(deploy_as(ADMIN).expect(201)["name"], "counter");
    // A writer may not deploy the same bytes again either.
    assert_error(&deploy_as(WRITE), 403, "forbidden");

    assert_error(&api.get("/plugins"), 401, "unauthorized");
    assert_eq!(listed_names(&reader), ["counter"]);
    details(&reader, "counter");

    let command = increment("counter-1", 1);
    assert_error(&api.command("counter", &command), 401, "unauthorized");
    assert_error(&reader.command("counter", &command), 403, "forbidden");
    assert_eq!(reader.head(), 0, "a refused command appended events");
    writer.command("counter", &command).expect(200);
    admin.command("counter", &command).expect(200);
    assert_eq!(reader.stream_version("counter-1"), 2);
}
