//! Versions of one plugin side by side, and the switches between them.
//!
//! A projection's new version is a candidate: it builds its own state from position 1 while the
//! active version keeps serving, and takes over once it has caught up (by itself, or when an
//! operator promotes it). The version it replaces becomes the previous version and keeps
//! running, so its state stays current and a rollback is instant. A handler's or policy's new
//! version takes over at once unless deployed for manual promotion; a handler's previous version
//! stays loaded for a rollback; a policy runs one version at a time from its one checkpoint.
//! Deleting a version frees its bytes and, for a projection, its state.
//!
//! Architecture Invariant: every change of versions goes through [`Plugins::change`], one at a
//! time. It stores the new record before anything it names runs, and switches the active
//! version under the registry's write lock: a read takes one version's runner, so it sees one
//! version's state, never a mix. A projection takes over only once it has processed at least
//! the position of the version it replaces, so the positions readers see never go back.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{
    Entry, Fresh, LoadedVersion, PluginRecord, Plugins, Promote, Version, artifact_prefix, wasm_key,
};
use crate::projections::{self, ProjectionRunner};
use evhost_runtime::{InvalidPlugin, PluginCalls, PluginInfo, PluginKind};
use evhost_store::{StorageError, now_rfc3339};

/// How long an operator's promotion or rollback waits for the version taking over to reach the
/// active version's position.
const READY_WAIT: Duration = Duration::from_secs(5);
/// How often a candidate that promotes itself looks again at the active version's position,
/// which moves without telling it.
const CANDIDATE_RECHECK: Duration = Duration::from_millis(50);

/// Why a change of versions was refused. Nothing changed.
#[derive(Debug, thiserror::Error)]
pub enum VersionError {
    /// An upload is not a plugin this host can run, or it conflicts with what is deployed.
    #[error(transparent)]
    Invalid(#[from] InvalidPlugin),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("no plugin named {0:?} is deployed")]
    PluginNotFound(String),
    #[error("plugin {name:?} has no version {version:?}")]
    VersionNotFound { name: String, version: String },
    #[error("plugin {0:?} has no candidate version to promote")]
    NoCandidate(String),
    #[error("plugin {0:?} has no previous version to roll back to")]
    NoPrevious(String),
    #[error("version {version} of {name} is active; promote or roll back to another one first")]
    Active { name: String, version: String },
    #[error("version {version} of {name} cannot take over: {reason}")]
    NotReady {
        name: String,
        version: String,
        reason: String,
    },
}

/// What made the active version change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// A deploy whose upload took over at once.
    Deploy,
    /// An operator's promotion.
    Promote,
    /// A candidate that caught up and promoted itself.
    Auto,
    Rollback,
    /// A change made on another node sharing the store, which this node follows.
    OtherNode,
}

/// A switch of the active version.
#[derive(Debug, Clone, Serialize)]
pub struct Switch {
    pub name: String,
    pub from: Option<String>,
    pub to: String,
    pub trigger: Trigger,
    pub at: String,
    /// For a candidate that promoted itself: how long after it caught up it served reads.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub caught_up_to_active_us: Option<u64>,
}

impl Plugins {
    /// Makes `version` (or, without one, the candidate) the active version of plugin `name`.
    /// A projection must have caught up with the active version; it waits a few seconds for
    /// that. Answers the switch, or none when the version is active already.
    pub async fn promote(
        &self,
        name: &str,
        version: Option<&str>,
    ) -> Result<Option<Switch>, VersionError> {
        self.switch_to(name, version, Trigger::Promote, None).await
    }

    /// Makes the previous version of plugin `name` active again; the version it replaces
    /// becomes the previous one, so a second rollback undoes the first.
    pub async fn rollback(&self, name: &str) -> Result<Option<Switch>, VersionError> {
        self.switch_to(name, None, Trigger::Rollback, None).await
    }

    async fn switch_to(
        &self,
        name: &str,
        version: Option<&str>,
        trigger: Trigger,
        caught_up: Option<Instant>,
    ) -> Result<Option<Switch>, VersionError> {
        let _changing = self.changing.lock().await;
        let mut record = self.record(name)?;
        let version = match (version, trigger) {
            (Some(version), _) => version.to_owned(),
            (None, Trigger::Rollback) => record
                .previous_version
                .clone()
                .ok_or_else(|| VersionError::NoPrevious(name.to_owned()))?,
            (None, _) => record
                .candidate_version
                .clone()
                .ok_or_else(|| VersionError::NoCandidate(name.to_owned()))?,
        };
        if trigger == Trigger::Auto
            && (record.candidate_version.as_deref() != Some(version.as_str())
                || record.promote != Promote::Auto)
        {
            return Err(VersionError::NoCandidate(name.to_owned()));
        }
        if record.active_version.as_deref() == Some(version.as_str()) {
            return Ok(None);
        }
        if record.limits(&version).is_none() {
            return Err(VersionError::VersionNotFound {
                name: name.to_owned(),
                version,
            });
        }
        let has_active = self
            .read_entries()
            .get(name)
            .is_some_and(|entry| entry.active().is_some());
        record.previous_version = record.active_version.take().filter(|_| has_active);
        record.active_version = Some(version.clone());
        if record.candidate_version.as_deref() == Some(version.as_str()) {
            record.candidate_version = None;
        }
        self.change(record, None, &[], trigger, caught_up).await
    }

