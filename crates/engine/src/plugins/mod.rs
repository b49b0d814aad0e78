//! The plugins deployed in this host: their records, kept in the store with the uploaded bytes
//! and the compiled artifacts, and the loaded versions of each plugin: the active one (a handler
//! ready for commands, or a projection or policy with the runner that feeds it) and the ones kept
//! beside it (see [`versions`]).
//!
//! A deploy compiles and validates the upload, stores everything in one transaction, and only
//! then makes the version active (or a candidate), so a restart finds exactly what was
//! acknowledged. Commands take the active version when they start and finish on it, so a deploy
//! never disturbs a command in flight.
//!
//! Architecture Invariant: this module knows nothing of HTTP. It reaches wasmtime only through
//! the runtime and the store only through [`Store`].

mod admission;
mod versions;

pub use admission::{Admission, AdmissionLimits, Busy};

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock, Weak};
use std::time::Instant;

use tokio::sync::watch;

use serde::{Deserialize, Serialize};

use crate::delivery::CommandSink;
use crate::placement::Placement;
use crate::policies::PolicyRunner;
use crate::projections::ProjectionRunner;
use evhost_runtime::{
    HandlerPlugin, InvalidPlugin, Loaded, PluginCalls, PluginInfo, PluginKind, PluginLimits,
    Runtime, content_hash,
};
use evhost_store::{LogFilter, StorageError, Store, now_rfc3339};

use versions::Trigger;
pub use versions::{Switch, VersionError};

/// What an operator can set at deploy time; unset values keep their defaults (or, for bytes
/// deployed before, what was set then).
#[derive(Debug, Clone, Copy, Default)]
pub struct DeployOptions {
    pub memory_mib: Option<u64>,
    pub timeout_ms: Option<u64>,
    pub state_mib: Option<u64>,
    /// Whether the upload takes over by itself: a handler or policy at once, a projection once
    /// it has caught up. Manual leaves it a candidate until promoted. Auto when unset.
    pub promote: Option<Promote>,
}

/// How a candidate version becomes the active one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Promote {
    /// As soon as it can: a projection once it has caught up with the active version.
    #[default]
    Auto,
    /// When an operator promotes it.
    Manual,
}

/// What a deploy did.
#[derive(Debug, Clone, Serialize)]
pub struct Deployed {
    pub name: String,
    pub kind: PluginKind,
    pub version: String,
    /// `running` when the upload is the active version, `candidate` when it waits to be promoted.
    pub status: &'static str,
    /// False when this version was uploaded before (the answer is then 200, not 201).
    #[serde(skip)]
    pub created: bool,
}

/// The stored record of one plugin. The description and subscriptions are the active
/// version's.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PluginRecord {
    name: String,
    kind: PluginKind,
    category: Option<String>,
    categories: Vec<String>,
    event_types: Vec<String>,
    description: String,
    active_version: Option<String>,
    /// The version waiting to become active, and how it will.
    #[serde(default)]
    candidate_version: Option<String>,
    #[serde(default)]
    promote: Promote,
    /// The version a rollback returns to: the one active before the last switch.
    #[serde(default)]
    previous_version: Option<String>,
    versions: Vec<VersionRecord>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct VersionRecord {
    version: String,
    uploaded_at: String,
    size_bytes: u64,
    limits: PluginLimits,
}

impl PluginRecord {
    /// The versions kept loaded: the active one; a projection's candidate and previous version,
    /// whose runners keep their state current; a handler's previous version, ready for a
    /// rollback. A policy runs one version: it has one state and one checkpoint.
    fn loaded_versions(&self) -> BTreeSet<String> {
        let mut wanted: BTreeSet<String> = self.active_version.iter().cloned().collect();
        match self.kind {
            PluginKind::Projection => {
                wanted.extend(self.candidate_version.iter().cloned());
                wanted.extend(self.previous_version.iter().cloned());
            }
            PluginKind::Handler => wanted.extend(self.previous_version.iter().cloned()),
            PluginKind::Policy => {}
        }
        wanted
    }

