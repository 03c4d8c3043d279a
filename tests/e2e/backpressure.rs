//! Back-pressure: with nothing delivered in the background (`--no-dispatch`), any load is
//! over-rate. Past `--max-due` due deliveries, commands answer 503 `overloaded` with
//! `Retry-After`, `/ready` and `/metrics` say so and `host send` refuses too, while queries go
//! on; the backlog levels off at the bound plus what was in flight instead of growing. Drained
//! by hand, commands stay refused until the backlog falls to the resume mark, then are
//! accepted again; every command that was accepted has its events delivered.

use crate::admin_api::admin;
use crate::harness::{Answer, DEMO, EVENTUALLY, Host, host_binary, host_dir, wait_until};
use crate::metrics::Metrics;
use serde_json::{Value, json};
use std::process::Command;
use std::time::Instant;

const MAX_DUE: i64 = 20;
/// The default resume mark of a bound of 20: a fifth below it.
const RESUME_AT: i64 = 16;
/// Callers sending orders at once, each as fast as it is answered.
const CALLERS: usize = 4;
/// Refusals each caller takes before it stops.
const REFUSALS_EACH: usize = 5;
/// Due deliveries one order adds: `order.placed` to inventory and to order-summary.
const PER_ORDER: i64 = 2;

on_every_backend! {
    fn an_over_rate_load_levels_off_at_the_bound_and_nothing_accepted_is_lost() {
        let host = Host::start(DEMO, &["--no-dispatch", "--max-due", "20"]);
        host.command_ok("stock.add", json!({ "sku": "widget", "qty": 1000 }));
        let db = host.db();
        let due = || db.scalar("SELECT COUNT(*) FROM deliveries WHERE status = 'pending'", &[]);
        let placed = || db.scalar("SELECT COUNT(*) FROM messages WHERE kind = 'order.placed'", &[]);
        assert_eq!(due(), 0);
        let (status, ready) = host.ready();
        assert_eq!(status, 200, "{ready:#}");
        assert_eq!(
            ready["backpressure"],
            json!({ "due": 0, "max_due": 20, "resume_at": RESUME_AT, "refusing": false })
        );

        // The load: every caller places orders until it has been refused a few times.
        let (accepted, refused) = load(&host);
        let level = due();
        assert!(!accepted.is_empty());
        assert_eq!(
            placed(),
            accepted.len() as i64,
            "each accepted order wrote its event, no refused one did"
        );
        assert_eq!(level, PER_ORDER * accepted.len() as i64);
        assert!(
            (MAX_DUE..MAX_DUE + 2 * PER_ORDER * CALLERS as i64).contains(&level),
            "the backlog levels off at the bound ({MAX_DUE}) plus what was in flight, not {level}"
        );
        for answer in &refused {
            assert_overloaded(answer);
        }

        // Once a count has confirmed it (a count stops past the bound), the host says so, and
        // the backlog no longer grows.
        let counted = level.min(MAX_DUE + 1);
        let ready = wait_for_ready(&host, "the backlog to be counted and refused", |status, ready| {
            status == 503 && ready["backpressure"]["due"] == counted
        });
        assert_eq!(ready["backpressure"]["refusing"], true, "{ready:#}");
        let reason = ready["status"].as_str().unwrap();
        assert!(reason.contains("commands are refused") && reason.contains("`max_due` of 20"), "{reason}");
        for i in 0..20 {
            let answer = host.command("order.place", order(&format!("late-{i}")));
            assert_overloaded(&answer);
        }
        assert_eq!((due(), placed()), (level, accepted.len() as i64), "refused commands write nothing");
        let metrics = Metrics::scrape(&host);
        assert_eq!(metrics.value("handler_host_due_deliveries", &[]), Some(counted as f64), "{}", metrics.text);
        assert_eq!(metrics.value("handler_host_backpressure_max_due", &[]), Some(20.0));
        assert_eq!(metrics.value("handler_host_backpressure_refusing", &[]), Some(1.0));
        assert_eq!(
            metrics.value(
                "handler_host_commands_total",
                &[("plugin", "orders"), ("kind", "order.place"), ("outcome", "overloaded")]
            ),
            Some((refused.len() + 20) as f64),
            "{}",
            metrics.text
        );
        // Queries go on.
        assert_eq!(host.query_ok("order.get", json!({ "order_id": accepted[0] }))["order_id"], accepted[0]);
        // `host send` counts the backlog once and refuses the same way.
        let plugins = host.plugins_dir();
        let sent = host.cli_output(&[
            "send", "order.place", "--payload", &order("by-cli").to_string(),
            "--plugins", plugins.to_str().expect("a UTF-8 temporary path"), "--max-due", "20",
        ]);
        let said = String::from_utf8_lossy(&sent.stderr);
        assert!(!sent.status.success() && said.contains("`max_due` of 20"), "{said}");
        assert_eq!(placed(), accepted.len() as i64);

        // Drained one delivery at a time: refused while the backlog is above the resume mark.
        let mut flushed = 0;
        while due() > RESUME_AT {
            assert_overloaded(&host.command("order.place", order(&format!("draining-{flushed}"))));
            let (status, ran) = admin(&host, "POST", "/admin/flush?limit=1", None);
            assert_eq!((status, ran.as_array().map(Vec::len)), (200, Some(1)), "{ran:#}");
            flushed += 1;
            assert!(flushed < 10 * level, "the flush does not drain: {} due", due());
        }
        wait_for_ready(&host, "commands to be accepted again", |status, ready| {
            status == 200 && ready["backpressure"]["refusing"] == false
        });
        let again = host.command_ok("order.place", order("after"));
        assert_eq!(again["status"], "placed");
        let metrics = Metrics::scrape(&host);
        assert_eq!(metrics.value("handler_host_backpressure_refusing", &[]), Some(0.0));

        // Nothing accepted is lost: every accepted order reaches its subscribers.
        let (status, ran) = admin(&host, "POST", "/admin/flush", None);
        assert_eq!(status, 200, "{ran:#}");
        db.wait_all_done(EVENTUALLY);
        for order_id in accepted.iter().map(String::as_str).chain(["after"]) {
            let summary = host.query_ok("order.summary", json!({ "order_id": order_id }));
            assert_eq!(summary["status"], "reserved", "{order_id}: {summary:#}");
        }
        assert_eq!(placed(), accepted.len() as i64 + 1);
        println!(
            "back-pressure: {} orders accepted, {} refused; the backlog levelled off at {level} (bound {MAX_DUE}), drained by {flushed} deliveries to resume",
            accepted.len(),
            refused.len() + 20
        );
    }
}