    /// Follows the changes other nodes made to the plugin records: every record that differs
    /// from this node's is applied here as it stands (its versions loaded or retired, its active
    /// version switched), without saving it again.
    pub async fn follow_catalog(&self) -> Result<(), VersionError> {
        let _changing = self.changing.lock().await;
        for (name, bytes) in self.store.plugin_records().await? {
            let known = self
                .read_entries()
                .get(&name)
                .map(|entry| serde_json::to_vec(&entry.record).expect("a record serializes"));
            if known.as_deref() == Some(&bytes[..]) {
                continue;
            }
            let record: PluginRecord = serde_json::from_slice(&bytes).map_err(|e| {
                StorageError::Failed(format!("the record of plugin {name:?} is corrupt: {e}"))
            })?;
            tracing::info!("plugin {name} changed on another node; following");
            if let Err(error) = self
                .change(record, None, &[], Trigger::OtherNode, None)
                .await
            {
                tracing::error!("following the change of plugin {name}: {error}");
            }
        }
        Ok(())
    }

    /// Deletes a version that is not active: its uploaded bytes, its compiled artifacts and,
    /// for a projection, its state and checkpoint. Answers how many state entries were freed.
    pub async fn delete_version(&self, name: &str, version: &str) -> Result<u64, VersionError> {
        let _changing = self.changing.lock().await;
        let mut record = self.record(name)?;
        if record.active_version.as_deref() == Some(version) {
            return Err(VersionError::Active {
                name: name.to_owned(),
                version: version.to_owned(),
            });
        }
        if record.limits(version).is_none() {
            return Err(VersionError::VersionNotFound {
                name: name.to_owned(),
                version: version.to_owned(),
            });
        }
        record.versions.retain(|v| v.version != version);
        for role in [&mut record.candidate_version, &mut record.previous_version] {
            if role.as_deref() == Some(version) {
                *role = None;
            }
        }
        let kind = record.kind;
        // The record goes first: if the host stops half-way, what is left is unreferenced.
        self.change(record, None, &[], Trigger::Deploy, None)
            .await?;
        self.store.delete_blobs(&wasm_key(version)).await?;
        self.store.delete_blobs(&artifact_prefix(version)).await?;
        let entries = match kind {
            PluginKind::Projection => {
                projections::delete_state(self.store.as_ref(), name, version).await?
            }
            PluginKind::Handler | PluginKind::Policy => 0,
        };
        tracing::info!("deleted {kind} {name} version {version} ({entries} state entries freed)");
        Ok(entries)
    }

    /// Loads a stored version of plugin `name` for a replay: instances of its own, nothing
    /// started. Blocks on I/O, and on compilation when the artifact does not fit this engine.
    pub async fn load_for_replay(
        &self,
        name: &str,
        version: &str,
    ) -> Result<(PluginCalls, PluginInfo), VersionError> {
        let record = self.record(name)?;
        if record.limits(version).is_none() {
            return Err(VersionError::VersionNotFound {
                name: name.to_owned(),
                version: version.to_owned(),
            });
        }
        let (loaded, _) = self.load_stored(&record, version).await?;
        let label = format!("{}/replay", super::label(name, version));
        Ok((loaded.plugin.relabel(&label), loaded.info))
    }

    /// A copy of the stored record of plugin `name`.
    fn record(&self, name: &str) -> Result<PluginRecord, VersionError> {
        self.read_entries()
            .get(name)
            .map(|entry| entry.record.clone())
            .ok_or_else(|| VersionError::PluginNotFound(name.to_owned()))
    }