    /// What `version` is to this plugin.
    fn role(&self, version: &str) -> &'static str {
        let is = |v: &Option<String>| v.as_deref() == Some(version);
        if is(&self.active_version) {
            "active"
        } else if is(&self.candidate_version) {
            "candidate"
        } else if is(&self.previous_version) {
            "previous"
        } else {
            "inactive"
        }
    }

    fn limits(&self, version: &str) -> Option<PluginLimits> {
        self.versions
            .iter()
            .find(|v| v.version == version)
            .map(|v| v.limits)
    }

    /// Takes the description and subscriptions of the version becoming active.
    fn describe(&mut self, info: &PluginInfo) {
        self.category = info.category.clone();
        self.categories = info.categories.clone();
        self.event_types = info.event_types.clone();
        self.description = info.description.clone();
    }
}

/// How a version of a plugin came to be loaded in this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LoadedFrom {
    /// Compiled from the uploaded bytes.
    Compiled,
    /// Taken from the compiled artifact cached in the store.
    Cache,
}

/// A version of a handler, shared by the commands running on it.
pub struct ActiveHandler {
    pub name: String,
    pub version: String,
    pub category: String,
    pub plugin: HandlerPlugin,
}

/// A loaded version of a plugin: a handler ready for calls, or the runner of a projection or
/// policy.
#[derive(Clone)]
enum Version {
    Handler(Arc<ActiveHandler>),
    Projection(Arc<ProjectionRunner>),
    Policy(Arc<PolicyRunner>),
}

impl Version {
    fn limits(&self) -> PluginLimits {
        match self {
            Version::Handler(handler) => handler.plugin.limits(),
            Version::Projection(runner) => runner.limits(),
            Version::Policy(runner) => runner.limits(),
        }
    }

    fn set_limits(&self, limits: PluginLimits) {
        match self {
            Version::Handler(handler) => handler.plugin.set_limits(limits),
            Version::Projection(runner) => runner.set_limits(limits),
            Version::Policy(runner) => runner.set_limits(limits),
        }
    }

    /// What the version runs in the background, if it is a projection or a policy.
    fn runner(&self) -> Option<Runner> {
        match self {
            Version::Handler(_) => None,
            Version::Projection(runner) => Some(Runner::Projection(runner.clone())),
            Version::Policy(runner) => Some(Runner::Policy(runner.clone())),
        }
    }

    /// Ends what the version runs in the background, and waits for its step in progress.
    async fn retire(&self) {
        match self {
            Version::Handler(_) => {}
            Version::Projection(runner) => runner.stop_and_wait().await,
            Version::Policy(runner) => runner.stop_and_wait().await,
        }
    }
}

/// A loaded version, with what it describes itself as and where it was loaded from.
#[derive(Clone)]
struct LoadedVersion {
    version: Version,
    info: Arc<PluginInfo>,
    loaded_from: LoadedFrom,
}

/// A running version of a projection or a policy, for its operator controls.
pub enum Runner {
    Projection(Arc<ProjectionRunner>),
    Policy(Arc<PolicyRunner>),
}

impl Runner {
    /// Stops it after the step in progress, until [`Runner::resume`]; the pause is stored.
    pub async fn pause(&self) -> Result<(), StorageError> {
        match self {
            Runner::Projection(runner) => runner.pause().await,
            Runner::Policy(runner) => runner.pause().await,
        }
    }

    pub async fn resume(&self) -> Result<(), StorageError> {
        match self {
            Runner::Projection(runner) => runner.resume().await,
            Runner::Policy(runner) => runner.resume().await,
        }
    }

    /// Its status, the last position it processed, and the error to show, with the log at
    /// `head`.
    pub fn progress(&self, head: u64) -> (&'static str, u64, Option<String>) {
        let ((status, error), position) = match self {
            Runner::Projection(runner) => (runner.state(), runner.position()),
            Runner::Policy(runner) => (runner.state(head), runner.position()),
        };
        (status, position, error)
    }
}

