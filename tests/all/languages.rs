//! Plugins written in Python and JavaScript, built by their SDKs, behave as the same plugins
//! written in Rust: the projection `stays` keeps equal state in all three languages over the
//! same events; an exception becomes the same rejection, failure, pause or park as an error or
//! a panic in Rust; a guest's log lines and printed output reach the host's log; endless loops
//! and memory bombs are stopped at the same limits; the JavaScript `survey` decides every
//! recorded command as the Rust one did; and the large components come back from the compiled
//! cache after a restart.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{Api, Server, assert_error, event, guest_wasm};
use crate::sdk_guests::sdk_wasm;

/// Long enough for a shared two-core machine to compile a large component and run a plugin's
/// retries with backoff.
const SETTLE: Duration = Duration::from_secs(90);
/// How long a deploy may take to be answered, as long as the CLI's `evhost deploy` waits: a
/// Python or JavaScript component is 12–18 MB, and its first deploy compiles it, which takes
/// seconds alone but may take minutes on a shared two-core machine while other tests compile
/// theirs. Only a deploy that never answers should reach it.
const DEPLOY_TIMEOUT: Duration = Duration::from_secs(300);
/// The server-side wait of a read at `min_position`, in place of its 5 s default: a projection
/// in an interpreter, deployed a moment ago, may take longer than that to catch up on a busy
/// machine.
const CATCH_UP_MS: u64 = 60_000;

/// The three languages, each with the directory (or Rust package) of a plugin written in it.
#[derive(Debug, Clone, Copy)]
enum Lang {
    Rust,
    Python,
    JavaScript,
}

impl Lang {
    /// The suffix of the names of its fixtures and examples: `stays-py`, `hostile-js`.
    fn suffix(self) -> &'static str {
        match self {
            Lang::Rust => "",
            Lang::Python => "-py",
            Lang::JavaScript => "-js",
        }
    }

    /// The component of the fixture that mirrors the Rust fixture `fixture-<name>`.
    fn fixture(self, name: &str) -> Vec<u8> {
        match self {
            Lang::Rust => guest_wasm(&format!("fixture-{name}")),
            Lang::Python => sdk_wasm(&format!("tests/fixtures/python/{name}")),
            Lang::JavaScript => sdk_wasm(&format!("tests/fixtures/js/{name}")),
        }
    }

    /// The name that fixture deploys as.
    fn fixture_name(self, name: &str) -> String {
        format!("{name}{}", self.suffix())
    }
}

/// Deploys a component, waiting as long as its compilation takes, and answers its version.
#[track_caller]
fn deploy(api: &Api, wasm: &[u8], query: &str) -> String {
    let reply = api.with_request_timeout(DEPLOY_TIMEOUT).deploy(wasm, query);
    assert!(
        reply.status == 201 || reply.status == 200,
        "deploy: {} {}",
        reply.status,
        reply.body
    );
    reply.json()["version"].as_str().unwrap().to_owned()
}

fn check_in(api: &Api, visit: u64, hospital: Option<&str>) -> u64 {
    let mut data = json!({"patient_id": format!("p-{visit}"), "patient_name": "Ana Lima",
                          "complaint": "chest pain", "triage_level": 2, "room": format!("R-{visit}")});
    if let Some(hospital) = hospital {
        data["hospital"] = json!(hospital);
    }
    api.command(
        "visit",
        &json!({"stream": format!("visit-{visit}"), "type": "CheckIn", "data": data}),
    )
    .expect(200)["position"]
        .as_u64()
        .unwrap()
}

fn check_out(api: &Api, visit: u64) -> u64 {
    api.command(
        "visit",
        &json!({"stream": format!("visit-{visit}"), "type": "CheckOut",
                "data": {"disposition": "discharged"}}),
    )
    .expect(200)["position"]
        .as_u64()
        .unwrap()
}

/// Every key of a projection with its value, as parsed JSON: how two languages' states are
/// compared (the text of a value may differ in key order and spacing, not in content).
fn whole_state(api: &Api, name: &str, min_position: u64) -> BTreeMap<String, Value> {
    api.projection_items(
        name,
        &format!("min_position={min_position}&timeout_ms={CATCH_UP_MS}"),
    )
    .into_iter()
    .map(|item| {
        (
            item["key"].as_str().unwrap().to_owned(),
            item["value"].clone(),
        )
    })
    .collect()
}

