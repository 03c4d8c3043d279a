//! Hostile plugins and hostile requests: every misbehaviour is stopped and classified with a
//! message naming the plugin and the limit, while a well-behaved plugin keeps serving, no
//! message of it is lost, and the host's memory stays bounded. Also: state isolation by
//! tricky keys, the ingress error answers, a bounded-time fuzz of the ingress, and the admin
//! token rule for non-loopback addresses.

use crate::harness::{Answer, FLAKY, HOSTILE, Host, INVENTORY, host_dir};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The host defaults the hostile suite checks against (`Limits::DEFAULT`).
const MEMORY_CAP: u64 = 64 << 20;
const PAYLOAD_LIMIT: usize = 1 << 20;
const EVENTS_PER_CALL: usize = 1_000;
const KEYS_WRITTEN_PER_CALL: usize = 1_000;
const STATE_VALUE_BYTES: usize = 1 << 20;
/// RSS the host may gain over its memory cap while a memory bomb runs: code, buffers, noise.
const RSS_MARGIN: u64 = 64 << 20;

/// One row of the printed table.
struct Row {
    behaviour: &'static str,
    class: String,
    serving: bool,
    lost: usize,
}

/// A resident-set figure of the host, in bytes, from `/proc/PID/status` (`VmRSS`, `VmHWM`).
fn proc_status_bytes(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/PID/status");
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("a number of kB");
    kib << 10
}

/// Asserts a trapped command: 500, the class, the plugin, and `needle` in the message.
fn assert_trap(answer: &Answer, class: &str, needle: &str) {
    assert_eq!(answer.status, 500, "{answer:?}");
    assert_eq!(answer.error_class(), class, "{answer:?}");
    assert_eq!(answer.error_plugin(), HOSTILE, "{answer:?}");
    assert!(
        answer.error_message().contains(needle),
        "`{needle}` missing: {answer:?}"
    );
}

/// Sets the flag to false when dropped, on success or during a panic's unwinding.
struct StoreOnDrop<'a>(&'a AtomicBool);

impl Drop for StoreOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Relaxed);
    }
}