struct Entry {
    record: PluginRecord,
    /// The loaded versions, by version: those [`PluginRecord::loaded_versions`] names that
    /// could be loaded.
    loaded: BTreeMap<String, LoadedVersion>,
    /// Why the active version could not be loaded, if it could not.
    error: Option<String>,
    /// The last switch of the active version in this process.
    last_switch: Option<Switch>,
}

impl Entry {
    fn active(&self) -> Option<&LoadedVersion> {
        self.loaded.get(self.record.active_version.as_deref()?)
    }
}

/// Why a plugin of the kind asked for cannot serve.
#[derive(Debug, thiserror::Error)]
pub enum HandlerLookupError {
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
    /// A version was asked for that is not loaded.
    #[error("plugin {name:?} has no running version {version:?}; running: {running}")]
    VersionNotRunning {
        name: String,
        version: String,
        running: String,
    },
}

/// Counters of plugin loading, for metrics and for proving that a restart did not compile.
#[derive(Debug, Default)]
pub struct LoadCounters {
    pub compilations: AtomicU64,
    pub cache_loads: AtomicU64,
}

/// Where compiled artifacts are kept between starts. Loading an artifact runs machine code
/// without checking it, so it is only loaded from where this host's user alone can write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Artifacts {
    /// In the store, beside the uploads: for a store only this host's user writes (a file).
    InStore,
    /// Never in the store (one other hosts share, which a host must not trust with code): each
    /// host compiles from the upload, into its runtime's compile cache when it has one.
    NotInStore,
}

/// The registry of deployed plugins.
pub struct Plugins {
    /// Shared with the blocking threads that compile and load components.
    runtime: Arc<Runtime>,
    store: Arc<dyn Store>,
    artifacts: Artifacts,
    /// Where this node's runners learn whether they run or stand by.
    placement: Arc<Placement>,
    entries: RwLock<BTreeMap<String, Entry>>,
    /// Changes of versions (deploys, promotions, rollbacks, deletions) run one at a time, so
    /// that two of them cannot interleave.
    changing: tokio::sync::Mutex<()>,
    /// Where policies deliver their commands, once the host has wired it.
    commands: watch::Sender<Option<Weak<dyn CommandSink>>>,
    /// This registry, for the tasks that promote candidates by themselves.
    this: OnceLock<Weak<Plugins>>,
    pub counters: LoadCounters,
    /// Places for the requests that call plugins (commands, queries).
    pub admission: Admission,
}

impl Plugins {
    /// Loads every deployed plugin's loaded versions, from their cached artifacts when they fit
    /// this engine. A plugin whose active version cannot be loaded is kept with its error; it
    /// does not stop the host.
    pub async fn open(
        runtime: Runtime,
        store: Arc<dyn Store>,
        artifacts: Artifacts,
        placement: Arc<Placement>,
    ) -> Result<Self, StorageError> {
        let plugins = Plugins {
            runtime: Arc::new(runtime),
            store,
            artifacts,
            placement,
            entries: RwLock::new(BTreeMap::new()),
            changing: tokio::sync::Mutex::new(()),
            commands: watch::Sender::new(None),
            this: OnceLock::new(),
            admission: Admission::new(AdmissionLimits::default()),
            counters: LoadCounters::default(),
        };
        for (name, bytes) in plugins.store.plugin_records().await? {
            let record: PluginRecord = serde_json::from_slice(&bytes).map_err(|e| {
                StorageError::Failed(format!("the record of plugin {name:?} is corrupt: {e}"))
            })?;
            let mut loaded = BTreeMap::new();
            let mut error = None;
            for version in record.loaded_versions() {
                let started = match plugins.load_stored(&record, &version).await {
                    Ok((calls, from)) => plugins
                        .start(calls, &version, from)
                        .await
                        .map_err(VersionError::from),
                    Err(error) => Err(error),
                };
                match started {
                    Ok(started) => {
                        loaded.insert(version, started);
                    }
                    Err(failure) => {
                        tracing::error!(
                            "plugin {name} version {version} could not be loaded: {failure}"
                        );
                        if record.active_version.as_deref() == Some(version.as_str()) {
                            error = Some(failure.to_string());
                        }
                    }
                }
            }
            let entry = Entry {
                record,
                loaded,
                error,
                last_switch: None,
            };
            plugins.write_entries().insert(name, entry);
        }
        Ok(plugins)
    }

