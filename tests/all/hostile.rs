//! Hostile handlers: a plugin that loops forever, allocates past its memory cap, panics, or
//! traps while folding a stream is stopped within its limits and answered with a 500
//! `plugin_failed` that says which limit it broke. Nothing is appended or recorded for the failed
//! command, the host stays healthy, another plugin in the same host keeps answering, and the
//! hostile handler itself serves the next command on a fresh instance. What a plugin prints
//! reaches the host's log tagged with its name and version. Failing over and over exhausts
//! nothing.

use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{Api, Launch, Reply, Server, assert_error, event, guest_wasm};

/// How long a plugin stopped at its time budget may take to be answered, budget included: the
/// machine is shared, but an interrupted loop must not take seconds.
const STOPPED_WITHIN: Duration = Duration::from_secs(5);
/// The metric line of failed commands.
const FAILED_COMMANDS: &str = "evhost_commands_total{outcome=\"failed\"}";
/// The metric line of calls into `decide`, counted as each call starts.
const DECIDE_CALLS: &str = "evhost_plugin_calls_total{export=\"decide\"}";

/// A server with the hostile handler deployed with the limits in `query`, and the counter beside
/// it. Returns the server and the hostile handler's version.
fn start_with_hostile(query: &str) -> (Server, String) {
    let server = Server::start();
    let api = server.api();
    let reply = api.deploy(&guest_wasm("fixture-hostile"), query);
    let version = reply.expect(201)["version"]
        .as_str()
        .expect("a version")
        .to_string();
    api.deploy_guest("fixture-counter");
    (server, version)
}

/// A command to the hostile handler.
pub fn hostile(api: &Api, stream: &str, command_type: &str, data: Value) -> Reply {
    api.command(
        "hostile",
        &json!({"stream": stream, "type": command_type, "data": data}),
    )
}

/// Asserts a 500 `plugin_failed` whose message contains `words`.
#[track_caller]
fn assert_plugin_failed(what: &str, reply: &Reply, words: &str) {
    assert_error(reply, 500, "plugin_failed");
    let message = reply.json()["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        message.contains(words),
        "{what}: the failure does not say {words:?}: {message}"
    );
}

/// What the store looked like before a failed command: the failed stream's version and the head.
struct Before {
    stream: String,
    version: u64,
    head: u64,
    failed: f64,
}

impl Before {
    fn take(api: &Api, stream: &str) -> Before {
        Before {
            stream: stream.to_string(),
            version: api.stream_version(stream),
            head: api.head(),
            failed: api.metric(FAILED_COMMANDS),
        }
    }

    /// Checks that one failed command left no trace but the failure count, that the host and the
    /// counter beside the hostile plugin still work, and that the hostile handler serves `Ok` on
    /// the same stream (its broken instance was replaced).
    #[track_caller]
    fn assert_unharmed(&self, api: &Api, what: &str) {
        assert_eq!(
            api.stream_version(&self.stream),
            self.version,
            "{what}: the failed command appended to {}",
            self.stream
        );
        let health = api.get("/health").expect(200);
        assert_eq!(health["status"], "ok", "{what}: {health}");
        assert_eq!(health["head"], self.head, "{what}: something was appended");
        assert_eq!(
            api.metric(FAILED_COMMANDS),
            self.failed + 1.0,
            "{what}: the failure was not counted once"
        );

        let counted = api
            .command(
                "counter",
                &json!({"stream": "counter-bystander", "type": "Increment", "data": {"by": 1}}),
            )
            .expect(200);
        assert_eq!(
            counted["events"][0]["type"], "Incremented",
            "{what}: {counted}"
        );
        let okayed = hostile(api, &self.stream, "Ok", json!(null)).expect(200);
        assert_eq!(okayed["events"][0]["type"], "Okayed", "{what}: {okayed}");
        assert_eq!(
            okayed["events"][0]["version"],
            self.version + 1,
            "{what}: {okayed}"
        );
    }
}

