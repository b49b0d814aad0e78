//! The plugins deployed in this host: their records, kept in the store with the uploaded bytes
//! and the compiled artifacts, and the loaded active version of each plugin: a handler ready for
//! commands, or a projection with the runner that feeds it.
//!
//! A deploy compiles and validates the upload, stores everything in one transaction, and only
//! then makes the version active, so a restart finds exactly what was acknowledged. Commands
//! take the active version when they start and finish on it, so a deploy never disturbs a
//! command in flight.
//!
//! Architecture Invariant: this module knows nothing of HTTP. It reaches wasmtime only through
//! the runtime and the store only through [`EventStore`].

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, Weak};

use tokio::sync::watch;

use serde::{Deserialize, Serialize};

use crate::commands::Commands;
use crate::policies::PolicyRunner;
use crate::projections::ProjectionRunner;
use crate::runtime::{
    HandlerPlugin, InvalidPlugin, Loaded, PluginCalls, PluginKind, PluginLimits, Runtime,
    content_hash,
};
use crate::store::{EventStore, LogFilter, StorageError, now_rfc3339};

/// What an operator can set at deploy time; unset values keep their defaults (or, for bytes
/// deployed before, what was set then).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct LimitOverrides {
    pub memory_mib: Option<u64>,
    pub timeout_ms: Option<u64>,
}

/// Why a deploy was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DeployError {
    /// The upload is not a plugin this host can run, or it conflicts with what is deployed.
    #[error(transparent)]
    Invalid(#[from] InvalidPlugin),
    /// The store could not keep the plugin.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// What a deploy did.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Deployed {
    pub name: String,
    pub kind: PluginKind,
    pub version: String,
    pub status: &'static str,
    /// False when this version was uploaded before (the answer is then 200, not 201).
    #[serde(skip)]
    pub created: bool,
}

/// The stored record of one plugin.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PluginRecord {
    name: String,
    kind: PluginKind,
    category: Option<String>,
    categories: Vec<String>,
    event_types: Vec<String>,
    description: String,
    active_version: Option<String>,
    versions: Vec<VersionRecord>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct VersionRecord {
    version: String,
    uploaded_at: String,
    size_bytes: u64,
    limits: PluginLimits,
}

/// How the active version of a plugin came to be loaded in this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum LoadedFrom {
    /// Compiled from the uploaded bytes.
    Compiled,
    /// Taken from the compiled artifact cached in the store.
    Cache,
}

/// The active version of a handler, shared by the commands running on it.
pub(crate) struct ActiveHandler {
    pub name: String,
    pub version: String,
    pub category: String,
    pub plugin: HandlerPlugin,
}

/// The loaded active version of a plugin.
#[derive(Clone)]
enum Active {
    Handler(Arc<ActiveHandler>),
    Projection(Arc<ProjectionRunner>),
    Policy(Arc<PolicyRunner>),
}

impl Active {
    fn limits(&self) -> PluginLimits {
        match self {
            Active::Handler(handler) => handler.plugin.limits(),
            Active::Projection(runner) => runner.limits(),
            Active::Policy(runner) => runner.limits(),
        }
    }

    fn version(&self) -> &str {
        match self {
            Active::Handler(handler) => &handler.version,
            Active::Projection(runner) => &runner.version,
            Active::Policy(runner) => &runner.version,
        }
    }

    /// What the version runs in the background, if it is a projection or a policy.
    fn runner(&self) -> Option<Runner> {
        match self {
            Active::Handler(_) => None,
            Active::Projection(runner) => Some(Runner::Projection(runner.clone())),
            Active::Policy(runner) => Some(Runner::Policy(runner.clone())),
        }
    }

    /// Ends what the version runs in the background.
    fn retire(&self) {
        match self {
            Active::Handler(_) => {}
            Active::Projection(runner) => runner.stop(),
            Active::Policy(runner) => runner.stop(),
        }
    }
}

/// The active version of a projection or a policy: the runner that follows the log for it.
pub(crate) enum Runner {
    Projection(Arc<ProjectionRunner>),
    Policy(Arc<PolicyRunner>),
}

impl Runner {
    /// Stops it after the step in progress, until [`Runner::resume`]; the pause is stored.
    pub(crate) async fn pause(&self) -> Result<(), StorageError> {
        match self {
            Runner::Projection(runner) => runner.pause().await,
            Runner::Policy(runner) => runner.pause().await,
        }
    }

