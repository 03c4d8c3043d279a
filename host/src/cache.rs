//! Compiled components on disk, so a restart does not compile every plugin again.
//!
//! An entry is keyed by the component's content hash and the engine's compatibility hash
//! (wasmtime version, compiler settings, allocator and feature configuration), so a changed
//! component or engine misses rather than loading the wrong code. Loading native code from
//! disk trusts the file, so nothing is trusted blindly: every entry carries the SHA-256 of its
//! body, checked before the body reaches the engine, and wasmtime itself checks the header
//! against the engine. A corrupt, truncated or incompatible entry is logged, recompiled and
//! written again. Entries are written to a temporary file and renamed into place, so a crash
//! or a concurrent host never leaves a half-written entry under a key.

use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use wasmtime::Engine;
use wasmtime::component::Component;

/// First bytes of an entry: names the format, so an unrelated file is not mistaken for one.
const MAGIC: &[u8; 8] = b"HHCACHE1";
/// SHA-256 digest length.
const DIGEST_LEN: usize = 32;

/// How a component was obtained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compiled {
    /// Read from the cache: not compiled.
    Cached,
    /// Compiled; there was no entry.
    Fresh,
    /// Compiled because the entry was unusable, for the given reason.
    Rebuilt(String),
    /// Compiled; no cache is configured.
    Uncached,
}

/// A folder of compiled components.
#[derive(Debug, Clone)]
pub struct ComponentCache {
    dir: PathBuf,
}