#[test]
fn the_same_projection_in_rust_python_and_javascript_keeps_the_same_state() {
    let server = Server::start();
    let api = server.api();
    api.deploy_guest("visit");
    api.deploy_guest("stays");
    deploy(&api, &sdk_wasm("plugins/python/stays"), "");
    deploy(&api, &sdk_wasm("plugins/js/stays"), "");

    // Visits at three hospitals (`main` by default), most of them ended, some still open, and a
    // check-out that no check-in precedes (appended directly, as an import would).
    let hospitals = [Some("north"), Some("south"), None];
    for visit in 1..=12 {
        check_in(&api, visit, hospitals[visit as usize % 3]);
    }
    for visit in (1..=12).filter(|visit| visit % 4 != 0) {
        check_out(&api, visit);
    }
    api.append_past_handler(
        "visit-99",
        json!([event(
            "PatientCheckedOut",
            json!({"disposition": "discharged"})
        )]),
    );
    let head = api.head();

    let rust = whole_state(&api, "stays", head);
    assert_eq!(rust, whole_state(&api, "stays-py", head), "Python differs");
    assert_eq!(
        rust,
        whole_state(&api, "stays-js", head),
        "JavaScript differs"
    );

    // The state is what the log says: 9 stays ended, 3 per hospital, 3 visits still open, each
    // average the total over the count, rounded down.
    let open: Vec<&String> = rust.keys().filter(|k| k.starts_with("visit/")).collect();
    assert_eq!(open, ["visit/12", "visit/4", "visit/8"]);
    let checked_in_ms = |visit: u64| {
        rust.get(&format!("visit/{visit}"))
            .map(|v| v["checked_in_ms"].clone())
    };
    assert!(checked_in_ms(4).unwrap().as_u64().unwrap() > 1_700_000_000_000);
    for hospital in ["north", "south", "main"] {
        let stays = &rust[&format!("hospital/{hospital}")];
        assert_eq!(stays["hospital"], hospital);
        assert_eq!(stays["visits"], 3, "{stays}");
        let total = stays["total_stay_ms"].as_u64().unwrap();
        assert_eq!(stays["average_stay_ms"], total / 3, "{stays}");
    }

    // Queries answer alike, errors included.
    for name in ["stays", "stays-py", "stays-js"] {
        let all = api
            .get(&format!("/projections/{name}/query/hospitals"))
            .expect(200);
        let hospitals: Vec<&str> = all["hospitals"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["hospital"].as_str().unwrap())
            .collect();
        assert_eq!(hospitals, ["main", "north", "south"], "{name}");
        let north = api
            .get(&format!("/projections/{name}/query/hospital?name=north"))
            .expect(200);
        assert_eq!(north, rust["hospital/north"], "{name}");
        let unknown = api.get(&format!("/projections/{name}/query/hospital?name=east"));
        assert_error(&unknown, 400, "query_rejected");
        assert!(
            unknown.body.contains("no visit has ended at hospital east"),
            "{name}: {}",
            unknown.body
        );
    }

    // Each language's log lines reach the host's log, tagged with the plugin.
    for name in ["stays", "stays-py", "stays-js"] {
        server.wait_for_log_line(&format!("plugin {name}@"), SETTLE);
        let log = server.stderr();
        let tagged = |words: &str| {
            log.lines()
                .any(|line| line.contains(&format!("plugin {name}@")) && line.contains(words))
        };
        assert!(tagged("visit 1 at south stayed"), "{name}:\n{log}");
        assert!(
            tagged("visit 99 checked out without a check-in seen"),
            "{name}:\n{log}"
        );
    }
}

/// A command to the hostile handler of `lang`.
fn hostile(
    api: &Api,
    lang: Lang,
    stream: &str,
    command_type: &str,
    data: Value,
) -> crate::harness::Reply {
    api.command(
        &lang.fixture_name("hostile"),
        &json!({"stream": stream, "type": command_type, "data": data}),
    )
}

#[track_caller]
fn assert_plugin_failed(reply: &crate::harness::Reply, words: &str) {
    assert_error(reply, 500, "plugin_failed");
    assert!(reply.body.contains(words), "not {words:?}: {}", reply.body);
}

