//! The host config file: an invalid file stops `host run` with an error naming the key, and
//! `--print-config` shows the effective policy of each configured plugin, with command-line
//! flags applied to `[defaults]` under the plugin sections, and the compiler each command uses.

use crate::harness::{EVENTUALLY, host_binary, host_dir};
use serde_json::Value;
use std::process::{Command, Output, Stdio};
use std::time::Instant;

/// Runs `host run` with `config` as its config file and returns what it printed once it
/// exits. A host that is still running after [`EVENTUALLY`] took the config: it is stopped,
/// and the test fails saying so.
fn run_with_config(config: &str, extra: &[&str]) -> Output {
    let dir = host_dir(&[]);
    std::fs::write(dir.path().join("host.toml"), config).expect("writing host.toml");
    let mut child = Command::new(host_binary())
        .args(["run", "--plugins", "plugins", "--config", "host.toml"])
        .args([
            "--database-url",
            "sqlite://host.db",
            "--listen",
            "127.0.0.1:0",
        ])
        .args(extra)
        .current_dir(dir.path())
        .env("HOST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running host");
    let deadline = Instant::now() + EVENTUALLY;
    while child.try_wait().expect("waiting for the host").is_none() {
        if Instant::now() > deadline {
            child.kill().expect("stopping the host");
            let output = child.wait_with_output().expect("reading the host's output");
            panic!(
                "`host run` with {config:?} was still running after {EVENTUALLY:?}: it took the config\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().expect("reading the host's output")
}

#[test]
fn invalid_config_is_a_startup_error_naming_the_key() {
    for (config, key) in [
        (
            "[plugins.flaky]\nordering = \"random\"",
            "plugins.flaky.ordering",
        ),
        ("[plugins.flaky]\nretries = 3", "retries"),
        (
            "[defaults]\nretry = { initial_delay = \"soon\" }",
            "defaults.retry.initial_delay",
        ),
        (
            "[plugins.flaky]\ndead_letter_at_once = [\"fatal\"]",
            "plugins.flaky.dead_letter_at_once",
        ),
        (
            "[retention]\ndelivered = \"7 fortnights\"",
            "retention.delivered",
        ),
    ] {
        let output = run_with_config(config, &[]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{config:?} was accepted");
        assert!(
            stderr.contains(key) && stderr.contains("host.toml"),
            "{config:?}: the error must name {key} and the file:\n{stderr}"
        );
        assert!(
            !String::from_utf8_lossy(&output.stdout).contains("host listening"),
            "{config:?}: the host must not start"
        );
    }
}

#[test]
fn print_config_shows_the_effective_policy_per_plugin() {
    let config = r#"
        [defaults]
        call_deadline = "2s"
        [plugins.flaky]
        ordering = "skip"
        memory_mib = 16
        retry = { max_attempts = 3 }
        [idempotency]
        ttl_by_kind = { "flaky.bump" = "1h" }
        [retention]
        delivered = "1d"
    "#;
    let output = run_with_config(config, &["--print-config", "--max-attempts", "9"]);
    assert!(output.status.success(), "{output:?}");
    let printed: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    let flaky = &printed["plugins"]["flaky"];
    assert_eq!(flaky["ordering"], "skip", "{printed:#}");
    assert_eq!(flaky["memory_mib"], 16, "{printed:#}");
    assert_eq!(flaky["retry"]["max_attempts"], 3, "{printed:#}");
    assert_eq!(
        flaky["call_deadline"], "2s",
        "inherited from [defaults]: {printed:#}"
    );
    assert_eq!(printed["defaults"]["ordering"], "strict", "{printed:#}");
    assert_eq!(
        printed["defaults"]["retry"]["max_attempts"], 9,
        "the flag: {printed:#}"
    );
    assert_eq!(
        printed["defaults"]["dead_letter_at_once"],
        serde_json::json!(["rejected", "permanent", "deadline", "memory_limit", "loop"]),
        "{printed:#}"
    );
    assert_eq!(printed["idempotency"]["ttl"], "1day", "{printed:#}");
    assert_eq!(
        printed["idempotency"]["ttl_by_kind"]["flaky.bump"], "1h",
        "{printed:#}"
    );
    assert_eq!(printed["retention"]["delivered"], "1day", "{printed:#}");
}

#[test]
fn dev_compiles_with_winch_and_run_with_cranelift_unless_told() {
    let dir = host_dir(&[]);
    for (args, compiler) in [
        (&["run"][..], "cranelift"),
        (&["dev"][..], "winch"),
        (&["dev", "--compiler", "cranelift"][..], "cranelift"),
        (&["run", "--compiler", "winch"][..], "winch"),
    ] {
        let output = Command::new(host_binary())
            .args(args)
            .args(["--plugins", "plugins", "--print-config"])
            .current_dir(dir.path())
            .output()
            .expect("running host");
        assert!(output.status.success(), "{args:?}: {output:?}");
        let printed: Value = serde_json::from_slice(&output.stdout).expect("JSON");
        assert_eq!(printed["compiler"], compiler, "{args:?}: {printed:#}");
    }
}
