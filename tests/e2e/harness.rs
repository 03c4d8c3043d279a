//! Drives a real `host` process: builds the fixture components once, starts the host on a
//! fresh temporary directory and database, talks to it over HTTP and the `host bus` CLI, and
//! reads its database directly to check what was committed.
//!
//! The database is a SQLite file in the host's directory, or — inside a test declared with
//! [`on_every_backend!`](crate::on_every_backend) — a fresh database on the PostgreSQL server
//! of `HOST_TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432`), dropped after
//! the test. Such a test fails, naming the server, when PostgreSQL cannot be reached.
//!
//! Every wait polls an observable condition with a deadline ([`wait_for`]); nothing sleeps and
//! hopes. When a test fails while a host is running, the host's temporary directory (database
//! and log) is kept and its path and log are printed with the failure.

use serde_json::Value;
use std::cell::Cell;
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// How long a host may take from spawn to its listening line: it compiles every component
/// at start, and CI machines running the tests in parallel are slow.
const STARTUP_DEADLINE: Duration = Duration::from_secs(180);
/// The same for `host dev`, which first builds its source folders: a new plugin project's
/// first build compiles its dependencies from scratch.
const DEV_STARTUP_DEADLINE: Duration = Duration::from_secs(600);
/// Budget of one HTTP request to the host.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Default deadline for asynchronous outcomes (deliveries, retries): generous, because a
/// deadline only costs time when the test is about to fail anyway.
pub const EVENTUALLY: Duration = Duration::from_secs(20);
/// Pause between two checks of a polled condition.
const POLL_EVERY: Duration = Duration::from_millis(20);
/// The line the host prints on stdout once it serves.
const LISTENING_PREFIX: &str = "host listening on ";

/// Names of the fixture components, as built into `target/plugins/wasm32-wasip2/release/`.
pub const ORDERS: &str = "orders";
pub const INVENTORY: &str = "inventory";
pub const ORDER_SUMMARY: &str = "order_summary";
pub const FLAKY: &str = "flaky";
/// The test-only plugin that misbehaves on command (`tests/plugins/hostile`).
pub const HOSTILE: &str = "hostile";
/// The test-only plugin of the hot-reload tests (`tests/plugins/swap`), variant a, and the same
/// plugin built with `--features variant-b`.
pub const SWAP: &str = "swap";
pub const SWAP_B: &str = "swap-b";
/// The test-only plugin built against the frozen contract 0.1.0 (`tests/plugins/contract-v0-1`).
pub const CONTRACT_V0_1: &str = "contract_v0_1";
/// The Python example plugin (`plugins/fraud-check`) and the JavaScript one (`plugins/notifier`).
pub const FRAUD_CHECK: &str = "fraud_check";
pub const NOTIFIER: &str = "notifier";
/// The test-only plugins that record the envelope they are handed, in Python and JavaScript
/// (`tests/plugins/probe-py`, `tests/plugins/probe-js`).
pub const PROBE_PY: &str = "probe_py";
pub const PROBE_JS: &str = "probe_js";
/// The C example plugin (`plugins/tally`) and the test plugin that drives the C SDK
/// (`tests/plugins/probe-c`).
pub const TALLY: &str = "tally";
pub const PROBE_C: &str = "probe_c";
/// The example plugins of the demo: orders, stock reservation and the order projection.
pub const DEMO: &[&str] = &[ORDERS, INVENTORY, ORDER_SUMMARY];

/// The workspace root (the host crate lives in `host/`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the host crate is inside the workspace")
        .to_owned()
}

pub fn host_binary() -> &'static str {
    env!("CARGO_BIN_EXE_host")
}

/// The built component `name` (e.g. [`ORDERS`]), building every fixture on first use.
pub fn component(name: &str) -> PathBuf {
    let rust = fixtures();
    let target = workspace_root().join("target/plugins");
    let candidates = [
        rust.join(format!("{name}.wasm")),
        target.join("python").join(format!("{name}.wasm")),
        target.join("js").join(format!("{name}.wasm")),
        target.join("c").join(format!("{name}.wasm")),
    ];
    candidates
        .iter()
        .find(|path| path.is_file())
        .unwrap_or_else(|| {
            panic!(
                "fixture component `{name}` does not exist after the build (looked for {candidates:?}); is it a plugin of plugins/ or tests/plugins/?"
            )
        })
        .clone()
}