/// The hostile handler of `lang`, told to misbehave: each misdeed is answered as the Rust
/// fixture's is, and the handler serves the next command.
fn handler_failures_in(lang: Lang) {
    let server = Server::start();
    let api = server.api();
    // The Python and JavaScript runtimes take some tens of MiB before the plugin allocates.
    let wasm = lang.fixture("hostile");
    deploy(&api, &wasm, "memory_mib=160&timeout_ms=1000");
    let name = lang.fixture_name("hostile");

    let reply = hostile(&api, lang, "hostile-1", "Ok", json!(null));
    assert_eq!(reply.expect(200)["events"][0]["type"], "Okayed");

    let reply = hostile(&api, lang, "hostile-1", "Panic", json!(null));
    assert_plugin_failed(&reply, "trapped");
    if !matches!(lang, Lang::Rust) {
        // The exception itself is in the host's log, from the SDK.
        server.wait_for_log_line("hostile plugin raised on purpose", SETTLE);
        let reply = hostile(
            &api,
            lang,
            "hostile-1",
            "Reject",
            json!({"reason": "not today"}),
        );
        assert_error(&reply, 422, "command_rejected");
        assert_eq!(reply.json()["error"]["reason"], "not today");
    }

    let reply = hostile(&api, lang, "hostile-1", "Loop", json!(null));
    assert_plugin_failed(&reply, "time budget of 1000 ms");
    // As for the projection below: on a busy machine an interpreter can take longer than a
    // second to fill 160 MiB, so the same bytes are deployed again with the longest budget and
    // the cap is the only limit the bomb can reach.
    deploy(&api, &wasm, "memory_mib=160&timeout_ms=60000");
    let reply = hostile(&api, lang, "hostile-1", "Allocate", json!({"mib": 400}));
    assert_plugin_failed(&reply, "memory past its cap of 160 MiB");

    let reply = hostile(
        &api,
        lang,
        "hostile-1",
        "Print",
        json!({"text": "hello from a guest"}),
    );
    assert_eq!(reply.expect(200)["events"][0]["type"], "Printed");
    let line = server.wait_for_log_line("hello from a guest", SETTLE);
    assert!(line.contains(&format!("plugin {name}@")), "{line}");

    // A stream whose events the handler cannot fold fails every command on it, and only there.
    api.append_past_handler("hostile-2", json!([event("Poison", json!(null))]));
    let reply = hostile(&api, lang, "hostile-2", "Ok", json!(null));
    assert_error(&reply, 500, "plugin_failed");
    let reply = hostile(&api, lang, "hostile-1", "Ok", json!(null));
    assert_eq!(reply.expect(200)["events"][0]["type"], "Okayed");
    let events = api.stream_events("hostile-1");
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        ["Okayed", "Printed", "Okayed"],
        "failed commands appended nothing"
    );
}

#[test]
fn a_python_handler_fails_and_rejects_as_a_rust_one() {
    handler_failures_in(Lang::Python);
}

#[test]
fn a_javascript_handler_fails_and_rejects_as_a_rust_one() {
    handler_failures_in(Lang::JavaScript);
}

#[test]
fn the_rust_hostile_handler_sets_the_standard() {
    handler_failures_in(Lang::Rust);
}

/// Waits until projection `name` is paused at the event after `position`, with an error that
/// says `words`, then skips that event.
#[track_caller]
fn paused_then_skipped(api: &Api, name: &str, position: u64, words: &str) {
    let paused = api.wait_for_plugin(name, SETTLE, |p| {
        p["status"] == "paused" && p["position"].as_u64() == Some(position - 1)
    });
    let error = paused["error"].as_str().unwrap_or_default();
    assert!(error.contains(words), "not {words:?}: {paused}");
    api.post(
        &format!("/plugins/{name}/parked/{position}/skip"),
        &json!({}),
    )
    .expect(200);
}

/// The hostile projection of `lang` over poison, a panic, a loop and a memory bomb: each
/// pauses it at that event with the reason, and skipping goes on with the next.
fn projection_failures_in(lang: Lang) {
    let server = Server::start();
    let api = server.api();
    // Limits as for the handler above; the memory bomb gets a longer budget below.
    let wasm = lang.fixture("hostile-projection");
    deploy(&api, &wasm, "memory_mib=160&timeout_ms=1000");
    let name = lang.fixture_name("hostile-projection");
    let normal = || event("Fine", json!({"n": 1}));
    let append = |event_type: &str| {
        let answer = api.append_ok(
            "hostile-1",
            json!([normal(), event(event_type, json!(null))]),
        );
        answer["last_position"].as_u64().unwrap()
    };
    let poison = append("Poison");
    paused_then_skipped(
        &api,
        &name,
        poison,
        &format!("poison event at position {poison}"),
    );
    // A Rust panic traps (its message is on the plugin's stderr, in the host's log); a Python or
    // JavaScript exception is the error itself.
    let panic = append("Panic");
    let panicked = match lang {
        Lang::Rust => "trapped".to_owned(),
        _ => format!("raised on purpose at position {panic}"),
    };
    paused_then_skipped(&api, &name, panic, &panicked);
    let endless = append("Loop");
    paused_then_skipped(&api, &name, endless, "time budget of 1000 ms");
    // An interpreter fills memory 1 MiB at a time, and on a busy machine it can take longer
    // than a second to fill 160 MiB: the same bytes deployed again with the longest budget (a
    // running projection takes new limits at its next call) leave the cap the only limit the
    // bomb can reach.
    deploy(&api, &wasm, "memory_mib=160&timeout_ms=60000");
    let bomb = append("Allocate");
    paused_then_skipped(&api, &name, bomb, "memory past its cap of 160 MiB");
    let last = api.append_ok("hostile-1", json!([normal()]))["last_position"]
        .as_u64()
        .unwrap();
    let count = api
        .get(&format!(
            "/projections/{name}/query/count?min_position={last}&timeout_ms={CATCH_UP_MS}"
        ))
        .expect(200);
    assert_eq!(
        count, 5,
        "every normal event counted once, the skipped ones not"
    );
    let seen = whole_state(&api, &name, last);
    assert_eq!(seen[&format!("seen/{:020}", last)], json!({"n": 1}));
}

