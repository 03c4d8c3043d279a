//! P8: how long `host run` takes from process start to serving — database opened and
//! migrated, every plugin loaded from a warm compiled-component cache, listening — the way an
//! operator restarts it.

use anyhow::{Context, bail};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Longest a start may take before the figure is abandoned as broken.
const START_DEADLINE: Duration = Duration::from_secs(120);

/// Makes `folder` a plugins folder holding `plugins` (source folders or component files) by
/// links under their own names, so their manifests' relative paths still resolve.
///
/// # Errors
/// Fails when `folder` cannot be created, or a plugin is missing or cannot be linked.
pub fn link_plugins(folder: &Path, plugins: &[PathBuf]) -> anyhow::Result<()> {
    std::fs::create_dir_all(folder).with_context(|| format!("creating {}", folder.display()))?;
    for plugin in plugins {
        let target = plugin
            .canonicalize()
            .with_context(|| format!("plugin {}", plugin.display()))?;
        let name = target.file_name().context("a plugin path names a file")?;
        let link = folder.join(name);
        #[cfg(unix)]
        let linked = std::os::unix::fs::symlink(&target, &link);
        #[cfg(windows)]
        let linked = if target.is_dir() {
            std::os::windows::fs::symlink_dir(&target, &link)
        } else {
            std::os::windows::fs::symlink_file(&target, &link)
        };
        linked.with_context(|| format!("linking {} to {}", link.display(), target.display()))?;
    }
    Ok(())
}

/// Starts this executable as `host run` on `plugins` `starts` times (after one untimed
/// start that fills the cache in `scratch`), each on a fresh database, and returns each
/// start's time to its listening line.
///
/// # Errors
/// Fails when a start does not reach its listening line.
pub fn time_starts(plugins: &Path, scratch: &Path, starts: usize) -> anyhow::Result<Vec<Duration>> {
    // The `host` beside this binary: where `cargo install` and cargo's target folder put it.
    let host = std::env::current_exe()
        .context("finding the host-bench executable")?
        .with_file_name(format!("host{}", std::env::consts::EXE_SUFFIX));
    let cache = scratch.join("cache");
    let mut timings = Vec::with_capacity(starts);
    for start in 0..=starts {
        let database = scratch.join(format!("start-{start}.db"));
        let began = Instant::now();
        let mut child = Command::new(&host)
            .arg("run")
            .arg("--plugins")
            .arg(plugins)
            .arg("--database-url")
            .arg(format!("sqlite://{}", database.display()))
            .args(["--listen", "127.0.0.1:0", "--no-dispatch"])
            .arg("--cache-dir")
            .arg(&cache)
            .env("HOST_LOG", "warn")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", host.display()))?;
        let stdout = child.stdout.take().expect("piped");
        let (lines, listening) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with("host listening on ") {
                    let _ = lines.send(());
                    return;
                }
            }
        });
        let served = listening.recv_timeout(START_DEADLINE);
        let took = began.elapsed();
        let _ = child.kill();
        let _ = child.wait();
        if served.is_err() {
            bail!(
                "`host run --plugins {}` did not serve within {START_DEADLINE:?}",
                plugins.display()
            );
        }
        // The first start compiles what the cache lacks: not a restart.
        if start > 0 {
            timings.push(took);
        }
    }
    Ok(timings)
}