#[test]
fn an_endless_loop_is_stopped_at_its_time_budget() {
    let (server, _) = start_with_hostile("timeout_ms=200");
    let api = server.api();
    hostile(&api, "hostile-loop", "Ok", json!(null)).expect(200);
    let before = Before::take(&api, "hostile-loop");

    let started = Instant::now();
    let reply = api.command(
        "hostile",
        &json!({"id": "loop-1", "stream": "hostile-loop", "type": "Loop", "data": null}),
    );
    let elapsed = started.elapsed();
    assert_plugin_failed("Loop", &reply, "time budget of 200 ms");
    assert!(
        elapsed < STOPPED_WITHIN,
        "a loop with a 200 ms budget was answered after {elapsed:?}"
    );
    assert!(
        elapsed >= Duration::from_millis(200),
        "a loop with a 200 ms budget was stopped after only {elapsed:?}"
    );
    before.assert_unharmed(&api, "after Loop");

    // A failed command is not recorded: its id is free for the next try.
    assert_error(&api.get("/commands/loop-1"), 404, "command_not_found");
    let retried = api
        .command(
            "hostile",
            &json!({"id": "loop-1", "stream": "hostile-loop", "type": "Ok", "data": null}),
        )
        .expect(200);
    assert_eq!(retried["command_id"], "loop-1");
}

/// While one command spins through its whole budget, other commands, to the other plugin and to
/// the same one on another stream, are answered at once rather than after it.
#[test]
fn a_loop_holds_up_no_other_command() {
    const BUDGET_MS: u64 = 3_000;
    let (server, _) = start_with_hostile(&format!("timeout_ms={BUDGET_MS}"));
    let api = server.api();
    let decides = api.metric(DECIDE_CALLS);

    let looping = {
        let api = api.clone();
        thread::spawn(move || {
            let started = Instant::now();
            let reply = hostile(&api, "hostile-spin", "Loop", json!(null));
            (reply, started.elapsed())
        })
    };
    // Wait until the loop is inside `decide`.
    let deadline = Instant::now() + STOPPED_WITHIN;
    while api.metric(DECIDE_CALLS) == decides {
        assert!(
            Instant::now() < deadline && !looping.is_finished(),
            "the Loop command never reached decide"
        );
        thread::sleep(Duration::from_millis(5));
    }

    let started = Instant::now();
    api.command(
        "counter",
        &json!({"stream": "counter-1", "type": "Increment", "data": {"by": 1}}),
    )
    .expect(200);
    hostile(&api, "hostile-other", "Ok", json!(null)).expect(200);
    let elapsed = started.elapsed();
    assert!(
        !looping.is_finished(),
        "the loop ended before the other commands were answered ({elapsed:?}), so they \
         may have waited for it"
    );
    assert!(
        elapsed < Duration::from_millis(BUDGET_MS),
        "the other commands took {elapsed:?} while a loop ran"
    );

    let (reply, looped) = looping.join().expect("the looping client");
    assert_plugin_failed("Loop", &reply, "time budget of 3000 ms");
    assert!(
        looped >= Duration::from_millis(BUDGET_MS)
            && looped < Duration::from_millis(BUDGET_MS) + STOPPED_WITHIN,
        "a loop with a {BUDGET_MS} ms budget was answered after {looped:?}"
    );
}

#[test]
fn a_memory_bomb_is_stopped_at_its_cap() {
    let (server, _) = start_with_hostile("memory_mib=32");
    let api = server.api();
    // Below the cap an allocation is fine: the cap is not a refusal of everything.
    let allocated = hostile(&api, "hostile-bomb", "Allocate", json!({"mib": 4})).expect(200);
    assert_eq!(allocated["events"][0]["type"], "Allocated");
    let before = Before::take(&api, "hostile-bomb");

    let reply = hostile(&api, "hostile-bomb", "Allocate", json!({"mib": 64}));
    assert_plugin_failed("Allocate 64 MiB", &reply, "memory past its cap of 32 MiB");
    before.assert_unharmed(&api, "after Allocate 64 MiB");
}

#[test]
fn a_panic_is_a_plugin_failure() {
    let (server, version) = start_with_hostile("");
    let api = server.api();
    let before = Before::take(&api, "hostile-panic");

    let reply = hostile(&api, "hostile-panic", "Panic", json!(null));
    assert_plugin_failed("Panic", &reply, "trapped");
    // The panic message is the plugin's stderr, which goes to the host's log under its label.
    let line = server.wait_for_log_line(
        "hostile plugin panicked on purpose",
        Duration::from_secs(10),
    );
    assert!(
        line.contains(&format!("plugin hostile@{} stderr: ", &version[..12])),
        "the panic message is not tagged with the plugin: {line}"
    );
    before.assert_unharmed(&api, "after Panic");
}