#[test]
fn a_python_projection_pauses_as_a_rust_one() {
    projection_failures_in(Lang::Python);
}

#[test]
fn a_javascript_projection_pauses_as_a_rust_one() {
    projection_failures_in(Lang::JavaScript);
}

#[test]
fn the_rust_hostile_projection_sets_the_standard() {
    projection_failures_in(Lang::Rust);
}

/// The hostile policy of `lang`: its commands reach the counter, its timer fires, and an
/// exception parks the event while the policy goes on.
fn policy_failures_in(lang: Lang) {
    let server = Server::start();
    let api = server.api();
    api.deploy_guest("fixture-counter");
    deploy(&api, &lang.fixture("hostile-policy"), "timeout_ms=300");
    let name = lang.fixture_name("hostile-policy");
    api.append_ok("hostile-1", json!([event("Hello", json!({}))]));
    api.wait_for_events("counter-1", 1, SETTLE);
    let poison = api.append_ok("hostile-1", json!([event("Poison", json!(null))]))["last_position"]
        .as_u64()
        .unwrap();
    let parked = api.wait_for_plugin(&name, SETTLE, |p| p["parked"] == 1);
    let listed = api.get(&format!("/plugins/{name}/parked")).expect(200);
    assert_eq!(listed[0]["position"], poison, "{parked}");
    assert!(
        listed[0]["error"]
            .as_str()
            .unwrap()
            .contains(&format!("poison event at position {poison}")),
        "{listed}"
    );
    // It went on past the parked event: a timer due at once fires and increments again.
    api.append_ok(
        "hostile-2",
        json!([event("Schedule", json!({"delay_ms": 0}))]),
    );
    api.wait_for_events("counter-2", 1, SETTLE);
    api.append_ok("hostile-1", json!([event("Loop", json!(null))]));
    let parked = api.wait_for_plugin(&name, SETTLE, |p| p["parked"] == 2);
    assert_eq!(parked["status"], "running", "{parked}");
}

#[test]
fn a_python_policy_parks_as_a_rust_one() {
    policy_failures_in(Lang::Python);
}

#[test]
fn a_javascript_policy_parks_as_a_rust_one() {
    policy_failures_in(Lang::JavaScript);
}

#[test]
fn the_rust_hostile_policy_sets_the_standard() {
    policy_failures_in(Lang::Rust);
}

fn survey(
    api: &Api,
    id: &str,
    visit: u64,
    command_type: &str,
    data: Value,
) -> crate::harness::Reply {
    api.command(
        "survey",
        &json!({"id": id, "stream": format!("survey-{visit}"), "type": command_type, "data": data}),
    )
}