/// Builds the example plugins and the test plugins once per test binary and returns the
/// folder holding their components.
fn fixtures() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let root = workspace_root();
        require_wasm_target(&root);
        for folder in [root.join("plugins"), root.join("tests/plugins")] {
            let output = Command::new(host_binary())
                .arg("build")
                .arg("--plugins")
                .arg(&folder)
                .current_dir(&root)
                // The compiler's output is logged at info level: keep it for the failure report.
                .env("HOST_LOG", "info")
                .env("NO_COLOR", "1")
                .output()
                .expect("running `host build`");
            if !output.status.success() {
                let log = format!(
                    "{}{}",
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr)
                );
                let hint = if (log.contains("wasm32-wasip2") && log.contains("not installed"))
                    || log.contains("can't find crate for `core`")
                    || log.contains("can't find crate for `std`")
                {
                    "\nthe wasm32-wasip2 target is missing: run `rustup target add wasm32-wasip2`"
                } else {
                    ""
                };
                panic!(
                    "`host build --plugins {}` failed ({}){hint}\n{log}",
                    folder.display(),
                    output.status
                );
            }
        }
        let release = root.join("target/plugins/wasm32-wasip2/release");
        build_swap_variant_b(&root, &release);
        release
    })
}

/// Builds the `swap` plugin again with `--features variant-b` into `swap-b.wasm` beside the
/// other fixtures, leaving `swap.wasm` as variant a.
fn build_swap_variant_b(root: &Path, release: &Path) {
    let variant_a = release.join("swap-a.wasm");
    fs::copy(release.join("swap.wasm"), &variant_a).expect("setting variant a aside");
    let output = Command::new("cargo")
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "-p",
            "swap",
        ])
        .args(["--features", "variant-b", "--target-dir", "target/plugins"])
        .current_dir(root)
        .output()
        .expect("running cargo");
    assert!(
        output.status.success(),
        "building swap variant b failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    fs::copy(
        release.join("swap.wasm"),
        release.join(format!("{SWAP_B}.wasm")),
    )
    .expect("keeping variant b");
    fs::rename(&variant_a, release.join("swap.wasm")).expect("restoring variant a");
}

/// Compiled components shared by every host of a test run, so only the first host that loads
/// a component compiles it.
fn component_cache() -> PathBuf {
    workspace_root().join("target/e2e-component-cache")
}

/// Fails early, and says what to install, when the Rust toolchain cannot build the fixtures.
fn require_wasm_target(root: &Path) {
    let Ok(output) = Command::new("rustc")
        .args(["--print", "sysroot"])
        .current_dir(root)
        .output()
    else {
        return; // no rustc on PATH: let the build report it
    };
    let sysroot = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    let target = sysroot.join("lib/rustlib/wasm32-wasip2");
    assert!(
        !output.status.success() || target.is_dir(),
        "the end-to-end tests build their fixture plugins for wasm32-wasip2, which this toolchain \
         ({}) lacks: run `rustup target add wasm32-wasip2`",
        sysroot.display()
    );
}

/// Polls `probe` until it returns `Some`, and returns that; panics naming `what` when
/// `deadline` passes first.
pub fn wait_for<T>(deadline: Duration, what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = probe() {
            return value;
        }
        if start.elapsed() > deadline {
            panic!("timed out after {deadline:?} waiting for {what}");
        }
        std::thread::sleep(POLL_EVERY);
    }
}

/// Polls `condition` until it holds; panics naming `what` when `deadline` passes first.
/// Runs `call(i)` for i in 0..n on n threads released at the same instant; their results in
/// order of i.
pub fn all_at_once<T: Send + 'static>(
    n: usize,
    call: impl Fn(usize) -> T + Send + Sync + 'static,
) -> Vec<T> {
    let start = Arc::new(std::sync::Barrier::new(n));
    let call = Arc::new(call);
    let threads: Vec<_> = (0..n)
        .map(|i| {
            let (start, call) = (start.clone(), call.clone());
            std::thread::spawn(move || {
                start.wait();
                call(i)
            })
        })
        .collect();
    threads
        .into_iter()
        .map(|t| t.join().expect("a caller thread panicked"))
        .collect()
}

