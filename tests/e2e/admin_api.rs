//! The admin API: the `host bus` operations and `host trace` over HTTP, each refused without
//! the admin token, and each answer checked against the database.

use crate::harness::{DEMO, EVENTUALLY, FLAKY, Host, wait_until};
use serde_json::{Value, json};

const TOKEN: &str = "admin-s3cret";

on_every_backend! {
    fn admin_api_lists_shows_replays_purges_and_traces_behind_the_token() {
        let mut plugins = DEMO.to_vec();
        plugins.push(FLAKY);
        let host = Host::start(
            &plugins,
            &["--admin-token", TOKEN, "--max-attempts", "1"],
        );
        for token in [None, Some("wrong")] {
            let (status, body) = admin(&host, "GET", "/admin/stats", token);
            assert_eq!(status, 401, "token {token:?}: {body:#}");
        }
        host.command_ok("stock.add", json!({ "sku": "widget", "qty": 10 }));
        host.command_ok("flaky.set", json!({ "failing": true }));
        let placed = host.command("order.place", json!({ "order_id": "o-a", "sku": "widget", "qty": 1 }));
        let correlation_id = placed.headers["correlation-id"].to_str().unwrap().to_owned();
        let db = host.db();
        let dead_id = || {
            db.scalar("SELECT COALESCE(MAX(id), 0) FROM deliveries WHERE status = 'dead'", &[])
        };
        wait_until(EVENTUALLY, "the flaky delivery to be dead", || dead_id() > 0);
        let letter = dead_id();
        wait_until(EVENTUALLY, "the others to be done", || {
            db.scalar("SELECT COUNT(*) FROM deliveries WHERE status = 'pending'", &[]) == 0
        });

        let (status, dlq) = admin(&host, "GET", "/admin/deliveries?type=dlq&subscriber=flaky", Some(TOKEN));
        assert_eq!(status, 200, "{dlq:#}");
        assert_eq!(dlq.as_array().unwrap().len(), 1, "{dlq:#}");
        assert_eq!(dlq[0]["id"], letter);
        assert_eq!(dlq[0]["error_class"], "retryable");
        let (status, bad) = admin(&host, "GET", "/admin/deliveries?error_class=bogus", Some(TOKEN));
        assert_eq!(status, 400, "{bad:#}");
        let (status, shown) = admin(&host, "GET", &format!("/admin/deliveries/{letter}"), Some(TOKEN));
        assert_eq!((status, shown["status"].as_str()), (200, Some("dead")), "{shown:#}");
        assert_eq!(shown["correlation_id"], correlation_id.as_str());
        assert_eq!(admin(&host, "GET", "/admin/deliveries/987654", Some(TOKEN)).0, 404);
        // Malformed ids and parameters are refused in the same JSON error body.
        for path in ["/admin/deliveries/abc", "/admin/deliveries?limit=many", "/admin/deliveries?type=lost"] {
            let (status, bad) = admin(&host, "GET", path, Some(TOKEN));
            assert_eq!((status, bad["error"]["class"].as_str()), (400, Some("bad_request")), "{path}: {bad:#}");
        }

        let (status, stats) = admin(&host, "GET", "/admin/stats", Some(TOKEN));
        assert_eq!((status, stats["by_status"]["dead"].as_i64()), (200, Some(1)), "{stats:#}");
        let (status, health) = admin(&host, "GET", "/admin/health", Some(TOKEN));
        assert_eq!(status, 200, "{health:#}");
        assert_eq!(health["subscribers"][0]["dead_by_class"]["retryable"], 1, "{health:#}");
        let (status, trace) = admin(&host, "GET", &format!("/admin/trace/{correlation_id}"), Some(TOKEN));
        assert_eq!((status, trace["roots"][0]["handled_by"].as_str()), (200, Some("orders")), "{trace:#}");
        assert_eq!(admin(&host, "GET", "/admin/trace/nothing-like-it", Some(TOKEN)).0, 404);

        // Purge refuses without force, and a dry run names what it would delete.
        let (status, refused) = admin(&host, "POST", "/admin/dead-letters/purge?subscriber=flaky", Some(TOKEN));
        assert_eq!(status, 409, "{refused:#}");
        let (_, dry) = admin(&host, "POST", "/admin/dead-letters/purge?subscriber=flaky&dry_run=true", Some(TOKEN));
        assert_eq!(dry["purged"], json!([letter]));
        assert_eq!(dead_id(), letter, "nothing purged yet");

        // Cured, the letter is replayed through the API and the running host delivers it.
        host.command_ok("flaky.set", json!({ "failing": false }));
        let (status, replayed) = admin(&host, "POST", &format!("/admin/deliveries/{letter}/replay"), Some(TOKEN));
        assert_eq!((status, replayed["was"].as_str()), (200, Some("dead")), "{replayed:#}");
        wait_until(EVENTUALLY, "the replayed letter to be done", || {
            db.scalar(&format!("SELECT COUNT(*) FROM deliveries WHERE id = {letter} AND status = 'done'"), &[]) == 1
        });

        // A done delivery needs force; forced, inventory's reservation runs again.
        let reservation = db.scalar(
            "SELECT id FROM deliveries WHERE subscriber = 'inventory' AND status = 'done'",
            &[],
        );
        let path = format!("/admin/deliveries/{reservation}/replay");
        assert_eq!(admin(&host, "POST", &path, Some(TOKEN)).0, 409);
        let (status, forced) = admin(&host, "POST", &format!("{path}?force=true"), Some(TOKEN));
        assert_eq!((status, forced["was"].as_str()), (200, Some("done")), "{forced:#}");
        wait_until(EVENTUALLY, "the forced reservation to apply again", || {
            host.query_ok("stock.get", json!({ "sku": "widget" }))["available"] == 8
        });
        let (status, nothing) = admin(&host, "POST", "/admin/dead-letters/replay", Some(TOKEN));
        assert_eq!((status, nothing["replayed"].clone()), (200, json!([])), "{nothing:#}");
    }
}

/// `METHOD path` on the host, with `token` in `X-Admin-Token`: the status and JSON body.
pub fn admin(host: &Host, method: &str, path: &str, token: Option<&str>) -> (u16, Value) {
    let client = reqwest::blocking::Client::new();
    let url = format!("{}{path}", host.base_url());
    let mut request = match method {
        "GET" => client.get(url),
        "POST" => client.post(url),
        other => panic!("no {other} in the admin API"),
    };
    if let Some(token) = token {
        request = request.header("x-admin-token", token);
    }
    let response = request
        .send()
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let status = response.status().as_u16();
    let body = response
        .json()
        .unwrap_or_else(|e| panic!("{method} {path} answered no JSON: {e}"));
    (status, body)
}