#[test]
fn the_javascript_survey_decides_the_recorded_commands_as_the_rust_one_did() {
    let server = Server::start();
    let api = server.api();
    api.deploy_guest("survey");
    // Accepted and rejected commands of every kind, on several surveys.
    let mut reasons = Vec::new();
    for visit in 1..=4 {
        let prepare = json!({"visit_id": visit.to_string(), "patient_id": format!("p-{visit}")});
        // Survey 4 is never prepared: its answers are refused.
        let again = if visit == 4 {
            None
        } else {
            survey(
                &api,
                &format!("prep-{visit}"),
                visit,
                "PrepareSurvey",
                prepare.clone(),
            )
            .expect(200);
            Some(survey(
                &api,
                &format!("again-{visit}"),
                visit,
                "PrepareSurvey",
                prepare,
            ))
        };
        let submit = survey(
            &api,
            &format!("submit-{visit}"),
            visit,
            "SubmitSurvey",
            json!({"score": visit + 1, "comment": "kind staff"}),
        );
        let late = survey(
            &api,
            &format!("late-{visit}"),
            visit,
            "SubmitSurvey",
            json!({"score": 9}),
        );
        for reply in again.into_iter().chain([submit, late]) {
            if reply.status == 422 {
                reasons.push(reply.json()["error"]["reason"].clone());
            }
        }
    }
    assert!(reasons.len() >= 6, "{reasons:?}");

    let js = api
        .with_request_timeout(DEPLOY_TIMEOUT)
        .deploy(&sdk_wasm("plugins/js/survey"), "promote=manual")
        .expect(201);
    let js = js["version"].as_str().unwrap().to_owned();
    let id = api
        .post(
            "/plugins/survey/replays",
            &json!({"version": js, "differences": 5}),
        )
        .expect(202)["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let replay = api.wait_for_replay(&id, SETTLE);
    assert_eq!(replay["status"], "done", "{replay}");
    let report = &replay["report"];
    assert_eq!(report["commands"], 14, "{report}");
    assert_eq!(report["same"], 14, "{report}");
    assert_eq!(report["different"], 0, "{report}");

    // Promoted, the JavaScript version serves the surveys the Rust one started.
    api.post("/plugins/survey/promote", &json!({"version": js}))
        .expect(200);
    let reply = survey(
        &api,
        "prep-4",
        4,
        "PrepareSurvey",
        json!({"visit_id": "4", "patient_id": "p-4"}),
    );
    assert_eq!(reply.expect(200)["events"][0]["type"], "SurveyPrepared");
    let again = survey(
        &api,
        "again-1-js",
        1,
        "PrepareSurvey",
        json!({"visit_id": "1", "patient_id": "p-1"}),
    );
    assert_error(&again, 422, "command_rejected");
    assert!(
        reasons.contains(&again.json()["error"]["reason"]),
        "{}",
        again.body
    );
}

#[test]
fn a_python_policy_notes_a_patient_who_returns_within_72_hours() {
    let server = Server::start();
    let api = server.api();
    api.deploy_guest("visit");
    deploy(&api, &sdk_wasm("plugins/python/returns"), "");
    check_in(&api, 1, Some("north"));
    check_out(&api, 1);
    // The same patient (p-1) comes back: a new visit of the same patient id.
    api.command(
        "visit",
        &json!({"stream": "visit-2", "type": "CheckIn",
                "data": {"patient_id": "p-1", "patient_name": "Ana Lima", "complaint": "dizzy",
                         "triage_level": 3, "room": "R-2", "hospital": "north"}}),
    )
    .expect(200);
    check_in(&api, 3, Some("north"));
    // Its check-in appended two events; the policy's note is the third.
    let events = api.wait_for_events("visit-2", 3, SETTLE);
    let note = events
        .iter()
        .find(|e| e["type"] == "NoteAdded")
        .unwrap_or_else(|| panic!("no note on visit-2: {events:?}"));
    assert_eq!(note["data"]["author"], "returns-py");
    assert_eq!(note["data"]["text"], "returned 0 h after visit 1 ended");
    let policy = api.wait_for_position("returns-py", api.head(), SETTLE);
    assert_eq!(policy["parked"], 0, "{policy}");
    assert!(
        api.stream_events("visit-3")
            .iter()
            .all(|e| e["type"] != "NoteAdded"),
        "a first visit is no return"
    );
}

#[test]
fn python_and_javascript_plugins_come_back_from_the_compiled_cache() {
    let mut server = Server::start();
    let api = server.api();
    deploy(&api, &sdk_wasm("plugins/python/stays"), "");
    deploy(&api, &sdk_wasm("plugins/js/stays"), "");
    assert_eq!(api.metric("evhost_plugin_compilations_total"), 2.0);
    server.restart();
    let api = server.api();
    assert_eq!(api.metric("evhost_plugin_compilations_total"), 0.0);
    assert_eq!(api.metric("evhost_plugin_cache_loads_total"), 2.0);
    server.wait_for_log_line("loaded from its compiled artifact in", SETTLE);
    let log = server.stderr();
    for name in ["stays-py", "stays-js"] {
        assert!(
            log.lines()
                .any(|line| line.contains(&format!("plugin {name}@"))
                    && line.contains("loaded from its compiled artifact in")),
            "{name}:\n{log}"
        );
        let plugin = api.get(&format!("/plugins/{name}")).expect(200);
        assert_eq!(plugin["versions"][0]["loaded_from"], "cache", "{plugin}");
        assert_eq!(plugin["status"], "running", "{plugin}");
    }
}