pub fn wait_until(deadline: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    wait_for(deadline, what, || condition().then_some(()));
}

/// A fresh temporary directory for a host, whose `plugins/` folder holds the named fixture
/// components; tests may add more files before [`Host::start_in`].
pub fn host_dir(plugins: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("handler-host-e2e-")
        .tempdir()
        .expect("creating a temporary directory");
    let plugins_dir = dir.path().join("plugins");
    fs::create_dir(&plugins_dir).expect("creating the plugins folder");
    for name in plugins {
        let from = component(name);
        fs::copy(&from, plugins_dir.join(format!("{name}.wasm")))
            .unwrap_or_else(|e| panic!("copying {}: {e}", from.display()));
    }
    dir
}

/// An HTTP answer of the host.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
    pub headers: reqwest::header::HeaderMap,
}

impl Answer {
    /// Whether the host replayed a stored idempotent answer.
    pub fn replayed(&self) -> bool {
        self.headers
            .get("idempotent-replayed")
            .is_some_and(|v| v == "true")
    }

    /// The `error.class` of an error answer.
    pub fn error_class(&self) -> &str {
        self.body["error"]["class"].as_str().unwrap_or_default()
    }

    /// The `error.plugin` of an error answer.
    pub fn error_plugin(&self) -> &str {
        self.body["error"]["plugin"].as_str().unwrap_or_default()
    }

    /// The `error.message` of an error answer.
    pub fn error_message(&self) -> &str {
        self.body["error"]["message"].as_str().unwrap_or_default()
    }
}

/// The database backend hosts started by the current test run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

thread_local! {
    /// Each test runs on a thread of its own, so this is the backend of the running test.
    static BACKEND: Cell<Backend> = const { Cell::new(Backend::Sqlite) };
}

/// Runs `test` with every host it starts on `backend`.
pub fn with_backend(backend: Backend, test: impl FnOnce()) {
    BACKEND.with(|b| b.set(backend));
    test();
}

/// The backend of the running test.
pub fn backend() -> Backend {
    BACKEND.with(Cell::get)
}