    pub(crate) async fn resume(&self) -> Result<(), StorageError> {
        match self {
            Runner::Projection(runner) => runner.resume().await,
            Runner::Policy(runner) => runner.resume().await,
        }
    }

    /// Its status, the last position it processed, and the error to show, with the log at
    /// `head`.
    pub(crate) fn progress(&self, head: u64) -> (&'static str, u64, Option<String>) {
        let ((status, error), position) = match self {
            Runner::Projection(runner) => (runner.state(), runner.position()),
            Runner::Policy(runner) => (runner.state(head), runner.position()),
        };
        (status, position, error)
    }
}

struct Entry {
    record: PluginRecord,
    active: Option<Active>,
    loaded_from: Option<LoadedFrom>,
    /// Why the active version could not be loaded, if it could not.
    error: Option<String>,
}

/// Why a plugin of the kind asked for cannot serve.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HandlerLookupError {
    #[error("no plugin named {0:?} is deployed")]
    NotFound(String),
    #[error("plugin {name:?} is a {kind}, not a {wanted}")]
    WrongKind {
        name: String,
        kind: PluginKind,
        wanted: PluginKind,
    },
    #[error("plugin {name:?} could not be loaded: {error}")]
    Failed { name: String, error: String },
}

/// Counters of plugin loading, for metrics and for proving that a restart did not compile.
#[derive(Debug, Default)]
pub(crate) struct LoadCounters {
    pub compilations: AtomicU64,
    pub cache_loads: AtomicU64,
}

/// The registry of deployed plugins.
pub(crate) struct Plugins {
    runtime: Runtime,
    store: Arc<dyn EventStore>,
    entries: RwLock<BTreeMap<String, Entry>>,
    /// Deploys run one at a time, so that two uploads of one name cannot interleave.
    deploying: tokio::sync::Mutex<()>,
    /// Where policies deliver their commands, once the host has wired it.
    commands: watch::Sender<Option<Weak<Commands>>>,
    pub counters: LoadCounters,
}

impl Plugins {
    /// Loads every deployed plugin's active version, from its cached artifact when that fits
    /// this engine. A plugin that cannot be loaded is kept with its error; it does not stop the
    /// host.
    pub(crate) fn open(runtime: Runtime, store: Arc<dyn EventStore>) -> Result<Self, StorageError> {
        let plugins = Plugins {
            runtime,
            store,
            entries: RwLock::new(BTreeMap::new()),
            deploying: tokio::sync::Mutex::new(()),
            commands: watch::Sender::new(None),
            counters: LoadCounters::default(),
        };
        for (name, bytes) in plugins.store.plugin_records()? {
            let record: PluginRecord = serde_json::from_slice(&bytes).map_err(|e| {
                StorageError::Engine(format!("the record of plugin {name:?} is corrupt: {e}"))
            })?;
            let (active, error) = match plugins.load_active(&record) {
                Ok(active) => (active, None),
                Err(error) => {
                    crate::log::error!("plugin {name} could not be loaded: {error}");
                    (None, Some(error.to_string()))
                }
            };
            let entry = Entry {
                record,
                loaded_from: active.as_ref().map(|(_, from)| *from),
                active: active.map(|(active, _)| active),
                error,
            };
            plugins.write_entries().insert(name, entry);
        }
        Ok(plugins)
    }

    /// Gives policies the way to deliver their commands.
    pub(crate) fn connect(&self, commands: &Arc<Commands>) {
        self.commands.send_replace(Some(Arc::downgrade(commands)));
    }

    fn load_active(
        &self,
        record: &PluginRecord,
    ) -> Result<Option<(Active, LoadedFrom)>, DeployError> {
        let Some(version) = &record.active_version else {
            return Ok(None);
        };
        let limits = record
            .versions
            .iter()
            .find(|v| &v.version == version)
            .map(|v| v.limits)
            .unwrap_or_default();
        let label = label(&record.name, version);
        let (loaded, loaded_from) = self.load_or_compile(version, &label, limits, || {
            let wasm = self.store.blob(&wasm_key(version))?.ok_or_else(|| {
                StorageError::Engine(format!("the upload of {label} is missing from the store"))
            })?;
            Ok(Cow::Owned(wasm))
        })?;
        // The artifact was missing or did not fit this engine: keep the new one for next time.
        if let Some(artifact) = &loaded.artifact {
            self.store.save_blob(
                &artifact_key(version, self.runtime.compatibility_key()),
                artifact,
            )?;
        }
        Ok(Some((self.activate(loaded, version)?, loaded_from)))
    }

