//! The database fails under the running host and comes back: commands answer 503 with the
//! cause, `/ready` says the database is failing, the log says so once rather than once per
//! message, nothing that was acknowledged is lost, and everything resumes on its own.
//!
//! - SQLite on a full disk: the database file lives on a small tmpfs of the test's own, filled
//!   up while the host runs, then freed.
//! - PostgreSQL stopped and started again: a server of the test's own (`initdb` into a
//!   temporary directory, run as the `postgres` user), so the shared server is untouched.
//!
//! Both need root (mount, `runuser`), as CI has; they fail, saying what is missing, without it.

use crate::harness::{DEMO, EVENTUALLY, Host, wait_until};
use serde_json::json;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// How long the tests keep sending commands into a failing database.
const OUTAGE: Duration = Duration::from_secs(3);

/// Runs `program args`, panicking with its output when it fails.
fn run(program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e}"));
    assert!(
        output.status.success(),
        "{program} {args:?} failed ({}): {}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A tmpfs of a few MiB, unmounted on drop.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn new(size: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_str().unwrap();
        run(
            "mount",
            &["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs", path],
        );
        Self { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a filler file until the disk is full; returns its path.
    fn fill(&self) -> PathBuf {
        let path = self.path().join("filler");
        let mut file = File::create(&path).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        while file
            .write_all(&chunk)
            .and_then(|()| file.sync_all())
            .is_ok()
        {}
        // The last partial chunk: fill the remaining bytes one small write at a time.
        while file
            .write_all(&chunk[..512])
            .and_then(|()| file.sync_all())
            .is_ok()
        {}
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// The log reports the failure once, and is not flooded while it lasts.
fn assert_reported_once(host: &Host) {
    let log = host.log_text();
    let reports: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("the database is failing") || l.contains("works again"))
        .collect();
    assert_eq!(
        reports.len(),
        1,
        "the failure is reported once when it starts:\n{}",
        reports.join("\n")
    );
    let noisy: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("ERROR") || l.contains("WARN"))
        .collect();
    assert!(
        noisy.len() < 40,
        "{} warning/error lines in a {OUTAGE:?} outage: the host retries hot; the first:\n{}",
        noisy.len(),
        noisy[..10].join("\n")
    );
}

/// Places 20 orders that must succeed; returns their ids.
fn place_orders(host: &Host, prefix: &str) -> Vec<String> {
    (0..20)
        .map(|i| {
            let id = format!("{prefix}-{i}");
            host.command_ok(
                "order.place",
                json!({ "order_id": id, "sku": "widget", "qty": 1 }),
            );
            id
        })
        .collect()
}

/// Places orders for `OUTAGE` against a failing database; returns the ids acknowledged and
/// checks that the others were refused with 503 and the cause.
fn orders_during_outage(host: &Host, prefix: &str, cause: &[&str]) -> Vec<String> {
    let mut acknowledged = Vec::new();
    let mut refused = 0;
    let started = Instant::now();
    let mut i = 0;
    while started.elapsed() < OUTAGE {
        let id = format!("{prefix}-{i}");
        i += 1;
        let answer = host.command(
            "order.place",
            json!({ "order_id": id, "sku": "widget", "qty": 1 }),
        );
        match answer.status {
            200 => acknowledged.push(id),
            503 => {
                let message = answer.error_message().to_lowercase();
                assert!(
                    cause.iter().any(|c| message.contains(c)),
                    "a 503 names the cause ({cause:?}): {}",
                    answer.body
                );
                refused += 1;
            }
            other => panic!(
                "unexpected answer {other} during the outage: {}",
                answer.body
            ),
        }
    }
    assert!(refused > 0, "the failing database refused no command");
    acknowledged
}

/// Every acknowledged order reached the projection (its events were delivered).
fn all_reserved(host: &Host, orders: &[String]) {
    for id in orders {
        host.summary_when(id, "reserved", EVENTUALLY);
    }
}

#[test]
fn sqlite_on_a_full_disk_answers_503_backs_off_and_resumes_losing_nothing() {
    let disk = SmallDisk::new("8m");
    let url = format!("sqlite://{}", disk.path().join("host.db").display());
    let host = Host::start_on_database(DEMO, &url, &[]);
    host.command_ok("stock.add", json!({ "sku": "widget", "qty": 100_000 }));
    let mut acknowledged = place_orders(&host, "before");
    // Drained first, the outage fails only commands: nothing but the host's own probing
    // can tell it that commits work again.
    host.db().wait_all_done(EVENTUALLY);
    let filler = disk.fill();
    acknowledged.extend(orders_during_outage(&host, "full", &["full"]));
    let (status, ready) = host.ready();
    assert_eq!(status, 503, "{ready}");
    assert_eq!(ready["database"]["ok"], false, "{ready}");
    assert_reported_once(&host);

    fs::remove_file(filler).unwrap();
    wait_until(EVENTUALLY, "the host is ready again", || {
        host.ready().0 == 200
    });
    assert!(host.log_text().contains("the database works again"));
    acknowledged.extend(place_orders(&host, "after"));
    all_reserved(&host, &acknowledged);
}

/// A PostgreSQL server of the test's own, in a temporary directory, stopped on drop.
struct PrivatePostgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
}

