//! A directory of compiled components that hosts on one machine share (`evhost serve
//! --compile-cache DIR`), as wasmtime's own command line and Spin keep one: a component compiled
//! once is loaded, not compiled again, by every host that is given the same bytes, whatever data
//! directory it serves. The store's own artifacts make a restart cheap; this makes the first
//! deploy of the same component into another store (a new node, a test's fresh store, a
//! benchmark's copy) cheap too.
//!
//! Files are named by the component's content hash and the engine's compatibility key, so an
//! artifact of another wasmtime, other settings or another CPU is never looked up. A file is
//! written whole under a name of its own and then renamed into place, so a reader sees a
//! complete artifact or none, however many hosts compile the same component at once. Only
//! components that compiled and passed every check are written.
//!
//! Loading an artifact runs the machine code in it: the directory must be writable by the
//! host's user alone, as its data directory is.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::content_hash;

/// The shared directory of compiled components.
pub struct CompileCache {
    dir: PathBuf,
}

impl CompileCache {
    /// Uses `dir`, creating it if missing.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        Ok(CompileCache {
            dir: dir.to_path_buf(),
        })
    }

    /// Where the artifact of `wasm` compiled by an engine of `compatibility` is kept: found once
    /// per compilation (hashing a large component takes a while), then read or written.
    pub(super) fn entry(&self, wasm: &[u8], compatibility: &str) -> CacheEntry {
        CacheEntry {
            path: self
                .dir
                .join(format!("{}-{compatibility}.cwasm", content_hash(wasm))),
        }
    }
}

/// The file of one component's artifact in the cache.
pub(super) struct CacheEntry {
    path: PathBuf,
}

impl CacheEntry {
    /// The artifact, if the cache holds one. A file that cannot be read is reported and
    /// compiled again.
    pub(super) fn get(&self) -> Option<Vec<u8>> {
        match std::fs::read(&self.path) {
            Ok(artifact) => Some(artifact),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
            Err(error) => {
                tracing::warn!(
                    "the compile cache's {} is unreadable: {error}",
                    self.path.display()
                );
                None
            }
        }
    }

    /// Keeps `artifact`. A cache that cannot be written costs later compilations, never a
    /// deploy: the failure is reported and the deploy goes on.
    pub(super) fn put(&self, artifact: &[u8]) {
        static WRITES: AtomicU64 = AtomicU64::new(0);
        let partial = self.path.with_extension(format!(
            "{}-{}.partial",
            std::process::id(),
            WRITES.fetch_add(1, Ordering::Relaxed)
        ));
        let written =
            std::fs::write(&partial, artifact).and_then(|()| std::fs::rename(&partial, &self.path));
        if let Err(error) = written {
            let _ = std::fs::remove_file(&partial);
            tracing::warn!(
                "the compile cache cannot keep {}: {error}",
                self.path.display()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_artifact_is_found_by_its_bytes_and_engine_only() {
        let dir = tempfile::tempdir().unwrap();
        let cache = CompileCache::open(&dir.path().join("made")).unwrap();
        assert_eq!(cache.entry(b"component", "engine-a").get(), None);
        cache.entry(b"component", "engine-a").put(b"artifact");
        assert_eq!(
            cache.entry(b"component", "engine-a").get().as_deref(),
            Some(&b"artifact"[..])
        );
        assert_eq!(cache.entry(b"component", "engine-b").get(), None);
        assert_eq!(cache.entry(b"other component", "engine-a").get(), None);
        // Nothing is left but the artifact itself.
        let files = std::fs::read_dir(dir.path().join("made")).unwrap().count();
        assert_eq!(files, 1);
    }
}