impl ComponentCache {
    /// A cache in `dir`, created when first written.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The default location: `$XDG_CACHE_HOME/handler-host/components`, else
    /// `$HOME/.cache/handler-host/components`; `None` when neither variable is set.
    pub fn default_dir() -> Option<PathBuf> {
        let base = std::env::var_os("XDG_CACHE_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME")
                    .filter(|v| !v.is_empty())
                    .map(|home| PathBuf::from(home).join(".cache"))
            })?;
        Some(base.join("handler-host").join("components"))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The component for `bytes` (whose SHA-256 is `digest`, hex): from the cache when a sound
    /// entry exists, else compiled and stored. A cache that cannot be written is logged and
    /// otherwise ignored: it only costs time.
    ///
    /// # Errors
    /// Fails when the bytes do not compile.
    pub fn load_or_compile(
        &self,
        engine: &Engine,
        bytes: &[u8],
        digest: &str,
    ) -> anyhow::Result<(Component, Compiled)> {
        let path = self.entry_path(engine, digest);
        let how = match std::fs::read(&path) {
            Ok(entry) => match self.open_entry(engine, &entry) {
                Ok(component) => return Ok((component, Compiled::Cached)),
                Err(reason) => {
                    tracing::warn!(entry = %path.display(), "compiled-component cache entry rejected, recompiling: {reason}");
                    Compiled::Rebuilt(reason)
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Compiled::Fresh,
            Err(e) => Compiled::Rebuilt(format!("unreadable entry: {e}")),
        };
        let component = Component::from_binary(engine, bytes)?;
        if let Err(e) = self.store_entry(&path, &component) {
            tracing::warn!(dir = %self.dir.display(), "cannot write the compiled-component cache: {e:#}");
        }
        Ok((component, how))
    }

    /// `<dir>/<component sha256>-<engine hash>.cwasm`
    fn entry_path(&self, engine: &Engine, digest: &str) -> PathBuf {
        let mut hasher = std::hash::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        self.dir
            .join(format!("{digest}-{:016x}.cwasm", hasher.finish()))
    }

    /// Checks an entry's format and digest, then lets the engine check the rest.
    fn open_entry(&self, engine: &Engine, entry: &[u8]) -> Result<Component, String> {
        let rest = entry
            .strip_prefix(MAGIC.as_slice())
            .ok_or("not a cache entry (bad magic)")?;
        if rest.len() < DIGEST_LEN {
            return Err("truncated entry".into());
        }
        let (recorded, body) = rest.split_at(DIGEST_LEN);
        if Sha256::digest(body).as_slice() != recorded {
            return Err("digest mismatch: the entry is corrupt or truncated".into());
        }
        // SAFETY: `body` is exactly what `Component::serialize` produced for this engine
        // configuration (the key carries the engine's compatibility hash, and the digest
        // proves the bytes unchanged since they were written); wasmtime checks its own header
        // against this engine before using it.
        unsafe { Component::deserialize(engine, body) }
            .map_err(|e| format!("the engine refused the entry: {e:#}"))
    }

    fn store_entry(&self, path: &Path, component: &Component) -> anyhow::Result<()> {
        let body = component.serialize()?;
        std::fs::create_dir_all(&self.dir)?;
        let mut file = tempfile::NamedTempFile::new_in(&self.dir)?;
        use std::io::Write as _;
        file.write_all(MAGIC)?;
        file.write_all(&Sha256::digest(&body))?;
        file.write_all(&body)?;
        file.persist(path)?;
        Ok(())
    }
}

/// The hex SHA-256 of a component's bytes: its identity in the cache and in version labels.
pub fn content_digest(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    const COMPONENT: &str = "(component (core module (func (export \"f\"))))";

    fn setup() -> (tempfile::TempDir, ComponentCache, Engine, Vec<u8>, String) {
        let dir = tempfile::tempdir().unwrap();
        let cache = ComponentCache::new(dir.path().join("cache"));
        let engine = Engine::default();
        let bytes = wat::parse_str(COMPONENT).unwrap();
        let digest = content_digest(&bytes);
        (dir, cache, engine, bytes, digest)
    }

    fn only_entry(cache: &ComponentCache) -> PathBuf {
        let entries: Vec<_> = std::fs::read_dir(cache.dir())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(entries.len(), 1, "{entries:?}");
        entries[0].clone()
    }

    #[test]
    fn a_second_load_comes_from_the_cache() {
        let (_dir, cache, engine, bytes, digest) = setup();
        let (_, first) = cache.load_or_compile(&engine, &bytes, &digest).unwrap();
        assert_eq!(first, Compiled::Fresh);
        let (_, second) = cache.load_or_compile(&engine, &bytes, &digest).unwrap();
        assert_eq!(second, Compiled::Cached);
    }

    #[test]
    fn a_corrupt_entry_is_detected_and_rebuilt() {
        let (_dir, cache, engine, bytes, digest) = setup();
        cache.load_or_compile(&engine, &bytes, &digest).unwrap();
        let entry = only_entry(&cache);
        let mut stored = std::fs::read(&entry).unwrap();
        let last = stored.len() - 1;
        stored[last] ^= 0xff;
        std::fs::write(&entry, &stored).unwrap();
        let (_, how) = cache.load_or_compile(&engine, &bytes, &digest).unwrap();
        assert!(
            matches!(&how, Compiled::Rebuilt(reason) if reason.contains("digest mismatch")),
            "{how:?}"
        );
        // Rewritten whole: the next load is a hit again.
        let (_, how) = cache.load_or_compile(&engine, &bytes, &digest).unwrap();
        assert_eq!(how, Compiled::Cached);
    }

    #[test]
    fn truncated_and_foreign_entries_are_rebuilt() {
        let (_dir, cache, engine, bytes, digest) = setup();
        cache.load_or_compile(&engine, &bytes, &digest).unwrap();
        let entry = only_entry(&cache);
        let stored = std::fs::read(&entry).unwrap();
        for (damage, expect) in [
            (stored[..20].to_vec(), "truncated"),
            (b"not a cache entry at all".to_vec(), "bad magic"),
            (stored[..stored.len() / 2].to_vec(), "digest mismatch"),
        ] {
            std::fs::write(&entry, damage).unwrap();
            let (_, how) = cache.load_or_compile(&engine, &bytes, &digest).unwrap();
            assert!(
                matches!(&how, Compiled::Rebuilt(reason) if reason.contains(expect)),
                "{expect}: {how:?}"
            );
        }
    }

    #[test]
    fn another_engine_configuration_misses() {
        let (_dir, cache, engine, bytes, digest) = setup();
        cache.load_or_compile(&engine, &bytes, &digest).unwrap();
        let mut config = wasmtime::Config::new();
        config.epoch_interruption(true);
        let other = Engine::new(&config).unwrap();
        let (_, how) = cache.load_or_compile(&other, &bytes, &digest).unwrap();
        assert_eq!(how, Compiled::Fresh);
    }

    #[test]
    fn an_unwritable_cache_still_compiles() {
        let (dir, _, engine, bytes, digest) = setup();
        let file = dir.path().join("a-file");
        std::fs::write(&file, "").unwrap();
        let cache = ComponentCache::new(file.join("cache"));
        for _ in 0..2 {
            let (_, how) = cache.load_or_compile(&engine, &bytes, &digest).unwrap();
            assert_ne!(how, Compiled::Cached);
        }
    }
}