#[test]
fn hostile_behaviours_are_stopped_and_classified_while_others_keep_serving() {
    let host = Host::start(&[HOSTILE, INVENTORY], &["--call-deadline-ms", "1000"]);
    let db = host.db();
    let attacking = AtomicBool::new(true);
    let answered = AtomicUsize::new(0);
    let failed = AtomicUsize::new(0);
    let mut rows = Vec::new();
    let mut rss = String::new();

    std::thread::scope(|scope| {
        // The well-behaved plugin, fed throughout the attack.
        scope.spawn(|| {
            while attacking.load(Ordering::Relaxed) || answered.load(Ordering::Relaxed) < 20 {
                let answer = host.command("stock.add", json!({ "sku": "steady", "qty": 1 }));
                if answer.status == 200 {
                    answered.fetch_add(1, Ordering::Relaxed);
                } else {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        // Ends the attack when this side finishes, or fails: a panic here would otherwise
        // leave the steady loop running and the scope waiting for it forever.
        let _attack_over = StoreOnDrop(&attacking);
        let mut row = |behaviour: &'static str, class: &str| {
            let before = answered.load(Ordering::Relaxed);
            // Serving means the steady plugin answers again after this behaviour.
            crate::harness::wait_until(
                Duration::from_secs(20),
                "the steady plugin to answer",
                || answered.load(Ordering::Relaxed) > before,
            );
            rows.push(Row {
                behaviour,
                class: class.to_owned(),
                serving: true,
                lost: 0,
            });
        };

        // Memory bomb first, with the peak RSS reset, so the peak measures the bomb alone.
        let pid = host.pid();
        let rss_before = proc_status_bytes(pid, "VmRSS");
        let reset = std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok();
        for _ in 0..3 {
            let answer = host.command("hostile.oom", json!({}));
            assert_trap(&answer, "memory_limit", "memory_bytes");
        }
        if reset {
            let peak = proc_status_bytes(pid, "VmHWM");
            rss = format!(
                "; host RSS {} MiB before the memory bomb, peak {} MiB during it (cap {} MiB)",
                rss_before >> 20,
                peak >> 20,
                MEMORY_CAP >> 20
            );
            assert!(
                peak <= rss_before + MEMORY_CAP + RSS_MARGIN,
                "host RSS peaked at {} MiB, from {} MiB before the memory bomb",
                peak >> 20,
                rss_before >> 20
            );
        }
        let rss_after = proc_status_bytes(pid, "VmRSS");
        assert!(
            rss_after <= rss_before + RSS_MARGIN,
            "host RSS stayed at {} MiB after the memory bomb, from {} MiB",
            rss_after >> 20,
            rss_before >> 20
        );
        row("allocate until out of memory", "memory_limit");

        assert_trap(
            &host.command("hostile.loop", json!({})),
            "deadline",
            "call_deadline",
        );
        row("infinite loop", "deadline");
        let answer = host.command("hostile.recurse", json!({}));
        assert_eq!(answer.error_class(), "stack_overflow", "{answer:?}");
        row("unbounded recursion", "stack_overflow");
        assert_trap(
            &host.command("hostile.panic", json!({})),
            "panic",
            "hostile panicked on purpose",
        );
        row("panic", "panic");

        // Payload out: a JSON string of n bytes is n + 2 bytes of reply.
        let at = host.command("hostile.reply", json!({ "n": PAYLOAD_LIMIT - 2 }));
        assert_eq!(at.status, 200, "a reply of exactly the limit passes");
        let past = host.command("hostile.reply", json!({ "n": PAYLOAD_LIMIT - 1 }));
        assert_trap(&past, "trap", "payload_out_bytes");
        assert_trap(
            &host.command("hostile.reply", json!({ "n": 8 << 20 })),
            "trap",
            "payload_out_bytes",
        );
        row("gigantic reply", "trap (payload_out_bytes)");

        let at = host.command("hostile.emit", json!({ "n": EVENTS_PER_CALL }));
        assert_eq!(at.status, 200, "{at:?}");
        assert_trap(
            &host.command("hostile.emit", json!({ "n": EVENTS_PER_CALL + 1 })),
            "trap",
            "events_per_call",
        );
        assert_trap(
            &host.command("hostile.emit", json!({})),
            "trap",
            "limit `events_per_call` of 1000",
        );
        row("emit 100k events", "trap (events_per_call)");

        assert_eq!(
            host.command("hostile.put", json!({ "n": STATE_VALUE_BYTES }))
                .status,
            200
        );
        assert_trap(
            &host.command("hostile.put", json!({ "n": STATE_VALUE_BYTES + 1 })),
            "trap",
            "state_value_bytes",
        );
        assert_trap(
            &host.command("hostile.put", json!({})),
            "trap",
            "state_value_bytes",
        );
        row("huge state value", "trap (state_value_bytes)");

        assert_eq!(
            host.command("hostile.keys", json!({ "n": KEYS_WRITTEN_PER_CALL }))
                .status,
            200
        );
        assert_trap(
            &host.command("hostile.keys", json!({ "n": KEYS_WRITTEN_PER_CALL + 1 })),
            "trap",
            "keys_written_per_call",
        );
        assert_trap(
            &host.command("hostile.keys", json!({})),
            "trap",
            "keys_written_per_call",
        );
        row("write 100k keys", "trap (keys_written_per_call)");

        // Payload in: exactly the limit reaches the plugin, one byte more is a 413.
        let pad = |total: usize| format!("{{\"n\":\"{}\"}}", "x".repeat(total - 8)).into_bytes();
        assert_eq!(pad(PAYLOAD_LIMIT).len(), PAYLOAD_LIMIT);
        let at = host.post("/queries/hostile.ok", pad(PAYLOAD_LIMIT), &[]);
        assert_eq!(at.status, 200, "{at:?}");
        let past = host.post("/queries/hostile.ok", pad(PAYLOAD_LIMIT + 1), &[]);
        assert_eq!(past.status, 413, "{past:?}");
        assert_eq!(past.error_class(), "payload_too_large", "{past:?}");
        assert!(
            past.error_message().contains("payload_in_bytes"),
            "{past:?}"
        );
        row("request body over the limit", "413 payload_too_large");

        // Files, environment and sockets: the guest sees each attempt fail.
        let fs = host.command_ok("hostile.fs", json!({}));
        for attempt in ["read", "create", "list"] {
            let seen = fs[attempt].as_str().unwrap_or_default();
            assert!(seen.starts_with("error: "), "fs {attempt}: {fs}");
        }
        row("open, create, list files", "refused in the guest");
        let env = host.command_ok("hostile.env", json!({}));
        assert_eq!(env["vars"], json!([]), "{env}");
        assert!(
            env["args"].as_array().is_some_and(|a| a.is_empty()),
            "{env}"
        );
        row("read environment and args", "empty in the guest");
        let net = host.command_ok("hostile.net", json!({}));
        for attempt in ["connect", "bind", "udp"] {
            let seen = net[attempt].as_str().unwrap_or_default();
            assert!(seen.starts_with("error: "), "net {attempt}: {net}");
        }
        row("open sockets", "refused in the guest");
    });

    // Nothing the steady plugin answered is lost, and none of its commands failed.
    let answered = answered.load(Ordering::Relaxed);
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "steady commands failed during the attack"
    );
    let stock = host.query_ok("stock.get", json!({ "sku": "steady" }));
    let lost = answered as i64 - stock["available"].as_i64().unwrap_or_default();
    assert_eq!(lost, 0, "stock.add answered {answered} times: {stock}");
    for row in &mut rows {
        row.lost = lost as usize;
    }
    // Trapped units of work left nothing: only the two at-the-limit commands wrote.
    assert_eq!(
        db.scalar(
            "SELECT COUNT(*) FROM messages WHERE kind = 'hostile.flood'",
            &[]
        ),
        EVENTS_PER_CALL as i64
    );
    assert_eq!(
        db.scalar(
            "SELECT COUNT(*) FROM state WHERE plugin = 'hostile' AND key LIKE 'key/%'",
            &[]
        ),
        KEYS_WRITTEN_PER_CALL as i64
    );
    assert_eq!(
        db.scalar(
            "SELECT LENGTH(value) FROM state WHERE plugin = 'hostile' AND key = 'big'",
            &[]
        ),
        STATE_VALUE_BYTES as i64
    );

    let mut table = format!(
        "\nhostile suite ({answered} steady commands answered during the attack{rss})\n{:<32} {:<30} {:<15} {}\n",
        "behaviour", "outcome class", "still serving", "messages lost"
    );
    for row in &rows {
        table.push_str(&format!(
            "{:<32} {:<30} {:<15} {}\n",
            row.behaviour,
            row.class,
            if row.serving { "yes" } else { "no" },
            row.lost
        ));
    }
    // Written past the test harness's capture, so CI logs show it.
    let _ = std::io::stdout().lock().write_all(table.as_bytes());
}

#[test]
fn a_plugin_cannot_reach_another_plugins_state_by_any_key() {
    let host = Host::start(&[HOSTILE, FLAKY], &[]);
    let db = host.db();
    host.command_ok("flaky.set", json!({ "failing": false }));
    let long = "k".repeat(1024);
    let tricky = [
        "",
        "switch",
        "flaky/switch",
        "flaky:switch",
        "flaky\u{0}switch",
        "../flaky/switch",
        "/switch",
        "switch\u{0}",
        "%73witch",
        "seen/o-1",
        "ключ/💥",
        "\u{202e}hctiws",
        &long,
    ];
    for key in tricky {
        // Nothing of flaky's is visible to hostile under any spelling.
        let read = host.query_ok("hostile.read", json!({ "key": key }));
        assert_eq!(read["value"], Value::Null, "hostile read {key:?}: {read}");
        host.command_ok(
            "hostile.write",
            json!({ "key": key, "value": "{\"failing\": true}" }),
        );
        let read = host.query_ok("hostile.read", json!({ "key": key }));
        assert_eq!(read["value"], "{\"failing\": true}", "{key:?}");
    }
    // Flaky's own state is untouched: its switch is still off and `seen/o-1` still unseen.
    assert_eq!(
        host.query_ok("flaky.seen", json!({ "order_id": "o-1" })),
        json!({ "order_id": "o-1", "count": 0 })
    );
    assert_eq!(
        db.strings("SELECT key FROM state WHERE plugin = 'flaky'", &[]),
        ["switch"]
    );
    assert_eq!(
        db.scalar("SELECT COUNT(*) FROM state WHERE plugin = 'hostile'", &[]),
        tricky.len() as i64
    );
    // One byte past the key limit traps, naming it.
    let answer = host.command(
        "hostile.write",
        json!({ "key": "k".repeat(1025), "value": "" }),
    );
    assert_eq!(answer.error_class(), "trap", "{answer:?}");
    assert!(
        answer.error_message().contains("MAX_KEY_BYTES"),
        "{answer:?}"
    );
}

#[test]
fn ingress_errors_are_json_and_tell_nothing_secret() {
    let host = Host::start(&[HOSTILE, INVENTORY], &["--body-read-timeout-ms", "300"]);

    let unknown = host.command("nope.nothing", json!({}));
    assert_eq!(unknown.status, 404, "{unknown:?}");
    assert_eq!(unknown.error_class(), "unknown_kind");
    let text = unknown.body.to_string();
    for secret in ["hostile", "inventory", "stock.add", ".wasm", "/tmp"] {
        assert!(!text.contains(secret), "the 404 names `{secret}`: {text}");
    }
    let route = host.post("/admin/anything", b"{}".to_vec(), &[]);
    assert_eq!(
        (route.status, route.error_class()),
        (404, "not_found"),
        "{route:?}"
    );

    let not_json = host.command_raw("stock.add", b"{not json");
    assert_eq!(
        (not_json.status, not_json.error_class()),
        (400, "bad_request")
    );
    for key in [
        "k".repeat(256),
        "tab\there".to_owned(),
        "caf\u{e9}".to_owned(),
    ] {
        let answer = host.post(
            "/commands/stock.add",
            br#"{"sku":"a","qty":1}"#.to_vec(),
            &[("idempotency-key", key.as_str())],
        );
        assert_eq!(answer.status, 400, "key {key:?}: {answer:?}");
        assert!(
            answer.error_message().contains("idempotency-key"),
            "{answer:?}"
        );
    }
    let at_limit = host.command_with_key(
        "stock.add",
        json!({ "sku": "a", "qty": 1 }),
        &"k".repeat(255),
    );
    assert_eq!(at_limit.status, 200, "{at_limit:?}");

    // A client that sends half its body and stalls gets a 408, and holds no handler meanwhile.
    let address = host.base_url().trim_start_matches("http://").to_owned();
    let mut slow = TcpStream::connect(&address).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    write!(
        slow,
        "POST /commands/stock.add HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{{\"sku\""
    )
    .unwrap();
    let started = Instant::now();
    host.command_ok("stock.add", json!({ "sku": "b", "qty": 1 }));
    let mut answer = String::new();
    let _ = slow.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request_timeout"), "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
}

/// Sends raw bytes as one HTTP/1.1 request and returns the status and body.
fn raw_request(address: &str, request: &[u8]) -> Option<(u16, Vec<u8>)> {
    let mut stream = TcpStream::connect(address).expect("connecting to the host");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream.write_all(request).ok()?;
    let mut reader = BufReader::new(stream);
    let mut status_line = String::new();
    reader.read_line(&mut status_line).ok()?;
    let status = status_line.split_whitespace().nth(1)?.parse().ok()?;
    let mut length = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        if line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().ok()?;
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some((status, body))
}

#[test]
fn ingress_fuzz_for_a_bounded_time_gets_only_json_answers_and_no_crash() {
    let host = Host::start(&[HOSTILE, INVENTORY], &[]);
    let address = host.base_url().trim_start_matches("http://").to_owned();
    let seed: u64 = std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed);
    let mut rng = StdRng::seed_from_u64(seed);
    let kinds = [
        "stock.add",
        "stock.get",
        "hostile.ok",
        "hostile.read",
        "nope",
        "",
        "%FF%FE",
        "..%2F..%2Fetc",
        "a%00b",
        "%E2%98%83",
        "x".repeat(300).leak(),
    ];
    let bodies: [&[u8]; 8] = [
        b"{}",
        b"",
        b"{",
        b"null",
        b"[1,2,3]",
        b"{\"sku\":\"a\",\"qty\":1}",
        b"\xff\xfe\x00",
        b"{\"key\":\"\\u0000\"}",
    ];
    let budget = Duration::from_secs(4);
    let started = Instant::now();
    let mut sent = 0;
    while started.elapsed() < budget && sent < 2_000 {
        let method = ["POST", "POST", "POST", "GET", "PUT", "DELETE"][rng.random_range(0..6)];
        let prefix =
            ["/commands/", "/queries/", "/", "/health/", "/commands//"][rng.random_range(0..5)];
        let kind = kinds[rng.random_range(0..kinds.len())];
        let mut body = bodies[rng.random_range(0..bodies.len())].to_vec();
        if rng.random_bool(0.2) {
            body = (0..rng.random_range(0..512))
                .map(|_| rng.random())
                .collect();
        }
        let mut headers = String::new();
        for name in [
            "idempotency-key",
            "partition-key",
            "correlation-id",
            "tenant-id",
            "actor",
        ] {
            if rng.random_bool(0.3) {
                let len = rng.random_range(0..300);
                // Printable ASCII, tabs and obs-text: everything a valid HTTP header value may hold.
                let value: String = (0..len)
                    .map(|_| match rng.random_range(0..10) {
                        0 => '\t',
                        1 => char::from(rng.random_range(0x80u8..=0xff)),
                        _ => char::from(rng.random_range(0x21u8..0x7f)),
                    })
                    .collect();
                headers.push_str(&format!("{name}: {value}\r\n"));
            }
        }
        let mut request = format!(
            "{method} {prefix}{kind} HTTP/1.1\r\nhost: fuzz\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{headers}\r\n",
            body.len()
        )
        .into_bytes();
        // The latin-1 chars above were written as UTF-8; send their raw byte instead.
        request = String::from_utf8(request)
            .unwrap()
            .chars()
            .map(|c| u32::from(c) as u8)
            .collect();
        request.extend_from_slice(&body);
        let Some((status, answer)) = raw_request(&address, &request) else {
            panic!(
                "seed {seed}: no answer to {:?}",
                String::from_utf8_lossy(&request)
            );
        };
        sent += 1;
        let json: Value = serde_json::from_slice(&answer).unwrap_or_else(|e| {
            panic!(
                "seed {seed}: {status} with a body that is not JSON ({e}): {:?} for {:?}",
                String::from_utf8_lossy(&answer),
                String::from_utf8_lossy(&request)
            )
        });
        if status >= 400 {
            assert!(
                json["error"]["class"].is_string() && json["error"]["message"].is_string(),
                "seed {seed}: {status} {json}"
            );
        }
        assert!(
            status < 500 || json["error"]["class"] != "host",
            "seed {seed}: {status} {json}"
        );
    }
    assert!(sent > 50, "only {sent} fuzz requests in {budget:?}");
    assert_eq!(host.health()["status"], "ok");
    assert!(
        !host.log_text().contains("panicked"),
        "the host panicked:\n{}",
        host.log_text()
    );
}

#[test]
fn a_non_loopback_listener_needs_an_admin_token() {
    let dir = host_dir(&[]);
    let run = |extra: &[&str]| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_host"))
            .args(["run", "--listen", "0.0.0.0:0", "--plugins"])
            .arg(dir.path().join("plugins"))
            .arg("--database-url")
            .arg(format!("sqlite://{}", dir.path().join("host.db").display()))
            .args(extra)
            .env_remove("HOST_ADMIN_TOKEN")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning the host");
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        let _ = child.kill();
        let output = child.wait_with_output().unwrap();
        (
            first,
            output.status,
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let (first, status, stderr) = run(&[]);
    assert!(first.is_empty(), "the host served without a token: {first}");
    assert!(!status.success());
    assert!(stderr.contains("admin token"), "{stderr}");
    let (first, _, stderr) = run(&["--admin-token", "s3cret"]);
    assert!(first.starts_with("host listening on "), "{first}{stderr}");
}