#[test]
fn the_bound_is_printed_set_by_flag_and_off_at_zero() {
    let dir = host_dir(&[]);
    for (args, max_due, resume_at) in [
        (&[][..], 100_000, 80_000),
        (&["--max-due", "50"][..], 50, 40),
        (&["--max-due", "50", "--resume-at", "10"][..], 50, 10),
        (&["--max-due", "0"][..], 0, 0),
    ] {
        let output = Command::new(host_binary())
            .args(["run", "--plugins", "plugins", "--print-config"])
            .args(args)
            .current_dir(dir.path())
            .output()
            .expect("running host");
        assert!(output.status.success(), "{args:?}: {output:?}");
        let printed: Value = serde_json::from_slice(&output.stdout).expect("JSON");
        assert_eq!(
            printed["backpressure"],
            json!({ "max_due": max_due, "resume_at": resume_at }),
            "{args:?}"
        );
    }
    let refused = Command::new(host_binary())
        .args([
            "run",
            "--plugins",
            "plugins",
            "--print-config",
            "--max-due",
            "10",
            "--resume-at",
            "10",
        ])
        .current_dir(dir.path())
        .output()
        .expect("running host");
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && said.contains("--resume-at"),
        "{said}"
    );
}

fn order(order_id: &str) -> Value {
    json!({ "order_id": order_id, "sku": "widget", "qty": 1 })
}

/// [`CALLERS`] threads placing orders, each until refused [`REFUSALS_EACH`] times: the
/// accepted order ids and the refusals.
fn load(host: &Host) -> (Vec<String>, Vec<Answer>) {
    let started = Instant::now();
    let per_caller: Vec<(Vec<String>, Vec<Answer>)> = std::thread::scope(|scope| {
        let callers: Vec<_> = (0..CALLERS)
            .map(|caller| {
                scope.spawn(move || {
                    let (mut accepted, mut refused) = (Vec::new(), Vec::new());
                    for i in 0.. {
                        assert!(
                            started.elapsed() < EVENTUALLY,
                            "caller {caller}: still accepted after {i} orders"
                        );
                        let order_id = format!("o-{caller}-{i}");
                        let answer = host.command("order.place", order(&order_id));
                        match answer.status {
                            200 => accepted.push(order_id),
                            503 => refused.push(answer),
                            _ => panic!("order {order_id}: {answer:?}"),
                        }
                        if refused.len() == REFUSALS_EACH {
                            break;
                        }
                    }
                    (accepted, refused)
                })
            })
            .collect();
        callers
            .into_iter()
            .map(|c| c.join().expect("a caller panicked"))
            .collect()
    });
    per_caller.into_iter().fold(
        (Vec::new(), Vec::new()),
        |(mut a, mut r), (accepted, refused)| {
            a.extend(accepted);
            r.extend(refused);
            (a, r)
        },
    )
}

/// A refusal for the backlog: 503, `Retry-After: 1`, and a message naming the bound.
fn assert_overloaded(answer: &Answer) {
    assert_eq!(answer.status, 503, "{answer:?}");
    assert_eq!(answer.error_class(), "overloaded", "{answer:?}");
    assert_eq!(answer.body["error"]["plugin"], Value::Null, "{answer:?}");
    assert_eq!(
        answer.headers.get("retry-after").map(|v| v.as_bytes()),
        Some(&b"1"[..]),
        "{answer:?}"
    );
    assert!(answer.headers.contains_key("correlation-id"), "{answer:?}");
    let message = answer.error_message();
    assert!(
        message.contains("`max_due` of 20")
            && message.contains("fall to 16")
            && message.contains("--max-due"),
        "{message}"
    );
}

/// Polls `GET /ready` until `done(status, body)`; returns the body.
fn wait_for_ready(host: &Host, what: &str, done: impl Fn(u16, &Value) -> bool) -> Value {
    let mut last = None;
    wait_until(EVENTUALLY, what, || {
        let (status, ready) = host.ready();
        let reached = done(status, &ready);
        last = Some(ready);
        reached
    });
    last.expect("polled at least once")
}
