//! Group commit answers a caller only after the transaction holding its unit of work is
//! durable: with many commands in flight, `kill -9` right after some of them were answered
//! loses none of the answered ones.

use crate::harness::{EVENTUALLY, Host, ORDERS, wait_until};
use serde_json::json;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Kill rounds; each kills the host while eight callers keep commands in flight.
const ROUNDS: usize = 8;
const CALLERS: usize = 8;

on_every_backend! {
    fn commands_answered_under_concurrent_load_survive_kill_9() {
        let mut host = Host::start(&[ORDERS], &[]);
        let mut answered_total = 0;
        for round in 0..ROUNDS {
            let base = host.base_url().to_owned();
            let pid = host.pid();
            let answered = Mutex::new(Vec::<String>::new());
            let killed = AtomicBool::new(false);
            std::thread::scope(|scope| {
                for caller in 0..CALLERS {
                    let (base, answered, killed) = (&base, &answered, &killed);
                    scope.spawn(move || {
                        let client = reqwest::blocking::Client::builder()
                            .timeout(Duration::from_secs(10))
                            .build()
                            .unwrap();
                        for i in 0.. {
                            let order_id = format!("r{round}-c{caller}-{i}");
                            let body = json!({ "order_id": order_id, "sku": "widget", "qty": 1 });
                            match client
                                .post(format!("{base}/commands/order.place"))
                                .body(body.to_string())
                                .send()
                            {
                                Ok(response) if response.status() == 200 => {
                                    answered.lock().unwrap().push(order_id)
                                }
                                Ok(response) => {
                                    panic!("order {order_id} answered {}", response.status())
                                }
                                // The connection broke: the host was killed.
                                Err(_) if killed.load(Ordering::SeqCst) => return,
                                Err(e) => panic!("order {order_id} failed before the kill: {e}"),
                            }
                        }
                    });
                }
                // Kill at a different depth each round, while every caller has a command in flight.
                let kill_after = 10 + round * 7;
                wait_until(
                    EVENTUALLY,
                    "commands to be answered before the kill",
                    || answered.lock().unwrap().len() >= kill_after,
                );
                killed.store(true, Ordering::SeqCst);
                let status = std::process::Command::new("kill")
                    .args(["-9", &pid.to_string()])
                    .status()
                    .unwrap();
                assert!(status.success(), "kill -9 {pid} failed");
            });
            host.restart();
            let answered = answered.into_inner().unwrap();
            for order_id in &answered {
                let found = host.query("order.get", json!({ "order_id": order_id }));
                assert_eq!(
                    found.status, 200,
                    "round {round}: order {order_id} was answered 200 but is gone after kill -9: {:?}",
                    found.body
                );
            }
            answered_total += answered.len();
        }
        println!("group commit durability: {ROUNDS} kills, {answered_total} answered commands, 0 lost");
    }
}