    /// Loads `version` from its compiled artifact when the store holds one that fits this
    /// engine, and otherwise compiles the bytes `wasm` gives (the loaded plugin then carries the
    /// new artifact). Counts which of the two it was.
    fn load_or_compile<'w>(
        &self,
        version: &str,
        label: &str,
        limits: PluginLimits,
        wasm: impl FnOnce() -> Result<Cow<'w, [u8]>, DeployError>,
    ) -> Result<(Loaded, LoadedFrom), DeployError> {
        let key = artifact_key(version, self.runtime.compatibility_key());
        let cached = self.store.blob(&key)?;
        if let Some(loaded) =
            cached.and_then(|artifact| self.runtime.load_compiled(&artifact, label, limits))
        {
            self.counters.cache_loads.fetch_add(1, Ordering::Relaxed);
            return Ok((loaded?, LoadedFrom::Cache));
        }
        let loaded = self.runtime.compile(&wasm()?, label, limits)?;
        self.counters.compilations.fetch_add(1, Ordering::Relaxed);
        Ok((loaded, LoadedFrom::Compiled))
    }

    /// Deploys uploaded bytes: validates and compiles them, stores them with their compiled
    /// artifact, and makes them the active version of the plugin they describe. Blocks on
    /// compilation and I/O for a while; the caller runs it off the async threads.
    pub(crate) async fn deploy(
        &self,
        wasm: &[u8],
        overrides: LimitOverrides,
    ) -> Result<Deployed, DeployError> {
        let _deploying = self.deploying.lock().await;
        let version = content_hash(wasm);
        let label = label("upload", &version);
        let previous_limits = {
            let entries = self.read_entries();
            entries.values().find_map(|entry| {
                entry
                    .record
                    .versions
                    .iter()
                    .find(|v| v.version == version)
                    .map(|v| v.limits)
            })
        };
        let base = previous_limits.unwrap_or_default();
        let limits = PluginLimits {
            memory_mib: overrides.memory_mib.unwrap_or(base.memory_mib),
            timeout_ms: overrides.timeout_ms.unwrap_or(base.timeout_ms),
        };
        limits.check().map_err(InvalidPlugin)?;
        let known = previous_limits.is_some();
        // Bytes deployed before have their compiled artifact in the store already.
        let (loaded, loaded_from) = tokio::task::block_in_place(|| {
            self.load_or_compile(&version, &label, limits, || Ok(Cow::Borrowed(wasm)))
        })?;
        let info = loaded.info.clone();
        let mut record = {
            let entries = self.read_entries();
            self.check_fits(&entries, &info)?;
            match entries.get(&info.name) {
                Some(entry) => entry.record.clone(),
                None => PluginRecord {
                    name: info.name.clone(),
                    kind: info.kind,
                    category: None,
                    categories: Vec::new(),
                    event_types: Vec::new(),
                    description: String::new(),
                    active_version: None,
                    versions: Vec::new(),
                },
            }
        };
        record.category = info.category.clone();
        record.categories = info.categories.clone();
        record.event_types = info.event_types.clone();
        record.description = info.description.clone();
        record.active_version = Some(version.clone());
        let created = match record.versions.iter_mut().find(|v| v.version == version) {
            Some(known) => {
                known.limits = limits;
                false
            }
            None => {
                record.versions.push(VersionRecord {
                    version: version.clone(),
                    uploaded_at: now_rfc3339(),
                    size_bytes: wasm.len() as u64,
                    limits,
                });
                true
            }
        };
        let encoded = serde_json::to_vec(&record).expect("a plugin record serializes");
        let wasm_key = wasm_key(&version);
        let mut blobs: Vec<(&str, &[u8])> = Vec::new();
        if !known {
            blobs.push((&wasm_key, wasm));
        }
        let artifact_key = artifact_key(&version, self.runtime.compatibility_key());
        if let Some(artifact) = &loaded.artifact {
            blobs.push((&artifact_key, artifact));
        }
        tokio::task::block_in_place(|| self.store.save_plugin(&info.name, &encoded, &blobs))?;
        let active = self.activate(loaded, &version)?;
        crate::log::info!(
            "deployed {} {} version {version} ({} bytes)",
            info.kind,
            info.name,
            wasm.len()
        );
        let replaced = self.write_entries().insert(
            info.name.clone(),
            Entry {
                record,
                active: Some(active),
                loaded_from: Some(loaded_from),
                error: None,
            },
        );
        if let Some(previous) = replaced.and_then(|entry| entry.active)
            && previous.version() != version
        {
            previous.retire();
        }
        Ok(Deployed {
            name: info.name,
            kind: info.kind,
            version,
            status: "running",
            created,
        })
    }

    /// Refuses a plugin whose name is taken by another kind, or whose category another handler
    /// owns.
    fn check_fits(
        &self,
        entries: &BTreeMap<String, Entry>,
        info: &crate::runtime::PluginInfo,
    ) -> Result<(), InvalidPlugin> {
        if let Some(existing) = entries.get(&info.name)
            && existing.record.kind != info.kind
        {
            return Err(InvalidPlugin(format!(
                "plugin {} is deployed as a {}; this component is a {}",
                info.name, existing.record.kind, info.kind
            )));
        }
        if info.kind == PluginKind::Handler {
            let owner = entries.values().find(|entry| {
                entry.record.kind == PluginKind::Handler
                    && entry.record.name != info.name
                    && entry.record.category == info.category
            });
            if let Some(owner) = owner {
                return Err(InvalidPlugin(format!(
                    "category {} is owned by handler {}; a category has one handler",
                    info.category.as_deref().unwrap_or_default(),
                    owner.record.name
                )));
            }
        }
        Ok(())
    }

    /// The active version of a handler.
    pub(crate) fn handler(&self, name: &str) -> Result<Arc<ActiveHandler>, HandlerLookupError> {
        match self.active(name, |_| PluginKind::Handler)? {
            Active::Handler(handler) => Ok(handler),
            _ => unreachable!("a handler's entry holds a handler"),
        }
    }

    /// The runner of a projection's active version.
    pub(crate) fn projection(
        &self,
        name: &str,
    ) -> Result<Arc<ProjectionRunner>, HandlerLookupError> {
        match self.active(name, |_| PluginKind::Projection)? {
            Active::Projection(runner) => Ok(runner),
            _ => unreachable!("a projection's entry holds a projection"),
        }
    }

    /// The active version of plugin `name`, which must be of the kind `wanted` names given its
    /// own kind.
    fn active(
        &self,
        name: &str,
        wanted: impl FnOnce(PluginKind) -> PluginKind,
    ) -> Result<Active, HandlerLookupError> {
        let entries = self.read_entries();
        let entry = entries
            .get(name)
            .ok_or_else(|| HandlerLookupError::NotFound(name.to_owned()))?;
        let wanted = wanted(entry.record.kind);
        if entry.record.kind != wanted {
            return Err(HandlerLookupError::WrongKind {
                name: name.to_owned(),
                kind: entry.record.kind,
                wanted,
            });
        }
        entry
            .active
            .clone()
            .ok_or_else(|| HandlerLookupError::Failed {
                name: name.to_owned(),
                error: entry
                    .error
                    .clone()
                    .unwrap_or_else(|| "no version is active".into()),
            })
    }

    /// Makes a loaded version the one that serves: a handler is ready at once, a projection
    /// starts its runner.
    fn activate(&self, loaded: Loaded, version: &str) -> Result<Active, DeployError> {
        let Loaded { info, plugin, .. } = loaded;
        let plugin = plugin.relabel(&label(&info.name, version));
        Ok(match plugin {
            PluginCalls::Handler(plugin) => Active::Handler(Arc::new(ActiveHandler {
                category: info.category.clone().unwrap_or_default(),
                name: info.name,
                version: version.to_owned(),
                plugin,
            })),
            PluginCalls::Projection(plugin) => match self.running(&info.name, version) {
                Some(running) => running,
                None => Active::Projection(ProjectionRunner::start(
                    plugin,
                    info,
                    version,
                    self.store.clone(),
                )?),
            },
            PluginCalls::Policy(plugin) => match self.running(&info.name, version) {
                Some(running) => running,
                None => {
                    // A policy has one state and one checkpoint across versions: the version it
                    // replaces finishes its step before this one starts from that checkpoint.
                    let previous = self
                        .read_entries()
                        .get(&info.name)
                        .and_then(|entry| entry.active.clone());
                    if let Some(Active::Policy(previous)) = previous {
                        previous.stop_and_wait();
                    }
                    let filter = LogFilter {
                        categories: info.categories.clone(),
                        event_types: info.event_types.clone(),
                    };
                    Active::Policy(PolicyRunner::start(
                        plugin,
                        &info.name,
                        version,
                        filter,
                        self.store.clone(),
                        self.commands.subscribe(),
                    )?)
                }
            },
        })
    }

    /// The active version of `name` when it is `version` already: deploying the same bytes
    /// again keeps what runs.
    fn running(&self, name: &str, version: &str) -> Option<Active> {
        let entries = self.read_entries();
        let active = entries.get(name)?.active.as_ref()?;
        (active.version() == version && !matches!(active, Active::Handler(_)))
            .then(|| active.clone())
    }

    /// The active version of a projection or policy, for its operator controls.
    pub(crate) fn runner(&self, name: &str) -> Result<Runner, HandlerLookupError> {
        let active = self.active(name, |kind| match kind {
            PluginKind::Handler => PluginKind::Projection,
            kind => kind,
        })?;
        Ok(active
            .runner()
            .expect("a projection's or a policy's version has a runner"))
    }

    /// Every plugin, as `GET /plugins` lists them, by name.
    pub(crate) fn list(&self) -> Vec<serde_json::Value> {
        let head = self.store.head();
        self.read_entries()
            .values()
            .map(|entry| summary(entry, head))
            .collect()
    }

    /// One plugin with its versions, as `GET /plugins/{name}` shows it.
    pub(crate) fn details(&self, name: &str) -> Option<serde_json::Value> {
        let entries = self.read_entries();
        let entry = entries.get(name)?;
        let mut value = summary(entry, self.store.head());
        let record = &entry.record;
        let versions: Vec<serde_json::Value> = record
            .versions
            .iter()
            .map(|v| {
                let active = record.active_version.as_deref() == Some(v.version.as_str());
                let mut version = serde_json::json!({
                    "version": v.version,
                    "uploaded_at": v.uploaded_at,
                    "size_bytes": v.size_bytes,
                    "state": if active { "active" } else { "inactive" },
                    "limits": v.limits,
                });
                if let Some(loaded_from) = entry.loaded_from.filter(|_| active) {
                    version["loaded_from"] = serde_json::json!(loaded_from);
                }
                version
            })
            .collect();
        let object = value.as_object_mut().expect("a summary is an object");
        object.insert("description".into(), record.description.clone().into());
        object.insert("category".into(), serde_json::json!(record.category));
        object.insert(
            "subscriptions".into(),
            serde_json::json!({"categories": record.categories, "event_types": record.event_types}),
        );
        let limits = entry.active.as_ref().map(Active::limits);
        object.insert("limits".into(), serde_json::json!(limits));
        let parked = match &entry.active {
            Some(Active::Projection(runner)) => runner.parked().len(),
            Some(Active::Policy(runner)) => runner.parked().map_or(0, |p| p.len()),
            _ => 0,
        };
        object.insert("parked".into(), parked.into());
        object.insert("versions".into(), versions.into());
        Some(value)
    }

    fn read_entries(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Entry>> {
        self.entries.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write_entries(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Entry>> {
        self.entries.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// The fields every listing shows. A handler has no subscription, hence no position or lag.
fn summary(entry: &Entry, head: u64) -> serde_json::Value {
    let record = &entry.record;
    let runner = entry.active.as_ref().and_then(Active::runner);
    let (status, position, error) = match (&entry.error, runner) {
        (Some(error), _) => ("failed", None, Some(error.clone())),
        (None, Some(runner)) => {
            let (status, position, error) = runner.progress(head);
            (status, Some(position), error)
        }
        (None, None) => ("running", None, None),
    };
    serde_json::json!({
        "name": record.name,
        "kind": record.kind,
        "active_version": record.active_version,
        "candidate_version": null,
        "status": status,
        "position": position,
        "lag": position.map(|p| head.saturating_sub(p)),
        "error": error,
    })
}

/// `name@version`, with the version cut to 12 hex digits: enough to tell versions apart in a
/// log line.
fn label(name: &str, version: &str) -> String {
    format!("{name}@{}", &version[..version.len().min(12)])
}

fn wasm_key(version: &str) -> String {
    format!("plugin-wasm/{version}")
}

fn artifact_key(version: &str, compatibility: &str) -> String {
    format!("plugin-compiled/{version}/{compatibility}")
}
