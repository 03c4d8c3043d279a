//! Where `host bus` and `host trace` do their work: through a running host's admin API when a
//! host serves the database (its plugins, its policies, its dispatcher woken at once), on the
//! database itself otherwise.
//!
//! A host registers its address in the database at start and removes it at a clean stop
//! ([`Store::register_running_host`]). The command line asks each registered address
//! `GET /admin/host` and uses the first host that answers with the id its row names; a host
//! that was killed, or a port now held by another process, is passed over. `--host-url` names
//! the host instead, and then the database is not opened at all.

use super::{DatabaseArg, PluginLoad};
use crate::admin::{BusMetrics, rehearsal_report};
use crate::cli::{BusFilter, ListType};
use crate::dispatcher::FlushedDelivery;
use crate::http::ADMIN_TOKEN_HEADER;
use crate::store::{BusHealth, BusStats, DeliveryDetail, DeliveryView, RunningHost, Store};
use crate::trace::Trace;
use anyhow::Context;
use clap::Args;
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::time::Duration;

/// How `host bus` and `host trace` reach the deliveries.
#[derive(Debug, Args)]
pub(crate) struct Reach {
    #[command(flatten)]
    pub database: DatabaseArg,
    /// A running host's base URL, e.g. `http://127.0.0.1:7878`: work through its admin API
    /// and leave the database alone. Without it, a running host registered in the database
    /// is used when it answers, and the database otherwise.
    #[arg(long, env = "HOST_URL")]
    pub host_url: Option<String>,
    /// The running host's admin token (its `--admin-token`), sent as `X-Admin-Token`.
    #[arg(long, env = "HOST_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
}

/// How long a registered host has to say who it is before it is passed over (a stopped
/// process may still hold its port).
const IDENTIFY_TIMEOUT: Duration = Duration::from_secs(2);

/// How long one admin request may take, a flush excepted.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a flush may take: it runs up to `--limit` deliveries.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(60 * 60);

/// The deliveries as a `host bus` or `host trace` command reaches them.
pub(crate) enum Target {
    Host(AdminClient),
    Database(Store),
}

impl Target {
    /// The host `reach` names, else a registered host that answers, else the database. Says
    /// on stderr which host it goes through.
    ///
    /// # Errors
    /// The database cannot be opened (when no `--host-url` is given).
    pub async fn reach(reach: &Reach) -> anyhow::Result<Self> {
        if let Some(url) = &reach.host_url {
            return Ok(Self::Host(AdminClient::new(url, reach.admin_token.clone())));
        }
        let store = Store::open(&reach.database.database_url).await?;
        for host in store.running_hosts().await.unwrap_or_default() {
            let client = AdminClient::new(&host.address, reach.admin_token.clone());
            match client.identify(&host).await {
                Identified::Yes => {
                    eprintln!("(through the admin API of the host at {})", host.address);
                    store.close().await;
                    return Ok(Self::Host(client));
                }
                Identified::NeedsToken => {
                    eprintln!(
                        "(the host at {} wants its admin token: set HOST_ADMIN_TOKEN or \
                         --admin-token to go through it; reading the database directly)",
                        host.address
                    );
                    break;
                }
                Identified::No => {}
            }
        }
        Ok(Self::Database(store))
    }

    pub async fn close(&self) {
        if let Self::Database(store) = self {
            store.close().await;
        }
    }