impl PrivatePostgres {
    fn start() -> Self {
        let bin = fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL's server binaries under /usr/lib/postgresql")
            .filter_map(|e| e.ok())
            .map(|e| e.path().join("bin"))
            .find(|p| p.join("initdb").is_file())
            .expect("initdb under /usr/lib/postgresql/*/bin");
        let dir = tempfile::tempdir().unwrap();
        run(
            "chown",
            &["postgres:postgres", dir.path().to_str().unwrap()],
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let server = Self { dir, bin, port };
        let initdb = server.bin.join("initdb");
        run(
            "runuser",
            &[
                "-u",
                "postgres",
                "--",
                initdb.to_str().unwrap(),
                "-D",
                server.data().to_str().unwrap(),
                "-A",
                "trust",
                "-U",
                "postgres",
            ],
        );
        server.pg_ctl("start");
        server
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/handler_host", self.port)
    }

    fn pg_ctl(&self, action: &str) {
        let pg_ctl = self.bin.join("pg_ctl");
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {}",
            self.port,
            self.dir.path().display()
        );
        let data = self.data();
        let mut args = vec![
            "-u",
            "postgres",
            "--",
            pg_ctl.to_str().unwrap(),
            "-D",
            data.to_str().unwrap(),
            "-o",
            &options,
            "-w",
            "-m",
            "fast",
            "-l",
        ];
        let log = self.dir.path().join("server.log");
        args.push(log.to_str().unwrap());
        args.push(action);
        run("runuser", &args);
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let pg_ctl = self.bin.join("pg_ctl");
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(pg_ctl)
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "stop"])
            .output();
    }
}

#[test]
fn postgres_stopped_and_started_answers_503_then_resumes_losing_nothing() {
    let server = PrivatePostgres::start();
    let host = Host::start_on_database(DEMO, &server.url(), &[]);
    host.command_ok("stock.add", json!({ "sku": "widget", "qty": 100_000 }));
    let mut acknowledged = place_orders(&host, "before");
    // Drained first, the outage fails only commands: nothing but the host's own probing
    // can tell it that commits work again.
    host.db().wait_all_done(EVENTUALLY);
    server.pg_ctl("stop");
    acknowledged.extend(orders_during_outage(
        &host,
        "down",
        &["connect", "connection", "closed", "timed out", "terminat"],
    ));
    wait_until(EVENTUALLY, "/ready reports the database failing", || {
        host.ready().0 == 503
    });
    assert_reported_once(&host);

    server.pg_ctl("start");
    // Nothing is sent meanwhile: the host finds out on its own.
    wait_until(EVENTUALLY, "the host is ready again", || {
        host.ready().0 == 200
    });
    assert!(host.log_text().contains("the database works again"));
    acknowledged.extend(place_orders(&host, "after"));
    all_reserved(&host, &acknowledged);
}