/// The PostgreSQL server the tests create their databases on.
fn postgres_server() -> String {
    std::env::var("HOST_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// One host's database (shared by hosts started beside it); a PostgreSQL one is dropped when
/// the last host using it is, unless the test failed.
struct TestDatabase {
    url: String,
    postgres_name: Option<String>,
}

impl TestDatabase {
    fn new(dir: &Path) -> Self {
        match backend() {
            Backend::Sqlite => Self {
                url: format!("sqlite://{}", dir.join("host.db").display()),
                postgres_name: None,
            },
            Backend::Postgres => {
                let name = format!("hh_e2e_{}", uuid::Uuid::now_v7().simple());
                Self {
                    url: format!("{}/{name}", postgres_server()),
                    postgres_name: Some(name),
                }
            }
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Some(name) = &self.postgres_name else {
            return;
        };
        if std::thread::panicking() {
            eprintln!("PostgreSQL database kept: {}", self.url);
            return;
        }
        let admin = format!("{}/postgres", postgres_server());
        let sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("building a tokio runtime");
        runtime.block_on(async {
            use sqlx::Connection;
            let mut conn = sqlx::PgConnection::connect(&admin)
                .await
                .unwrap_or_else(|e| panic!("connecting to {admin}: {e}"));
            sqlx::query(&sql)
                .execute(&mut conn)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
        });
    }
}

/// A running (or killed) `host run` process on its own directory and database.
pub struct Host {
    /// Shared by hosts started beside this one.
    database: Arc<TestDatabase>,
    /// Shared by hosts started on the same directory with [`Host::start_beside`].
    dir: Arc<tempfile::TempDir>,
    /// This process's log (stderr), appended to across restarts.
    log: PathBuf,
    /// `run` (components only, no builds) or `dev`.
    subcommand: &'static str,
    args: Vec<String>,
    envs: Vec<(String, String)>,
    child: Option<Child>,
    base_url: String,
    http: reqwest::blocking::Client,
}

impl Host {
    /// Starts a host whose plugins folder holds the named fixture components, on a fresh
    /// database, with `extra_args` appended to `host run`.
    pub fn start(plugins: &[&str], extra_args: &[&str]) -> Self {
        Self::start_in(host_dir(plugins), extra_args, &[])
    }

    /// [`Host::start`] with retries 20 to 100 ms apart and a delivery dead after
    /// `max_attempts`: a failing subscriber reaches the dead-letter queue in well under a
    /// second.
    pub fn start_with_fast_retries(plugins: &[&str], max_attempts: u32) -> Self {
        let max_attempts = max_attempts.to_string();
        let retries = [
            "--max-attempts",
            &max_attempts,
            "--retry-initial-ms",
            "20",
            "--retry-max-ms",
            "100",
        ];
        Self::start(plugins, &retries)
    }

    /// Starts a host on `dir`, whose `plugins/` folder the caller has filled, with the
    /// database `dir/host.db` and the environment variables `envs` (e.g. `HOST_LOG`).
    pub fn start_in(dir: tempfile::TempDir, extra_args: &[&str], envs: &[(&str, &str)]) -> Self {
        let log = dir.path().join("host.log");
        let database = Arc::new(TestDatabase::new(dir.path()));
        let mut host = Self::new(Arc::new(dir), database, log, extra_args, envs);
        host.spawn();
        host
    }

    /// Starts a host whose plugins folder holds the named fixture components, on the database
    /// at `url` (which the caller owns and cleans up).
    pub fn start_on_database(plugins: &[&str], url: &str, extra_args: &[&str]) -> Self {
        let dir = host_dir(plugins);
        let log = dir.path().join("host.log");
        let database = Arc::new(TestDatabase {
            url: url.to_owned(),
            postgres_name: None,
        });
        let mut host = Self::new(Arc::new(dir), database, log, extra_args, &[]);
        host.spawn();
        host
    }

    /// Like [`Host::start_in`] with `host dev`: source folders of `plugins/` are built, and
    /// every change to the folder is rebuilt and swapped in.
    pub fn start_dev_in(
        dir: tempfile::TempDir,
        extra_args: &[&str],
        envs: &[(&str, &str)],
    ) -> Self {
        let log = dir.path().join("host.log");
        let database = Arc::new(TestDatabase::new(dir.path()));
        let mut host = Self::new(Arc::new(dir), database, log, extra_args, envs);
        host.subcommand = "dev";
        host.spawn();
        host
    }

    /// Starts a second host process on the same plugins folder and database as `self`,
    /// logging to its own file.
    pub fn start_beside(&self, extra_args: &[&str], envs: &[(&str, &str)]) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(2);
        let log = self
            .dir
            .path()
            .join(format!("host-{}.log", NEXT.fetch_add(1, Ordering::Relaxed)));
        let mut host = Self::new(
            self.dir.clone(),
            self.database.clone(),
            log,
            extra_args,
            envs,
        );
        host.spawn();
        host
    }

    fn new(
        dir: Arc<tempfile::TempDir>,
        database: Arc<TestDatabase>,
        log: PathBuf,
        extra_args: &[&str],
        envs: &[(&str, &str)],
    ) -> Self {
        Self {
            database,
            dir,
            log,
            subcommand: "run",
            args: extra_args.iter().map(|a| a.to_string()).collect(),
            envs: envs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            child: None,
            base_url: String::new(),
            http: reqwest::blocking::Client::builder()
                .timeout(REQUEST_TIMEOUT)
                .build()
                .expect("building the HTTP client"),
        }
    }

    /// The `--plugins` folder of this host.
    pub fn plugins_dir(&self) -> PathBuf {
        self.dir.path().join("plugins")
    }

    /// The `--database-url` of this host.
    pub fn database_url(&self) -> String {
        self.database.url.clone()
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "the host is already running");
        let stderr = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("opening the host log");
        let mut command = Command::new(host_binary());
        command
            .arg(self.subcommand)
            .arg("--plugins")
            .arg(self.plugins_dir())
            .arg("--database-url")
            .arg(self.database_url())
            .args(["--listen", "127.0.0.1:0"])
            .args(&self.args)
            .current_dir(self.dir.path())
            // Plain text logs: tests search them, people read them after a failure.
            .env("NO_COLOR", "1")
            .env("HOST_CACHE_DIR", component_cache())
            // Plugin builds put their output where their `plugin.toml` says.
            .env_remove("CARGO_TARGET_DIR")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr);
        for (name, value) in &self.envs {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("spawning the host");
        let stdout = child.stdout.take().expect("stdout is piped");
        self.child = Some(child);

        // A thread reads stdout for the whole life of the process, so the host never blocks
        // on a full pipe; the first listening line is handed over.
        let (lines, listening) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(url) = line.strip_prefix(LISTENING_PREFIX) {
                    let _ = lines.send(url.trim().to_owned());
                }
            }
        });
        let deadline = if self.subcommand == "dev" {
            DEV_STARTUP_DEADLINE
        } else {
            STARTUP_DEADLINE
        };
        match listening.recv_timeout(deadline) {
            Ok(url) => self.base_url = url,
            Err(error) => {
                let exit = self
                    .child
                    .as_mut()
                    .and_then(|c| c.try_wait().ok().flatten());
                self.stop();
                // Dropping the host during the panic prints its log.
                panic!(
                    "the host did not print `{LISTENING_PREFIX}…`: {}",
                    match (error, exit) {
                        (_, Some(status)) => format!("it exited with {status}"),
                        (mpsc::RecvTimeoutError::Timeout, None) =>
                            format!("still silent after {deadline:?}"),
                        (mpsc::RecvTimeoutError::Disconnected, None) =>
                            "it closed stdout".to_owned(),
                    }
                );
            }
        }
    }

    /// Kills the process with SIGKILL (what `Child::kill` sends on Unix) and reaps it: no
    /// shutdown code runs, as after a crash or `kill -9`.
    pub fn kill9(&mut self) {
        self.stop();
    }

    /// Starts the host again on the same directory, database and arguments, killing it
    /// first if it still runs.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// [`Host::restart`] with the environment variables replaced by `envs` (e.g. to arm or
    /// disarm a `HOST_FAULT` point).
    pub fn restart_with_envs(&mut self, envs: &[(&str, &str)]) {
        self.envs = envs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.restart();
    }

    /// Whether the process has exited by itself (e.g. at a fault point).
    pub fn has_exited(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_some())
    }

    /// Sends SIGTERM and waits for the host to exit on its own; returns its exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("the host is running");
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -TERM {} failed", child.id());
        let started = Instant::now();
        loop {
            if let Some(status) = child.try_wait().expect("waiting for the host") {
                return status;
            }
            if started.elapsed() > EVENTUALLY {
                let _ = child.kill();
                panic!("the host did not exit within {EVENTUALLY:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Everything the host wrote to stderr so far.
    pub fn log_text(&self) -> String {
        let mut text = String::new();
        if let Ok(mut file) = File::open(&self.log) {
            let _ = file.read_to_string(&mut text);
        }
        text
    }

    /// The process id of the running host (for reading its `/proc` entries).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the host is running").id()
    }

    /// The base URL the host serves on, e.g. `http://127.0.0.1:41234`.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// `POST path` with a raw body and extra headers.
    pub fn post(&self, path: &str, body: Vec<u8>, headers: &[(&str, &str)]) -> Answer {
        assert!(self.child.is_some(), "the host is not running");
        let mut request = self
            .http
            .post(format!("{}{path}", self.base_url))
            .header("content-type", "application/json")
            .body(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request
            .send()
            .unwrap_or_else(|e| panic!("POST {path} failed: {e}"));
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.bytes().expect("reading the answer body");
        let body = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!(
                "POST {path} answered {status} with a body that is not JSON ({e}): {}",
                String::from_utf8_lossy(&bytes)
            )
        });
        Answer {
            status,
            body,
            headers,
        }
    }

    /// `POST /commands/{kind}` with `payload` as the body.
    pub fn command(&self, kind: &str, payload: Value) -> Answer {
        self.post(
            &format!("/commands/{kind}"),
            payload.to_string().into(),
            &[],
        )
    }

    /// `POST /commands/{kind}` with an `Idempotency-Key`.
    pub fn command_with_key(&self, kind: &str, payload: Value, key: &str) -> Answer {
        self.post(
            &format!("/commands/{kind}"),
            payload.to_string().into(),
            &[("idempotency-key", key)],
        )
    }

    /// `POST /commands/{kind}` with a raw body, for malformed requests.
    pub fn command_raw(&self, kind: &str, body: &[u8]) -> Answer {
        self.post(&format!("/commands/{kind}"), body.to_vec(), &[])
    }

    /// `POST /queries/{kind}` with `payload` as the body.
    pub fn query(&self, kind: &str, payload: Value) -> Answer {
        self.post(&format!("/queries/{kind}"), payload.to_string().into(), &[])
    }

    /// A command that must succeed; returns its answer body.
    pub fn command_ok(&self, kind: &str, payload: Value) -> Value {
        let answer = self.command(kind, payload.clone());
        assert_eq!(
            answer.status, 200,
            "command {kind} {payload} failed: {answer:?}"
        );
        answer.body
    }

    /// A query that must succeed; returns its answer body.
    pub fn query_ok(&self, kind: &str, payload: Value) -> Value {
        let answer = self.query(kind, payload.clone());
        assert_eq!(
            answer.status, 200,
            "query {kind} {payload} failed: {answer:?}"
        );
        answer.body
    }

    /// `GET /health`.
    /// `GET /ready`: its status code and JSON body.
    pub fn ready(&self) -> (u16, Value) {
        let response = self
            .http
            .get(format!("{}/ready", self.base_url))
            .send()
            .expect("GET /ready");
        let status = response.status().as_u16();
        (status, response.json().expect("GET /ready answers JSON"))
    }

    pub fn health(&self) -> Value {
        self.http
            .get(format!("{}/health", self.base_url))
            .send()
            .and_then(|r| r.error_for_status())
            .and_then(|r| r.json())
            .expect("GET /health")
    }

    /// Runs `host ARGS --database-url <this host's database>` and returns its output,
    /// whether it succeeded or not.
    pub fn cli_output(&self, args: &[&str]) -> std::process::Output {
        self.cli_output_with(args, &[])
    }

    /// [`Host::cli_output`] with the environment variables `envs` set.
    pub fn cli_output_with(&self, args: &[&str], envs: &[(&str, &str)]) -> std::process::Output {
        Command::new(host_binary())
            .args(args)
            .arg("--database-url")
            .arg(self.database_url())
            .current_dir(self.dir.path())
            .env("HOST_LOG", "warn")
            .envs(envs.iter().copied())
            .output()
            .expect("running the host CLI")
    }

    /// Runs `host ARGS --database-url <this host's database>` and returns its stdout; panics
    /// with its output when it fails.
    pub fn cli(&self, args: &[&str]) -> String {
        let output = self.cli_output(args);
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "`host {}` failed ({}):\n{stdout}{}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
    }

    /// `host bus list --type KIND --format json`: the deliveries as JSON objects.
    pub fn bus_list(&self, kind: &str) -> Vec<Value> {
        let stdout = self.cli(&["bus", "list", "--type", kind, "--format", "json"]);
        serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("`host bus list` printed no JSON array ({e}):\n{stdout}"))
    }

    /// `host bus replay ID`.
    pub fn bus_replay(&self, id: i64) {
        self.cli(&["bus", "replay", &id.to_string()]);
    }

    /// Waits until the `order-summary` projection shows `order_id` at `status` ("placed",
    /// "reserved" or "rejected") and returns the summary.
    pub fn summary_when(&self, order_id: &str, status: &str, deadline: Duration) -> Value {
        wait_for(
            deadline,
            &format!("order {order_id} to be {status} in order.summary"),
            || {
                let answer =
                    self.query("order.summary", serde_json::json!({ "order_id": order_id }));
                (answer.status == 200 && answer.body["status"] == status).then_some(answer.body)
            },
        )
    }

    /// A connection to this host's database, for checking what was committed.
    pub fn db(&self) -> Db {
        Db::open(&self.database_url())
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            // Keep the database and logs of a failed test for a post-mortem.
            let kept = self.dir.path().to_owned();
            if let Some(dir) = Arc::get_mut(&mut self.dir) {
                dir.disable_cleanup(true);
            }
            eprintln!(
                "host directory kept at {}; log {}:\n{}",
                kept.display(),
                self.log.display(),
                self.log_text()
            );
        }
    }
}