    /// Where this node's runners are placed: the node, its peers and its leases.
    pub fn placement(&self) -> &Arc<Placement> {
        &self.placement
    }

    /// Gives policies the way to deliver their commands, and starts promoting the candidates
    /// that take over by themselves.
    pub fn connect(self: &Arc<Self>, commands: Arc<dyn CommandSink>) {
        self.commands.send_replace(Some(Arc::downgrade(&commands)));
        let _ = self.this.set(Arc::downgrade(self));
        self.follow_changes_elsewhere();
        let candidates: Vec<(String, String, Arc<ProjectionRunner>)> = self
            .read_entries()
            .values()
            .filter_map(|entry| {
                let (version, runner) = versions::auto_candidate(&entry.record, &entry.loaded)?;
                Some((entry.record.name.clone(), version, runner))
            })
            .collect();
        for (name, version, runner) in candidates {
            self.promote_when_caught_up(name, version, runner);
        }
    }

    /// Follows, in a task of its own, the changes of plugin records that other nodes sharing the
    /// store make (a node's own changes are in its registry already, and change nothing here).
    fn follow_changes_elsewhere(self: &Arc<Self>) {
        let plugins = Arc::downgrade(self);
        let mut changes = self.store.watch_catalog();
        changes.borrow_and_update();
        tokio::spawn(async move {
            while changes.changed().await.is_ok() {
                let Some(this) = plugins.upgrade() else {
                    return;
                };
                if let Err(error) = this.follow_catalog().await {
                    tracing::error!("following the plugins' changes on other nodes: {error}");
                }
            }
        });
    }

    /// Loads a stored version of a plugin: from its compiled artifact when that fits this
    /// engine, else from its uploaded bytes (then caching the new artifact). Compiles on a
    /// blocking thread.
    async fn load_stored(
        &self,
        record: &PluginRecord,
        version: &str,
    ) -> Result<(Loaded, LoadedFrom), VersionError> {
        let limits = record.limits(version).unwrap_or_default();
        let label = label(&record.name, version);
        let (mut loaded, loaded_from) = self.load_or_compile(version, &label, limits, None).await?;
        // The artifact was missing or did not fit this engine: keep the new one for next time.
        if let Some(artifact) = loaded.artifact.take()
            && self.artifacts == Artifacts::InStore
        {
            self.store
                .save_blob(
                    &artifact_key(version, self.runtime.compatibility_key()),
                    artifact,
                )
                .await?;
        }
        if loaded.info.name != record.name || loaded.info.kind != record.kind {
            return Err(InvalidPlugin(format!(
                "the stored version {version} describes itself as the {} {}, not the {} {}",
                loaded.info.kind, loaded.info.name, record.kind, record.name
            ))
            .into());
        }
        Ok((loaded, loaded_from))
    }