    /// Brings plugin `record.name` to `record`: loads the versions it keeps loaded that are not
    /// (`fresh`, a deploy's upload, among them), stores the record with `blobs`, retires the
    /// loaded versions it no longer keeps, starts the new ones, and switches the active version
    /// atomically. Answers the switch, if the active version changed.
    pub(super) async fn change(
        &self,
        mut record: PluginRecord,
        mut fresh: Option<Fresh>,
        blobs: &[(&str, &[u8])],
        trigger: Trigger,
        caught_up: Option<Instant>,
    ) -> Result<Option<Switch>, VersionError> {
        let name = record.name.clone();
        let (current, old_active) = {
            let entries = self.read_entries();
            match entries.get(&name) {
                Some(entry) => (
                    entry.loaded.clone(),
                    entry
                        .active()
                        .map(|active| (entry.record.active_version.clone(), active.clone())),
                ),
                None => (BTreeMap::new(), None),
            }
        };
        let wanted = record.loaded_versions();
        let new_active = record.active_version.clone();
        let mut to_start = Vec::new();
        for version in &wanted {
            let fresh = fresh.take_if(|f| &f.version == version);
            // Bytes deployed again may carry new limits: a handler is loaded again; a running
            // projection or policy takes them from its next call on, without a restart.
            let reload = fresh.is_some() && record.kind == PluginKind::Handler;
            if let Some(running) = current.get(version).filter(|_| !reload) {
                if let Some(limits) = fresh.as_ref().and_then(|f| record.limits(&f.version)) {
                    running.version.set_limits(limits);
                }
                continue;
            }
            let loaded = match fresh {
                Some(fresh) => Ok((fresh.loaded, fresh.loaded_from)),
                None => self.load_stored(&record, version).await,
            };
            match loaded {
                Ok(loaded) => to_start.push((version.clone(), loaded)),
                // Only the version taking over must load; one kept beside it is not worth
                // refusing the change for.
                Err(error) if new_active.as_deref() != Some(version.as_str()) => {
                    tracing::error!("plugin {name} version {version} could not be loaded: {error}");
                }
                Err(error) => return Err(error),
            }
        }
        let switching = new_active.as_ref() != old_active.as_ref().and_then(|(v, _)| v.as_ref());
        if let Some(active) = &new_active {
            let info = match to_start.iter().find(|(v, _)| v == active) {
                Some((_, (loaded, _))) => loaded.info.clone(),
                None => (*current[active].info).clone(),
            };
            record.describe(&info);
        }
        // A projection takes over from a running one only at or past its position.
        let taking_over = match (&new_active, &old_active) {
            // The node that made the change waited for the new version to be ready.
            _ if trigger == Trigger::OtherNode => None,
            (Some(new), Some((_, old))) if switching => {
                match (&current.get(new).map(|v| &v.version), &old.version) {
                    (Some(Version::Projection(new)), Version::Projection(old)) => {
                        let wait = if trigger == Trigger::Auto {
                            Duration::ZERO
                        } else {
                            READY_WAIT
                        };
                        ready(&name, new, old, wait).await?;
                        Some((new.clone(), old.clone()))
                    }
                    _ => None,
                }
            }
            _ => None,
        };
        if trigger != Trigger::OtherNode {
            let encoded = serde_json::to_vec(&record).expect("a plugin record serializes");
            let blobs = blobs
                .iter()
                .map(|(key, bytes)| ((*key).to_owned(), bytes.to_vec()))
                .collect();
            let point = match trigger {
                Trigger::Deploy => "deploy",
                Trigger::Promote => "promote",
                Trigger::Auto => "auto-promote",
                Trigger::Rollback => "rollback",
                Trigger::OtherNode => "other-node",
            };
            crate::faults::crash_point(&format!("{point}-before-save"));
            self.store.save_plugin(&name, encoded, blobs).await?;
            // Saved and not yet running here, nor answered: what a crash leaves must be whole.
            crate::faults::crash_point(&format!("{point}-after-save"));
        }
        let mut loaded = current;
        let retired: Vec<LoadedVersion> = {
            let gone: Vec<String> = loaded
                .keys()
                .filter(|v| !wanted.contains(*v))
                .cloned()
                .collect();
            gone.iter().filter_map(|v| loaded.remove(v)).collect()
        };
        for version in &retired {
            version.version.retire().await;
        }
        for (version, (calls, loaded_from)) in to_start {
            let started = self.start(calls, &version, loaded_from).await?;
            loaded.insert(version, started);
        }
        if let Some((new, old)) = &taking_over {
            catch_up(new, old).await;
        }
        let switch = switching.then(|| Switch {
            name: name.clone(),
            from: old_active.and_then(|(v, _)| v),
            to: new_active.clone().unwrap_or_default(),
            trigger,
            at: now_rfc3339(),
            caught_up_to_active_us: caught_up.map(|at| at.elapsed().as_micros() as u64),
        });
        let candidate = auto_candidate(&record, &loaded);
        {
            let mut entries = self.write_entries();
            let last_switch = switch.clone().or_else(|| {
                entries
                    .get(&name)
                    .and_then(|entry| entry.last_switch.clone())
            });
            let error = match &new_active {
                Some(active) if !loaded.contains_key(active) => {
                    Some(format!("version {active} is not loaded"))
                }
                _ => None,
            };
            entries.insert(
                name.clone(),
                Entry {
                    record,
                    loaded,
                    error,
                    last_switch,
                },
            );
        }
        if let Some(switch) = &switch {
            tracing::info!(
                "plugin {name}: version {} is active ({:?}, was {})",
                switch.to,
                switch.trigger,
                switch.from.as_deref().unwrap_or("none")
            );
        }
        if let Some((version, runner)) = candidate {
            self.promote_when_caught_up(name, version, runner);
        }
        Ok(switch)
    }