#[test]
fn a_trap_in_evolve_fails_commands_on_that_stream_only() {
    let (server, _) = start_with_hostile("");
    let api = server.api();
    hostile(&api, "hostile-clean", "Ok", json!(null)).expect(200);
    // Only a direct append can put a Poison event there; the handler never emits one.
    api.append_past_handler("hostile-poisoned", json!([event("Poison", json!(null))]));
    let head = api.head();

    for attempt in 1..=2 {
        let reply = hostile(&api, "hostile-poisoned", "Ok", json!(null));
        assert_plugin_failed(
            &format!("Ok on a poisoned stream (#{attempt})"),
            &reply,
            "trapped",
        );
    }
    assert_eq!(api.stream_version("hostile-poisoned"), 1);
    assert_eq!(api.head(), head, "a command on a poisoned stream appended");
    server.wait_for_log_line(
        "hostile plugin's evolve panicked on a Poison event",
        Duration::from_secs(10),
    );

    // An event evolve does not know is an error it returns, not a trap: also a failure.
    api.append_past_handler("hostile-odd", json!([event("Unheard", json!({}))]));
    let reply = hostile(&api, "hostile-odd", "Ok", json!(null));
    assert_plugin_failed(
        "Ok on a stream with an unknown event",
        &reply,
        "evolve failed",
    );

    // Other streams, and the other plugin, are not affected.
    let okayed = hostile(&api, "hostile-clean", "Ok", json!(null)).expect(200);
    assert_eq!(okayed["events"][0]["version"], 2);
    api.command(
        "counter",
        &json!({"stream": "counter-1", "type": "Increment", "data": {"by": 1}}),
    )
    .expect(200);
    assert_eq!(api.get("/health").expect(200)["status"], "ok");
}

#[test]
fn guest_output_reaches_the_log_tagged_with_the_plugin() {
    let (server, version) = start_with_hostile("");
    let api = server.api();
    let text = "hostile says hello from inside the sandbox";
    let printed = hostile(&api, "hostile-print", "Print", json!({"text": text})).expect(200);
    assert_eq!(printed["events"][0]["type"], "Printed");
    assert_eq!(printed["events"][0]["data"], json!({"text": text}));

    let label = format!("hostile@{}", &version[..12]);
    for tagged in [
        format!("plugin {label} stdout: {text}"),
        format!("plugin {label} stderr: {text}"),
        format!("plugin {label}: {text}"),
    ] {
        server.wait_for_log_line(&tagged, Duration::from_secs(10));
    }
}

#[test]
fn failing_over_and_over_exhausts_nothing() {
    const LOOPS: usize = 20;
    const BOMBS: usize = 10;
    let (server, _) = start_with_hostile("timeout_ms=50&memory_mib=32");
    let api = server.api();

    let started = Instant::now();
    for n in 0..LOOPS {
        let reply = hostile(&api, "hostile-again", "Loop", json!(null));
        assert_plugin_failed(&format!("Loop #{n}"), &reply, "time budget of 50 ms");
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed < STOPPED_WITHIN * 2,
        "{LOOPS} loops with a 50 ms budget took {elapsed:?}"
    );
    for n in 0..BOMBS {
        let reply = hostile(&api, "hostile-again", "Allocate", json!({"mib": 64}));
        assert_plugin_failed(&format!("Allocate #{n}"), &reply, "cap of 32 MiB");
        let reply = hostile(&api, "hostile-again", "Panic", json!(null));
        assert_plugin_failed(&format!("Panic #{n}"), &reply, "trapped");
    }
    assert_eq!(
        api.metric(FAILED_COMMANDS),
        (LOOPS + 2 * BOMBS) as f64,
        "every failure is counted"
    );
    assert_eq!(api.head(), 0, "a failed command appended");

    let okayed = hostile(&api, "hostile-again", "Ok", json!(null)).expect(200);
    assert_eq!(okayed["events"][0]["version"], 1);
    api.command(
        "counter",
        &json!({"stream": "counter-1", "type": "Increment", "data": {"by": 1}}),
    )
    .expect(200);
}

/// What a plugin can see of the world is nothing: no environment, no arguments, no input, and
/// clocks that read zero, even though the host itself has all of these.
#[test]
fn the_sandbox_shows_a_plugin_nothing_of_the_host() {
    let server = Launch::default()
        .env("EVHOST_SANDBOX_PROBE", "visible to the host only")
        .start();
    let api = server.api();
    api.deploy_guest("fixture-hostile");
    let probed = hostile(&api, "hostile-probe", "Probe", Value::Null).expect(200);
    assert_eq!(
        probed["events"][0]["data"],
        json!({"env_vars": 0, "args": 0, "wall_clock_secs": 0, "monotonic_nanos": 0,
               "stdin_bytes": 0}),
        "the sandbox leaks: {probed}"
    );
}