    /// Loads `version` from its compiled artifact when the store holds one that fits this
    /// engine, and otherwise compiles `wasm`, or the uploaded bytes the store holds when it is
    /// `None` (the loaded plugin then carries the new artifact). Counts which of the two it
    /// was. Loading and compiling run on a blocking thread.
    async fn load_or_compile(
        &self,
        version: &str,
        label: &str,
        limits: PluginLimits,
        wasm: Option<Arc<[u8]>>,
    ) -> Result<(Loaded, LoadedFrom), VersionError> {
        // The time is logged because it is what a restart costs per plugin: milliseconds from
        // the cache, seconds for a large (Python, JavaScript) component compiled afresh.
        let started = Instant::now();
        let key = artifact_key(version, self.runtime.compatibility_key());
        let runtime = self.runtime.clone();
        let owned_label = label.to_owned();
        let stored = match self.artifacts {
            Artifacts::InStore => self.store.blob(&key).await?,
            Artifacts::NotInStore => None,
        };
        let cached = match stored {
            Some(artifact) => tokio::task::spawn_blocking(move || {
                runtime.load_compiled(&artifact, &owned_label, limits)
            })
            .await
            .map_err(|e| StorageError::Failed(format!("loading {label} panicked: {e}")))?,
            None => None,
        };
        if let Some(loaded) = cached {
            let loaded = loaded?;
            self.counters.cache_loads.fetch_add(1, Ordering::Relaxed);
            tracing::info!(
                "plugin {label}: loaded from its compiled artifact in {:.1} ms",
                started.elapsed().as_secs_f64() * 1e3
            );
            return Ok((loaded, LoadedFrom::Cache));
        }
        let wasm: Arc<[u8]> = match wasm {
            Some(wasm) => wasm,
            None => self
                .store
                .blob(&wasm_key(version))
                .await?
                .ok_or_else(|| {
                    StorageError::Failed(format!("the upload of {label} is missing from the store"))
                })?
                .into(),
        };
        let (runtime, owned_label) = (self.runtime.clone(), label.to_owned());
        let loaded =
            tokio::task::spawn_blocking(move || runtime.compile(&wasm, &owned_label, limits))
                .await
                .map_err(|e| StorageError::Failed(format!("compiling {label} panicked: {e}")))??;
        self.counters.compilations.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            "plugin {label}: compiled in {:.1} ms",
            started.elapsed().as_secs_f64() * 1e3
        );
        Ok((loaded, LoadedFrom::Compiled))
    }

    /// Deploys uploaded bytes: validates and compiles them, stores them with their compiled
    /// artifact, and makes them the active version of the plugin they describe, or its
    /// candidate (a projection that has an active version, or any upload with manual
    /// promotion). Blocks on compilation and I/O for a while; the caller runs it off the async
    /// threads.
    pub async fn deploy(
        &self,
        wasm: &[u8],
        options: DeployOptions,
    ) -> Result<Deployed, VersionError> {
        let _changing = self.changing.lock().await;
        let version = content_hash(wasm);
        let label = label("upload", &version);
        let previous_limits = {
            let entries = self.read_entries();
            entries
                .values()
                .find_map(|entry| entry.record.limits(&version))
        };
        let base = previous_limits.unwrap_or_default();
        let limits = PluginLimits {
            memory_mib: options.memory_mib.unwrap_or(base.memory_mib),
            timeout_ms: options.timeout_ms.unwrap_or(base.timeout_ms),
            state_mib: options.state_mib.unwrap_or(base.state_mib),
        };
        limits.check().map_err(InvalidPlugin)?;
        let known = previous_limits.is_some();
        // Bytes deployed before have their compiled artifact in the store already.
        let (mut loaded, loaded_from) = self
            .load_or_compile(&version, &label, limits, Some(Arc::from(wasm)))
            .await?;
        let artifact = loaded.artifact.take();
        let info = loaded.info.clone();
        let (mut record, has_active) = {
            let entries = self.read_entries();
            self.check_fits(&entries, &info)?;
            match entries.get(&info.name) {
                Some(entry) => (entry.record.clone(), entry.active().is_some()),
                None => (
                    PluginRecord {
                        name: info.name.clone(),
                        kind: info.kind,
                        category: None,
                        categories: Vec::new(),
                        event_types: Vec::new(),
                        description: String::new(),
                        active_version: None,
                        candidate_version: None,
                        promote: Promote::Auto,
                        previous_version: None,
                        versions: Vec::new(),
                    },
                    false,
                ),
            }
        };
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
        let promote = options.promote.unwrap_or_default();
        let already_active = record.active_version.as_deref() == Some(version.as_str());
        // A projection builds its state before it serves; anything else takes over at once
        // unless told to wait. With nothing active to keep serving, there is nothing to wait for.
        let candidate = has_active
            && !already_active
            && (info.kind == PluginKind::Projection || promote == Promote::Manual);
        if candidate {
            record.candidate_version = Some(version.clone());
            record.promote = promote;
            if record.previous_version.as_deref() == Some(version.as_str()) {
                record.previous_version = None;
            }
        } else if !already_active {
            record.previous_version = record.active_version.take().filter(|_| has_active);
            record.active_version = Some(version.clone());
            if record.candidate_version.as_deref() == Some(version.as_str()) {
                record.candidate_version = None;
            }
        }
        let wasm_key = wasm_key(&version);
        let mut blobs: Vec<(&str, &[u8])> = Vec::new();
        if !known {
            blobs.push((&wasm_key, wasm));
        }
        let artifact_key = artifact_key(&version, self.runtime.compatibility_key());
        if let Some(artifact) = &artifact
            && self.artifacts == Artifacts::InStore
        {
            blobs.push((&artifact_key, artifact));
        }
        let fresh = Fresh {
            version: version.clone(),
            loaded,
            loaded_from,
        };
        self.change(record, Some(fresh), &blobs, Trigger::Deploy, None)
            .await?;
        tracing::info!(
            "deployed {} {} version {version} ({} bytes) as {}",
            info.kind,
            info.name,
            wasm.len(),
            if candidate { "candidate" } else { "active" }
        );
        Ok(Deployed {
            name: info.name,
            kind: info.kind,
            version,
            status: if candidate { "candidate" } else { "running" },
            created,
        })
    }

    /// Refuses a plugin whose name is taken by another kind, or whose category another handler
    /// owns.
    fn check_fits(
        &self,
        entries: &BTreeMap<String, Entry>,
        info: &PluginInfo,
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
    /// The handler that owns `category`, if one is deployed: appends into it go through it.
    pub fn category_owner(&self, category: &str) -> Option<String> {
        self.read_entries()
            .values()
            .find(|entry| {
                entry.record.kind == PluginKind::Handler
                    && entry.record.category.as_deref() == Some(category)
            })
            .map(|entry| entry.record.name.clone())
    }

    pub fn handler(&self, name: &str) -> Result<Arc<ActiveHandler>, HandlerLookupError> {
        match self.version(name, None, |_| PluginKind::Handler)? {
            Version::Handler(handler) => Ok(handler),
            _ => unreachable!("a handler's entry holds a handler"),
        }
    }

    /// The runner of a projection's version: the active one, or the running version asked for.
    pub fn projection(
        &self,
        name: &str,
        version: Option<&str>,
    ) -> Result<Arc<ProjectionRunner>, HandlerLookupError> {
        match self.version(name, version, |_| PluginKind::Projection)? {
            Version::Projection(runner) => Ok(runner),
            _ => unreachable!("a projection's entry holds a projection"),
        }
    }

    /// A loaded version of plugin `name` (the active one unless `version` names another), which
    /// must be of the kind `wanted` names given its own kind.
    fn version(
        &self,
        name: &str,
        version: Option<&str>,
        wanted: impl FnOnce(PluginKind) -> PluginKind,
    ) -> Result<Version, HandlerLookupError> {
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
        if let Some(version) = version {
            let running = || -> String {
                let running: Vec<String> = entry
                    .loaded
                    .keys()
                    .map(|v| format!("{v} ({})", entry.record.role(v)))
                    .collect();
                running.join(", ")
            };
            return entry
                .loaded
                .get(version)
                .map(|loaded| loaded.version.clone())
                .filter(|_| entry.record.kind != PluginKind::Handler)
                .ok_or_else(|| HandlerLookupError::VersionNotRunning {
                    name: name.to_owned(),
                    version: version.to_owned(),
                    running: running(),
                });
        }
        entry
            .active()
            .map(|active| active.version.clone())
            .ok_or_else(|| HandlerLookupError::Failed {
                name: name.to_owned(),
                error: entry
                    .error
                    .clone()
                    .unwrap_or_else(|| "no version is active".into()),
            })
    }

    /// Starts a loaded version: a handler is ready at once, a projection or policy starts its
    /// runner from its checkpoint.
    async fn start(
        &self,
        loaded: Loaded,
        version: &str,
        loaded_from: LoadedFrom,
    ) -> Result<LoadedVersion, StorageError> {
        let Loaded { info, plugin, .. } = loaded;
        let plugin = plugin.relabel(&label(&info.name, version));
        let started = match plugin {
            PluginCalls::Handler(plugin) => Version::Handler(Arc::new(ActiveHandler {
                category: info.category.clone().unwrap_or_default(),
                name: info.name.clone(),
                version: version.to_owned(),
                plugin,
            })),
            PluginCalls::Projection(plugin) => Version::Projection(
                ProjectionRunner::start(
                    plugin,
                    info.clone(),
                    version,
                    self.store.clone(),
                    self.placement.clone(),
                )
                .await?,
            ),
            PluginCalls::Policy(plugin) => {
                let filter = LogFilter {
                    categories: info.categories.clone(),
                    event_types: info.event_types.clone(),
                };
                Version::Policy(
                    PolicyRunner::start(
                        plugin,
                        &info.name,
                        version,
                        filter,
                        self.store.clone(),
                        self.commands.subscribe(),
                        self.placement.clone(),
                    )
                    .await?,
                )
            }
        };
        Ok(LoadedVersion {
            version: started,
            info: Arc::new(info),
            loaded_from,
        })
    }

    /// A running version of a projection or policy (the active one unless `version` names
    /// another), for its operator controls.
    pub fn runner(&self, name: &str, version: Option<&str>) -> Result<Runner, HandlerLookupError> {
        let version = self.version(name, version, |kind| match kind {
            PluginKind::Handler => PluginKind::Projection,
            kind => kind,
        })?;
        Ok(version
            .runner()
            .expect("a projection's or a policy's version has a runner"))
    }

    /// Every plugin, as `GET /plugins` lists them, by name.
    pub fn list(&self) -> Vec<serde_json::Value> {
        let head = self.store.head();
        self.read_entries()
            .values()
            .map(|entry| summary(entry, head))
            .collect()
    }

    /// One plugin with its versions, as `GET /plugins/{name}` shows it.
    pub async fn details(&self, name: &str) -> Result<Option<serde_json::Value>, StorageError> {
        let (is_handler, policy) = match self.read_entries().get(name) {
            Some(entry) => (
                entry.record.kind == PluginKind::Handler,
                match entry.active().map(|active| &active.version) {
                    Some(Version::Policy(runner)) => Some(runner.clone()),
                    _ => None,
                },
            ),
            None => return Ok(None),
        };
        let parked_policy_events = match policy {
            Some(runner) => runner.parked().await.map_or(0, |p| p.len()),
            None => 0,
        };
        // How many commands each version of a handler decided.
        let tallies: BTreeMap<String, u64> = if is_handler {
            let prefix = command_tally(name, "");
            self.store
                .command_tallies(&prefix)
                .await?
                .into_iter()
                .filter_map(|(tally, count)| Some((tally.strip_prefix(&prefix)?.to_owned(), count)))
                .collect()
        } else {
            BTreeMap::new()
        };
        let entries = self.read_entries();
        let Some(entry) = entries.get(name) else {
            return Ok(None);
        };
        let head = self.store.head();
        let mut value = summary(entry, head);
        let record = &entry.record;
        let versions: Vec<serde_json::Value> = record
            .versions
            .iter()
            .map(|v| {
                let mut version = serde_json::json!({
                    "version": v.version,
                    "uploaded_at": v.uploaded_at,
                    "size_bytes": v.size_bytes,
                    "state": record.role(&v.version),
                    "limits": v.limits,
                });
                if let Some(loaded) = entry.loaded.get(&v.version) {
                    version["loaded_from"] = serde_json::json!(loaded.loaded_from);
                    if let Some(runner) = loaded.version.runner() {
                        let (status, position, error) = runner.progress(head);
                        version["status"] = status.into();
                        version["position"] = position.into();
                        version["lag"] = head.saturating_sub(position).into();
                        version["error"] = serde_json::json!(error);
                    }
                    if let Version::Projection(runner) = &loaded.version {
                        version["state_bytes"] = runner.state_bytes().into();
                    }
                }
                if record.kind == PluginKind::Handler {
                    version["commands"] = tallies.get(&v.version).copied().unwrap_or(0).into();
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
        let active = entry.active();
        let limits = active.map(|active| active.version.limits());
        object.insert("limits".into(), serde_json::json!(limits));
        let parked = match active.map(|active| &active.version) {
            Some(Version::Projection(runner)) => runner.parked().len(),
            Some(Version::Policy(_)) => parked_policy_events,
            _ => 0,
        };
        object.insert("parked".into(), parked.into());
        object.insert(
            "previous_version".into(),
            serde_json::json!(record.previous_version),
        );
        object.insert("last_switch".into(), serde_json::json!(entry.last_switch));
        object.insert("versions".into(), versions.into());
        Ok(Some(value))
    }

    fn read_entries(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Entry>> {
        self.entries.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write_entries(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Entry>> {
        self.entries.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// An upload loaded by a deploy, not started yet.
struct Fresh {
    version: String,
    loaded: Loaded,
    loaded_from: LoadedFrom,
}

/// The fields every listing shows. A handler has no subscription, hence no position or lag. A
/// projection's candidate shows its own progress.
fn summary(entry: &Entry, head: u64) -> serde_json::Value {
    let record = &entry.record;
    let runner = entry.active().and_then(|active| active.version.runner());
    let (status, position, error) = match (&entry.error, runner) {
        (Some(error), _) => ("failed", None, Some(error.clone())),
        (None, Some(runner)) => {
            let (status, position, error) = runner.progress(head);
            (status, Some(position), error)
        }
        (None, None) => ("running", None, None),
    };
    let candidate = record.candidate_version.as_ref().map(|version| {
        let mut candidate = serde_json::json!({"version": version, "promote": record.promote});
        let runner = entry
            .loaded
            .get(version)
            .and_then(|loaded| loaded.version.runner());
        if let Some(runner) = runner {
            let (status, position, error) = runner.progress(head);
            candidate["status"] = status.into();
            candidate["position"] = position.into();
            candidate["lag"] = head.saturating_sub(position).into();
            candidate["error"] = serde_json::json!(error);
        }
        candidate
    });
    serde_json::json!({
        "name": record.name,
        "kind": record.kind,
        "active_version": record.active_version,
        "candidate_version": record.candidate_version,
        "candidate": candidate,
        "status": status,
        "position": position,
        "lag": position.map(|p| head.saturating_sub(p)),
        "error": error,
    })
}

/// `name@version`, with the version cut to 12 hex digits: enough to tell versions apart in a
/// log line.
/// The name of the tally counting the commands a handler's version decided.
pub fn command_tally(handler: &str, version: &str) -> String {
    format!("{handler}/{version}")
}

fn label(name: &str, version: &str) -> String {
    format!("{name}@{}", &version[..version.len().min(12)])
}

fn wasm_key(version: &str) -> String {
    format!("plugin-wasm/{version}")
}

fn artifact_key(version: &str, compatibility: &str) -> String {
    format!("{}{compatibility}", artifact_prefix(version))
}

/// The prefix of the keys of a version's compiled artifacts, one per engine they fit.
fn artifact_prefix(version: &str) -> String {
    format!("plugin-compiled/{version}/")
}
