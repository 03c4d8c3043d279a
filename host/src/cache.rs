//! Compiled components on disk, so a restart does not compile every plugin again.
//!
//! An entry is keyed by the component's content hash and the engine's compatibility hash
//! (wasmtime version, compiler settings, allocator and feature configuration), so a changed
//! component or engine misses rather than loading the wrong code. Loading native code from
//! disk trusts the file, so nothing is trusted blindly: every entry carries the CRC-32 of its
//! body, checked before the body reaches the engine, and wasmtime itself checks the header
//! against the engine. A corrupt, truncated or incompatible entry is logged, recompiled and
//! written again. The checksum guards against damage, not forgery (whoever can write the
//! folder could write a matching digest of any kind beside their code), so it is a fast one:
//! a cold start reads tens of MiB of entries per interpreted-language plugin. Entries are
//! written to a temporary file and renamed into place, so a crash or a concurrent host never
//! leaves a half-written entry under a key.
//!
//! The folder is bounded: each hit marks its entry as used (its modification time), and
//! each new entry evicts the least recently used ones while the folder is over its size cap
//! ([`DEFAULT_MAX_BYTES`] unless configured), so the builds of a long `host dev` session do
//! not pile up. Several hosts may share the folder: an evicted entry only costs a compile.

use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use wasmtime::Engine;
use wasmtime::component::Component;

/// First bytes of an entry: names the format, so an unrelated file is not mistaken for one.
const MAGIC: &[u8; 8] = b"HHCACHE2";
/// What every format's magic starts with: an entry of an earlier format is named as such.
const MAGIC_FAMILY: &[u8; 7] = b"HHCACHE";
/// Length of the body's checksum (CRC-32, little-endian) after the magic.
const CHECKSUM_LEN: usize = 4;
/// The extension of an entry; nothing else in the folder is counted or evicted.
const ENTRY_EXTENSION: &str = "cwasm";
/// The size cap of the folder when none is configured: room for a few dozen builds of the
/// interpreted languages, whose compiled components are tens of MiB each.
pub const DEFAULT_MAX_BYTES: u64 = 2 << 30;

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
    /// Compiled earlier by this process and kept in memory (a development runtime).
    InMemory,
}

/// A folder of compiled components.
#[derive(Debug, Clone)]
pub struct ComponentCache {
    dir: PathBuf,
    max_bytes: u64,
}

impl ComponentCache {
    /// A cache in `dir`, created when first written, capped at [`DEFAULT_MAX_BYTES`].
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            max_bytes: DEFAULT_MAX_BYTES,
        }
    }

    /// The same cache capped at `max_bytes` of entries.
    #[must_use]
    pub fn with_max_bytes(mut self, max_bytes: u64) -> Self {
        self.max_bytes = max_bytes;
        self
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

    /// The folder the entries are kept in.
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
                Ok(component) => {
                    mark_used(&path);
                    return Ok((component, Compiled::Cached));
                }
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
        match evict_least_recently_used(&self.dir, self.max_bytes, &path) {
            Ok((0, _)) => {}
            Ok((entries, bytes)) => tracing::info!(
                dir = %self.dir.display(), entries, mib = bytes >> 20,
                "compiled-component cache over its cap of {} MiB: evicted the least recently used entries",
                self.max_bytes >> 20
            ),
            Err(e) => {
                tracing::warn!(dir = %self.dir.display(), "cannot trim the compiled-component cache: {e:#}")
            }
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
        let Some(rest) = entry.strip_prefix(MAGIC.as_slice()) else {
            return Err(if entry.starts_with(MAGIC_FAMILY) {
                "written in an earlier format".into()
            } else {
                "not a cache entry (bad magic)".into()
            });
        };
        let Some((recorded, body)) = rest.split_first_chunk::<CHECKSUM_LEN>() else {
            return Err("truncated entry".into());
        };
        if crc32fast::hash(body).to_le_bytes() != *recorded {
            return Err("checksum mismatch: the entry is corrupt or truncated".into());
        }
        // SAFETY: `body` is exactly what `Component::serialize` produced for this engine
        // configuration (the key carries the engine's compatibility hash, and the checksum
        // shows the bytes undamaged since they were written); wasmtime checks its own header
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
        file.write_all(&crc32fast::hash(&body).to_le_bytes())?;
        file.write_all(&body)?;
        file.persist(path)?;
        Ok(())
    }
}

/// Marks an entry as just used, so eviction takes it last. Best effort: a read-only cache
/// still serves.
fn mark_used(path: &Path) {
    if let Ok(file) = std::fs::File::options().append(true).open(path) {
        let _ = file.set_modified(std::time::SystemTime::now());
    }
}