    pub async fn list(
        &self,
        which: ListType,
        filter: &BusFilter,
        limit: Option<u32>,
    ) -> anyhow::Result<Vec<DeliveryView>> {
        match self {
            Self::Database(store) => {
                store
                    .list_deliveries(&filter.to_filter(which.status(), limit)?)
                    .await
            }
            Self::Host(host) => {
                #[derive(Serialize)]
                struct Params<'a> {
                    #[serde(rename = "type")]
                    which: ListType,
                    #[serde(skip_serializing_if = "Option::is_none")]
                    limit: Option<u32>,
                    #[serde(flatten)]
                    filter: &'a BusFilter,
                }
                let params = Params {
                    which,
                    limit,
                    filter,
                };
                host.expect(Method::GET, "/admin/deliveries", &params).await
            }
        }
    }

    pub async fn delivery(&self, id: i64) -> anyhow::Result<Option<DeliveryDetail>> {
        match self {
            Self::Database(store) => store.delivery(id).await,
            Self::Host(host) => {
                host.call(Method::GET, &format!("/admin/deliveries/{id}"), &())
                    .await
            }
        }
    }

    /// Replays the dead delivery `id`; false when there is no dead delivery with that id.
    pub async fn replay(&self, id: i64) -> anyhow::Result<bool> {
        match self {
            Self::Database(store) => store.replay(id).await,
            Self::Host(host) => {
                let path = format!("/admin/deliveries/{id}/replay");
                match host.send(Method::POST, &path, &()).await? {
                    (status, _) if status.is_success() => Ok(true),
                    (StatusCode::NOT_FOUND | StatusCode::CONFLICT, _) => Ok(false),
                    (status, body) => Err(refused(status, &body)),
                }
            }
        }
    }

    /// Replays the delivery `id` whatever its status; false when there is none.
    pub async fn replay_forced(&self, id: i64) -> anyhow::Result<bool> {
        match self {
            Self::Database(store) => store.replay_forced(id).await,
            Self::Host(host) => {
                let path = format!("/admin/deliveries/{id}/replay");
                let replayed: Option<serde_json::Value> =
                    host.call(Method::POST, &path, &[("force", true)]).await?;
                Ok(replayed.is_some())
            }
        }
    }

    /// What replaying the dead letter `id` would do (see [`rehearsal_report`]), on the
    /// running host's build or on the one `load` loads; `None` when there is no such letter.
    pub async fn rehearse(
        &self,
        id: i64,
        load: &PluginLoad,
    ) -> anyhow::Result<Option<serde_json::Value>> {
        match self {
            Self::Database(store) => {
                let Some(letter) = store.dead_letter(id).await? else {
                    return Ok(None);
                };
                let host = load.host(store.clone()).await?;
                let rehearsal = host.executor().rehearse(&letter).await;
                Ok(Some(rehearsal_report(&letter, rehearsal)))
            }
            Self::Host(host) => {
                host.call(
                    Method::POST,
                    &format!("/admin/deliveries/{id}/rehearse"),
                    &(),
                )
                .await
            }
        }
    }

    /// Replays or deletes (or, with `dry_run`, only lists) the dead letters matching
    /// `filter`; their ids.
    pub async fn change_dead(
        &self,
        change: DeadChange,
        filter: &BusFilter,
        dry_run: bool,
    ) -> anyhow::Result<Vec<i64>> {
        match self {
            Self::Database(store) => {
                let filter = filter.to_filter(None, None)?;
                match change {
                    DeadChange::Replay => store.replay_matching(&filter, dry_run).await,
                    DeadChange::Purge => store.purge_matching(&filter, dry_run).await,
                }
            }
            Self::Host(host) => {
                let (route, field) = match change {
                    DeadChange::Replay => ("/admin/dead-letters/replay", "replayed"),
                    DeadChange::Purge => ("/admin/dead-letters/purge", "purged"),
                };
                let params = DeadParams {
                    filter,
                    dry_run,
                    force: !dry_run,
                };
                let answer: serde_json::Value = host.expect(Method::POST, route, &params).await?;
                serde_json::from_value(answer[field].clone())
                    .with_context(|| format!("the host's answer has no `{field}` list of ids"))
            }
        }
    }

    pub async fn stats(&self) -> anyhow::Result<BusStats> {
        match self {
            Self::Database(store) => store.stats().await,
            Self::Host(host) => host.expect(Method::GET, "/admin/stats", &()).await,
        }
    }

    pub async fn health(&self) -> anyhow::Result<BusHealth> {
        match self {
            Self::Database(store) => store.bus_health().await,
            Self::Host(host) => host.expect(Method::GET, "/admin/health", &()).await,
        }
    }

    pub async fn metrics(&self, minutes: u64) -> anyhow::Result<BusMetrics> {
        match self {
            Self::Database(store) => {
                let window = Duration::from_secs(minutes.saturating_mul(60));
                Ok(BusMetrics {
                    report: store.recent_delivery_metrics(window).await?,
                    commands: None,
                })
            }
            Self::Host(host) => {
                host.expect(Method::GET, "/admin/metrics", &[("minutes", minutes)])
                    .await
            }
        }
    }

    /// Makes `metrics` count from now on; returns the time of the reset.
    pub async fn reset_metrics(&self) -> anyhow::Result<i64> {
        match self {
            Self::Database(store) => store.reset_metrics().await,
            Self::Host(host) => {
                let answer: serde_json::Value = host
                    .expect(Method::POST, "/admin/metrics/reset", &())
                    .await?;
                answer["reset_at_ms"]
                    .as_i64()
                    .context("the host's answer has no `reset_at_ms`")
            }
        }
    }

    /// Runs what is due now: in the running host with its plugins and policies, or in this
    /// process with the ones `load` loads.
    pub async fn flush(
        &self,
        limit: usize,
        dry_run: bool,
        load: &PluginLoad,
    ) -> anyhow::Result<Vec<FlushedDelivery>> {
        match self {
            Self::Database(store) => {
                let host = load.host(store.clone()).await?;
                crate::dispatcher::flush(host.executor(), host.config(), limit, dry_run).await
            }
            Self::Host(host) => {
                #[derive(Serialize)]
                struct Params {
                    limit: usize,
                    dry_run: bool,
                }
                let params = Params { limit, dry_run };
                host.expect_within(Method::POST, "/admin/flush", &params, FLUSH_TIMEOUT)
                    .await
            }
        }
    }

    pub async fn trace(&self, id: &str) -> anyhow::Result<Option<Trace>> {
        match self {
            Self::Database(store) => Trace::find(store, id).await,
            Self::Host(host) => {
                let path = format!("/admin/trace/{}", encode_segment(id));
                host.call(Method::GET, &path, &()).await
            }
        }
    }
}