/// Read-only access to a host's database, for checking what was committed. The host may be
/// running: SQLite's WAL lets readers work beside its writer. Queries are written with `?`
/// placeholders, numbered for PostgreSQL.
pub struct Db {
    runtime: tokio::runtime::Runtime,
    pool: DbPool,
}

enum DbPool {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

impl Db {
    fn open(url: &str) -> Self {
        use std::str::FromStr;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("building a tokio runtime");
        let pool = if url.starts_with("postgres") {
            let pool = runtime
                .block_on(
                    sqlx::postgres::PgPoolOptions::new()
                        .max_connections(1)
                        .connect(url),
                )
                .unwrap_or_else(|e| panic!("opening {url}: {e}"));
            DbPool::Postgres(pool)
        } else {
            let options = sqlx::sqlite::SqliteConnectOptions::from_str(url)
                .expect("a SQLite URL")
                .read_only(true)
                .busy_timeout(Duration::from_secs(10));
            let pool = runtime
                .block_on(
                    sqlx::sqlite::SqlitePoolOptions::new()
                        .max_connections(1)
                        .connect_with(options),
                )
                .unwrap_or_else(|e| panic!("opening {url}: {e}"));
            DbPool::Sqlite(pool)
        };
        Self { runtime, pool }
    }

    /// Waits until every delivery is done (none pending or dead); panics after `deadline`.
    pub fn wait_all_done(&self, deadline: Duration) {
        wait_until(deadline, "every delivery to be done", || {
            self.scalar(
                "SELECT COUNT(*) FROM deliveries WHERE status <> 'done'",
                &[],
            ) == 0
        });
    }