    /// Promotes a projection's candidate as soon as it has caught up with the active version,
    /// in a task of its own that ends once the version is no longer an automatic candidate.
    pub(super) fn promote_when_caught_up(
        &self,
        name: String,
        version: String,
        candidate: Arc<ProjectionRunner>,
    ) {
        let Some(plugins) = self.this.get().cloned() else {
            // Not connected yet: the host promotes its candidates when it connects.
            return;
        };
        tokio::spawn(async move {
            let mut position = candidate.watch_position();
            loop {
                let Some(this) = plugins.upgrade() else {
                    return;
                };
                let active = {
                    let entries = this.read_entries();
                    let Some(entry) = entries.get(&name) else {
                        return;
                    };
                    if entry.record.candidate_version.as_deref() != Some(version.as_str())
                        || entry.record.promote != Promote::Auto
                    {
                        return;
                    }
                    match entry.active().map(|active| &active.version) {
                        Some(Version::Projection(active)) => Some(active.clone()),
                        _ => None,
                    }
                };
                let caught_up = active.is_none_or(|active| {
                    candidate.position() >= active.position() && !candidate.is_paused()
                });
                if caught_up {
                    let at = Instant::now();
                    match this
                        .switch_to(&name, Some(&version), Trigger::Auto, Some(at))
                        .await
                    {
                        Ok(_) | Err(VersionError::NoCandidate(_)) => return,
                        Err(VersionError::NotReady { .. }) => {}
                        Err(error) => {
                            tracing::error!(
                                "plugin {name}: candidate {version} could not be promoted: {error}"
                            );
                            tokio::time::sleep(READY_WAIT).await;
                        }
                    }
                }
                drop(this);
                let _ = tokio::time::timeout(CANDIDATE_RECHECK, position.changed()).await;
            }
        });
    }
}

/// The candidate that promotes itself, if the record has one and it runs.
pub(super) fn auto_candidate(
    record: &PluginRecord,
    loaded: &BTreeMap<String, LoadedVersion>,
) -> Option<(String, Arc<ProjectionRunner>)> {
    let version = record.candidate_version.as_ref()?;
    match &loaded.get(version)?.version {
        Version::Projection(runner) if record.promote == Promote::Auto => {
            Some((version.clone(), runner.clone()))
        }
        _ => None,
    }
}

/// Waits at most `wait` for projection version `new` to reach the position of `old`, which it
/// replaces.
async fn ready(
    name: &str,
    new: &ProjectionRunner,
    old: &ProjectionRunner,
    wait: Duration,
) -> Result<(), VersionError> {
    let not_ready = |reason: String| VersionError::NotReady {
        name: name.to_owned(),
        version: new.version.clone(),
        reason,
    };
    if new.is_paused() {
        return Err(not_ready(format!(
            "it is paused at position {}; resume or skip first",
            new.position()
        )));
    }
    let deadline = tokio::time::Instant::now() + wait;
    let mut position = new.watch_position();
    loop {
        if new.position() >= old.position() {
            return Ok(());
        }
        let changed = tokio::time::timeout_at(deadline, position.changed()).await;
        if !matches!(changed, Ok(Ok(()))) {
            return Err(not_ready(format!(
                "it has processed position {}, the active version {}",
                new.position(),
                old.position()
            )));
        }
    }
}

/// Waits, without limit, for `new` to reach the position of `old` again: it was there a moment
/// ago, before the record was stored, and both follow the same log.
async fn catch_up(new: &ProjectionRunner, old: &ProjectionRunner) {
    let mut position = new.watch_position();
    while new.position() < old.position() && !new.is_paused() {
        let _ = tokio::time::timeout(CANDIDATE_RECHECK, position.changed()).await;
    }
}