/// What [`Target::change_dead`] does to the dead letters.
#[derive(Debug, Clone, Copy)]
pub(crate) enum DeadChange {
    /// Back in the queue, attempts reset.
    Replay,
    /// Deleted.
    Purge,
}

/// The filter and switches of a dead-letter replay or purge, as the admin API takes them.
#[derive(Serialize)]
struct DeadParams<'a> {
    #[serde(flatten)]
    filter: &'a BusFilter,
    dry_run: bool,
    force: bool,
}

/// A path segment with everything but unreserved characters percent-encoded.
fn encode_segment(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Whether a registered address answered as the host its row names.
enum Identified {
    Yes,
    /// It is that host, but it wants the admin token this command was not given (or a
    /// different one).
    NeedsToken,
    No,
}

/// A running host's admin API.
pub(crate) struct AdminClient {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl AdminClient {
    fn new(base: &str, token: Option<String>) -> Self {
        Self {
            base: base.trim_end_matches('/').to_owned(),
            token,
            http: reqwest::Client::new(),
        }
    }

    async fn identify(&self, host: &RunningHost) -> Identified {
        let answer = self
            .request(Method::GET, "/admin/host", &())
            .timeout(IDENTIFY_TIMEOUT)
            .send()
            .await;
        let Ok(answer) = answer else {
            return Identified::No;
        };
        match answer.status() {
            StatusCode::UNAUTHORIZED => Identified::NeedsToken,
            status if status.is_success() => {
                let body = answer.bytes().await.ok();
                match body.and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok()) {
                    Some(body) if body["id"] == host.id.as_str() => Identified::Yes,
                    _ => Identified::No,
                }
            }
            _ => Identified::No,
        }
    }

    fn request(
        &self,
        method: Method,
        path: &str,
        query: &impl Serialize,
    ) -> reqwest::RequestBuilder {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .query(query);
        if let Some(token) = &self.token {
            request = request.header(ADMIN_TOKEN_HEADER, token);
        }
        request
    }

    fn unreachable(&self, error: &reqwest::Error) -> anyhow::Error {
        anyhow::anyhow!("cannot reach the host at {}: {error}", self.base)
    }

    /// The status and body of one request.
    async fn send(
        &self,
        method: Method,
        path: &str,
        query: &impl Serialize,
    ) -> anyhow::Result<(StatusCode, bytes::Bytes)> {
        self.send_within(method, path, query, REQUEST_TIMEOUT).await
    }

    async fn send_within(
        &self,
        method: Method,
        path: &str,
        query: &impl Serialize,
        timeout: Duration,
    ) -> anyhow::Result<(StatusCode, bytes::Bytes)> {
        let answer = self
            .request(method, path, query)
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| self.unreachable(&e))?;
        let status = answer.status();
        let body = answer.bytes().await.map_err(|e| self.unreachable(&e))?;
        Ok((status, body))
    }

    /// The answer as `T`; `None` on 404; an error naming the host's reason otherwise.
    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        query: &impl Serialize,
    ) -> anyhow::Result<Option<T>> {
        match self.send(method, path, query).await? {
            (StatusCode::NOT_FOUND, _) => Ok(None),
            (status, body) if status.is_success() => {
                serde_json::from_slice(&body).map(Some).with_context(|| {
                    format!(
                        "the host at {} answered {path} with no JSON it knows",
                        self.base
                    )
                })
            }
            (status, body) => Err(refused(status, &body)),
        }
    }

    /// [`AdminClient::call`] where 404 is an error too.
    async fn expect<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        query: &impl Serialize,
    ) -> anyhow::Result<T> {
        self.expect_within(method, path, query, REQUEST_TIMEOUT)
            .await
    }

    async fn expect_within<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        query: &impl Serialize,
        timeout: Duration,
    ) -> anyhow::Result<T> {
        match self.send_within(method, path, query, timeout).await? {
            (status, body) if status.is_success() => {
                serde_json::from_slice(&body).with_context(|| {
                    format!(
                        "the host at {} answered {path} with no JSON it knows",
                        self.base
                    )
                })
            }
            (status, body) => Err(refused(status, &body)),
        }
    }
}

/// A host's refusal, in its own words (the `error.message` of its JSON error body).
fn refused(status: StatusCode, body: &[u8]) -> anyhow::Error {
    let message = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
    match status {
        StatusCode::UNAUTHORIZED => {
            anyhow::anyhow!("the host refused: {message} (set HOST_ADMIN_TOKEN or --admin-token)")
        }
        _ => anyhow::anyhow!("the host refused ({status}): {message}"),
    }
}