    /// The single integer `sql` selects, with `binds` bound in order, as text (compare them
    /// with an integer column through `CAST(? AS BIGINT)`, which both databases read).
    pub fn scalar(&self, sql: &str, binds: &[&str]) -> i64 {
        self.runtime
            .block_on(async {
                match &self.pool {
                    DbPool::Sqlite(pool) => {
                        bind_all(sqlx::query_scalar(sql), binds)
                            .fetch_one(pool)
                            .await
                    }
                    DbPool::Postgres(pool) => {
                        bind_all(sqlx::query_scalar(&numbered(sql)), binds)
                            .fetch_one(pool)
                            .await
                    }
                }
            })
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// The text column every row of `sql` selects, with `binds` bound in order.
    pub fn strings(&self, sql: &str, binds: &[&str]) -> Vec<String> {
        self.runtime
            .block_on(async {
                match &self.pool {
                    DbPool::Sqlite(pool) => {
                        bind_all(sqlx::query_scalar(sql), binds)
                            .fetch_all(pool)
                            .await
                    }
                    DbPool::Postgres(pool) => {
                        bind_all(sqlx::query_scalar(&numbered(sql)), binds)
                            .fetch_all(pool)
                            .await
                    }
                }
            })
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }
}

fn bind_all<'q, DB: sqlx::Database, O>(
    mut query: sqlx::query::QueryScalar<'q, DB, O, <DB as sqlx::Database>::Arguments<'q>>,
    binds: &[&'q str],
) -> sqlx::query::QueryScalar<'q, DB, O, <DB as sqlx::Database>::Arguments<'q>>
where
    &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    for bind in binds {
        query = query.bind(*bind);
    }
    query
}

/// `sql` with its `?` placeholders numbered `$1`, `$2`, … (none of the checks quote a `?`).
fn numbered(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut n = 0;
    for c in sql.chars() {
        if c == '?' {
            n += 1;
            out.push_str(&format!("${n}"));
        } else {
            out.push(c);
        }
    }
    out
}

impl Drop for Db {
    fn drop(&mut self) {
        self.runtime.block_on(async {
            match &self.pool {
                DbPool::Sqlite(pool) => pool.close().await,
                DbPool::Postgres(pool) => pool.close().await,
            }
        });
    }
}