/// Removes the least recently used entries of `dir`, never `keep` (the entry just written),
/// until the rest take at most `max_bytes`; (entries removed, their bytes).
fn evict_least_recently_used(
    dir: &Path,
    max_bytes: u64,
    keep: &Path,
) -> std::io::Result<(usize, u64)> {
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if path.extension().is_none_or(|e| e != ENTRY_EXTENSION) {
            continue;
        }
        let Ok(meta) = entry.metadata() else { continue };
        entries.push((meta.modified()?, meta.len(), path));
    }
    let mut total: u64 = entries.iter().map(|(_, len, _)| len).sum();
    // Oldest first.
    entries.sort();
    let (mut removed, mut freed) = (0, 0);
    for (_, len, path) in entries {
        if total <= max_bytes {
            break;
        }
        if path == keep {
            continue;
        }
        // Another host may have removed it first: it is gone either way.
        match std::fs::remove_file(&path) {
            Ok(()) => {
                removed += 1;
                freed += len;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        total -= len;
    }
    Ok((removed, freed))
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
    fn code_of_one_compiler_is_never_loaded_by_the_other() {
        let (_dir, cache, _, bytes, digest) = setup();
        let engine = |strategy| {
            let mut config = wasmtime::Config::new();
            config.strategy(strategy);
            Engine::new(&config).unwrap()
        };
        let cranelift = engine(wasmtime::Strategy::Cranelift);
        let winch = engine(wasmtime::Strategy::Winch);
        assert_ne!(
            cache.entry_path(&cranelift, &digest),
            cache.entry_path(&winch, &digest)
        );
        for engine in [&cranelift, &winch] {
            let (_, how) = cache.load_or_compile(engine, &bytes, &digest).unwrap();
            assert!(matches!(how, Compiled::Fresh), "{how:?}");
        }
        for engine in [&cranelift, &winch] {
            let (_, how) = cache.load_or_compile(engine, &bytes, &digest).unwrap();
            assert!(matches!(how, Compiled::Cached), "{how:?}");
        }
        let entries = std::fs::read_dir(cache.dir()).unwrap().count();
        assert_eq!(entries, 2, "one entry per compiler");
    }

    #[test]
    fn over_the_cap_the_least_recently_used_entries_go_first() {
        let dir = tempfile::tempdir().unwrap();
        let now = std::time::SystemTime::now();
        let entry = |name: &str, minutes_ago: u64| {
            let path = dir.path().join(name);
            std::fs::write(&path, vec![0u8; 100]).unwrap();
            let file = std::fs::File::options().append(true).open(&path).unwrap();
            file.set_modified(now - std::time::Duration::from_secs(60 * minutes_ago))
                .unwrap();
            path
        };
        let oldest = entry("a.cwasm", 30);
        let older = entry("b.cwasm", 20);
        let newest = entry("c.cwasm", 10);
        let other = entry("notes.txt", 60);
        let none = dir.path().join("none.cwasm");
        let evict = |max, keep: &Path| evict_least_recently_used(dir.path(), max, keep).unwrap();
        assert_eq!(evict(300, &none), (0, 0));
        assert_eq!(evict(250, &none), (1, 100));
        assert!(!oldest.exists() && older.exists() && newest.exists());
        // Using an entry makes it the most recent: the other one goes.
        mark_used(&older);
        assert_eq!(evict(150, &none), (1, 100));
        assert!(older.exists() && !newest.exists());
        // The entry just written stays, even over the cap.
        assert_eq!(evict(50, &older), (0, 0));
        assert!(older.exists());
        assert!(other.exists(), "only entries are counted and evicted");
    }

    #[test]
    fn a_hit_marks_its_entry_used_and_a_new_entry_keeps_the_folder_under_its_cap() {
        let (_dir, cache, engine, bytes, digest) = setup();
        cache.load_or_compile(&engine, &bytes, &digest).unwrap();
        let entry = only_entry(&cache);
        let an_hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        std::fs::File::options()
            .append(true)
            .open(&entry)
            .unwrap()
            .set_modified(an_hour_ago)
            .unwrap();
        cache.load_or_compile(&engine, &bytes, &digest).unwrap();
        let used = std::fs::metadata(&entry).unwrap().modified().unwrap();
        assert!(used > an_hour_ago + std::time::Duration::from_secs(3000));

        // A cap below one entry: each new entry evicts the ones before, and stays.
        let small = ComponentCache::new(cache.dir()).with_max_bytes(1);
        let other = wat::parse_str("(component (core module (func (export \"g\"))))").unwrap();
        small
            .load_or_compile(&engine, &other, &content_digest(&other))
            .unwrap();
        assert!(!entry.exists());
        assert_eq!(std::fs::read_dir(cache.dir()).unwrap().count(), 1);
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
            matches!(&how, Compiled::Rebuilt(reason) if reason.contains("checksum mismatch")),
            "{how:?}"
        );
        // Rewritten whole: the next load is a hit again.
        let (_, how) = cache.load_or_compile(&engine, &bytes, &digest).unwrap();
        assert_eq!(how, Compiled::Cached);
    }

    #[test]
    fn truncated_foreign_and_older_entries_are_rebuilt() {
        let (_dir, cache, engine, bytes, digest) = setup();
        cache.load_or_compile(&engine, &bytes, &digest).unwrap();
        let entry = only_entry(&cache);
        let stored = std::fs::read(&entry).unwrap();
        let earlier = [b"HHCACHE1".as_slice(), &stored[MAGIC.len()..]].concat();
        for (damage, expect) in [
            (stored[..MAGIC.len() + 2].to_vec(), "truncated"),
            (earlier, "earlier format"),
            (b"not a cache entry at all".to_vec(), "bad magic"),
            (stored[..stored.len() / 2].to_vec(), "checksum mismatch"),
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
