//! What the host tells operators about its work: Prometheus metrics, counted as the work
//! happens and sampled from the database when scraped (`GET /metrics`); and, when asked for,
//! its spans exported over OTLP ([`otlp_layer`]).
//!
//! With spans exported, one request is one trace: a command continues the W3C trace context
//! its caller sent (`traceparent`), each event it emits carries the command span's context in
//! its `traceparent` header, and each delivery's span continues the context of the message it
//! delivers ([`trace_headers`], [`continue_trace`]). Without export, nothing is added.
//!
//! Counters and histograms are recorded where the work happens, through the `metrics`
//! facade; [`install`] puts the Prometheus recorder behind it once per process (before it,
//! recording costs a relaxed atomic load and nothing else). The backlog gauges are read from
//! the database at each scrape, so every host of a shared PostgreSQL database reports the same
//! database-wide figures; aggregate them with `max`, not `sum`.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `handler_host_commands_total` | counter | `plugin`, `kind`, `outcome` (`ok`, `replayed`, the error class, or `overloaded`: refused for the backlog) |
//! | `handler_host_queries_total` | counter | `plugin`, `kind`, `outcome` |
//! | `handler_host_deliveries_total` | counter | `subscriber`, `kind`, `outcome` (`done`, `retry`, `dead`, `skipped`, `not_recorded`) |
//! | `handler_host_delivery_runs_total` | counter | `subscriber`: runs started, each one or more consecutive deliveries of one key that commit together (deliveries ÷ runs is the mean run length) |
//! | `handler_host_delivery_retries_total` | counter | `subscriber`, `kind`, `class` |
//! | `handler_host_dead_letters_total` | counter | `subscriber`, `kind`, `class` |
//! | `handler_host_handler_duration_seconds` | histogram | `plugin`, `kind`, `handler` (`command`, `event`, `query`) |
//! | `handler_host_commit_duration_seconds` | histogram | |
//! | `handler_host_commit_batch_units` | histogram | |
//! | `handler_host_delivery_latency_seconds` | histogram | `subscriber`, `kind`: the message's occurrence → its delivery done |
//! | `handler_host_pending_deliveries` | gauge | `subscriber` |
//! | `handler_host_scheduled_deliveries` | gauge | `subscriber`: pending, waiting for a retry time |
//! | `handler_host_oldest_pending_age_seconds` | gauge | `subscriber` |
//! | `handler_host_dead_letters` | gauge | `subscriber`, `class` |
//! | `handler_host_plugin_info` | gauge (1) | `plugin`, `version`, `build` |
//! | `handler_host_plugin_load_errors` | gauge | |
//! | `handler_host_database_up` | gauge | |
//! | `handler_host_partitions_held` | gauge | (PostgreSQL) |
//! | `handler_host_due_deliveries` | gauge | due and not yet delivered, as back-pressure counts them (up to `max_due` + 1; absent when off) |
//! | `handler_host_backpressure_max_due` | gauge | the bound (0: off) |
//! | `handler_host_backpressure_refusing` | gauge | 1 while commands are refused for the backlog, else 0 |

pub mod commands;

use crate::backpressure::Backpressure;
use crate::executor::{Delivered, ExecError, Reply};
use crate::partitions::PartitionLeases;
use crate::registry::Registry;
use crate::store::{DeliveryFate, DueDelivery, Store, now_ms};
use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::collections::BTreeSet;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// Bucket bounds of the duration histograms, in seconds: 100 µs to 30 s.
const SECONDS_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];
/// Bucket bounds of the batch-size histogram, in units of work.
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];
/// How often histogram samples are folded into their buckets when nobody scrapes.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// The process's Prometheus recorder, installed on first use.
///
/// # Panics
/// If another `metrics` recorder was installed first (the host installs none).
pub fn install() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let handle = PrometheusBuilder::new()
            .set_buckets(SECONDS_BUCKETS)
            .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_units".into()), BATCH_BUCKETS))
            .expect("the bucket lists are not empty")
            .install_recorder()
            .expect("no other metrics recorder is installed");
        let upkeep = handle.clone();
        std::thread::Builder::new()
            .name("metrics-upkeep".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(UPKEEP_EVERY);
                    upkeep.run_upkeep();
                }
            })
            .expect("a thread can be spawned at start");
        describe();
        handle
    })
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "handler_host_commands_total",
        "Commands answered, by outcome"
    );
    describe_counter!("handler_host_queries_total", "Queries answered, by outcome");
    describe_counter!(
        "handler_host_deliveries_total",
        "Delivery attempts finished, by outcome"
    );
    describe_counter!(
        "handler_host_delivery_runs_total",
        "Runs of deliveries started: consecutive deliveries of one key run one after another and commit together"
    );
    describe_counter!(
        "handler_host_delivery_retries_total",
        "Failed delivery attempts that will be retried, by error class"
    );
    describe_counter!(
        "handler_host_dead_letters_total",
        "Deliveries dead-lettered, by error class"
    );
    describe_histogram!(
        "handler_host_handler_duration_seconds",
        Unit::Seconds,
        "Time of one handler call, instantiation included"
    );
    describe_histogram!(
        "handler_host_commit_duration_seconds",
        Unit::Seconds,
        "Time of one group commit"
    );
    describe_histogram!(
        "handler_host_commit_batch_units",
        "Units of work in one group commit"
    );
    describe_histogram!(
        "handler_host_delivery_latency_seconds",
        Unit::Seconds,
        "From a message's occurrence to its delivery done"
    );
    describe_gauge!(
        "handler_host_pending_deliveries",
        "Deliveries waiting to run (database-wide)"
    );
    describe_gauge!(
        "handler_host_scheduled_deliveries",
        "Pending deliveries waiting for a retry time (database-wide)"
    );
    describe_gauge!(
        "handler_host_oldest_pending_age_seconds",
        Unit::Seconds,
        "Age of the oldest pending delivery's message (database-wide)"
    );
    describe_gauge!(
        "handler_host_dead_letters",
        "Dead letters waiting for an operator (database-wide)"
    );
    describe_gauge!(
        "handler_host_plugin_info",
        "The build of each loaded plugin"
    );
    describe_gauge!(
        "handler_host_plugin_load_errors",
        "Plugin files that failed to load"
    );
    describe_gauge!(
        "handler_host_database_up",
        "1 while the database works, else 0"
    );
    describe_gauge!(
        "handler_host_partitions_held",
        "Partitions this host leases (PostgreSQL)"
    );
    describe_gauge!(
        "handler_host_due_deliveries",
        "Deliveries due and not yet delivered, as back-pressure last counted them (database-wide, up to max_due + 1)"
    );
    describe_gauge!(
        "handler_host_backpressure_max_due",
        "Due deliveries at which commands are refused (0: no bound)"
    );
    describe_gauge!(
        "handler_host_backpressure_refusing",
        "1 while commands are refused because the due deliveries passed their bound, else 0"
    );
}

/// Which handler export ran.
#[derive(Debug, Clone, Copy)]
pub enum Handler {
    /// `handle-command`: a command's handler.
    Command,
    /// `handle-event`: a subscriber's handler, on a delivery.
    Event,
    /// `handle-query`: a query's handler.
    Query,
}

impl Handler {
    fn as_str(self) -> &'static str {
        match self {
            Self::Command => "command",
            Self::Event => "event",
            Self::Query => "query",
        }
    }
}

/// One handler call of `plugin` on a message of `kind` took `elapsed`.
pub fn handler_called(handler: Handler, plugin: &str, kind: &str, elapsed: Duration) {
    histogram!(
        "handler_host_handler_duration_seconds",
        "plugin" => plugin.to_owned(), "kind" => kind.to_owned(), "handler" => handler.as_str()
    )
    .record(elapsed.as_secs_f64());
}

/// A command of `kind`, owned by `plugin`, was answered with `result` after `elapsed`.
pub fn command_answered(
    plugin: &str,
    kind: &str,
    result: &Result<Reply, ExecError>,
    elapsed: Duration,
) {
    let outcome = match result {
        Ok(Reply::Success(_)) => "ok",
        Ok(Reply::Replayed(_)) => "replayed",
        Err(error) => error_outcome(error),
    };
    commands::record(plugin, kind, outcome, elapsed);
    counter!(
        "handler_host_commands_total",
        "plugin" => plugin.to_owned(), "kind" => kind.to_owned(), "outcome" => outcome
    )
    .increment(1);
}

/// A query of `kind`, owned by `plugin`, was answered with `result`.
pub fn query_answered<T>(plugin: &str, kind: &str, result: &Result<T, ExecError>) {
    let outcome = match result {
        Ok(_) => "ok",
        Err(error) => error_outcome(error),
    };
    counter!(
        "handler_host_queries_total",
        "plugin" => plugin.to_owned(), "kind" => kind.to_owned(), "outcome" => outcome
    )
    .increment(1);
}

/// A command of `kind`, owned by `plugin`, was refused for the delivery backlog before it ran.
pub fn command_refused(plugin: &str, kind: &str) {
    counter!(
        "handler_host_commands_total",
        "plugin" => plugin.to_owned(), "kind" => kind.to_owned(), "outcome" => "overloaded"
    )
    .increment(1);
}

fn error_outcome(error: &ExecError) -> &'static str {
    match error {
        ExecError::UnknownKind { .. } => "unknown_kind",
        ExecError::IdempotencyMismatch { .. } => "idempotency_mismatch",
        ExecError::Host(_) => "host",
        ExecError::Failure(failure) => failure.class.as_str(),
    }
}

/// A run of consecutive deliveries to `subscriber` started (see
/// [`crate::executor::Executor::deliver_run`]).
pub fn run_started(subscriber: &str) {
    counter!("handler_host_delivery_runs_total", "subscriber" => subscriber.to_owned())
        .increment(1);
}

/// The delivery `due` ended as `delivered`.
pub fn delivery_finished(due: &DueDelivery, delivered: &Delivered) {
    let (subscriber, kind) = (due.subscriber.clone(), due.message.kind.clone());
    counter!(
        "handler_host_deliveries_total",
        "subscriber" => subscriber.clone(), "kind" => kind.clone(), "outcome" => delivered.as_str()
    )
    .increment(1);
    match delivered {
        Delivered::Done => {
            let waited = (now_ms() - due.message.occurred_at_ms).max(0) as f64 / 1000.0;
            histogram!(
                "handler_host_delivery_latency_seconds",
                "subscriber" => subscriber, "kind" => kind
            )
            .record(waited);
        }
        Delivered::Failed {
            class,
            fate: DeliveryFate::RetryAt(_),
        } => counter!(
            "handler_host_delivery_retries_total",
            "subscriber" => subscriber, "kind" => kind, "class" => class.as_str()
        )
        .increment(1),
        Delivered::Failed {
            class,
            fate: DeliveryFate::Dead,
        } => counter!(
            "handler_host_dead_letters_total",
            "subscriber" => subscriber, "kind" => kind, "class" => class.as_str()
        )
        .increment(1),
        Delivered::Skipped | Delivered::NotRecorded => {}
    }
}

/// A group commit of `units` units of work took `elapsed`.
pub fn batch_committed(units: usize, elapsed: Duration) {
    histogram!("handler_host_commit_duration_seconds").record(elapsed.as_secs_f64());
    histogram!("handler_host_commit_batch_units").record(units as f64);
}

/// The label sets of the sampled gauges set at the previous scrape: one that is gone now (a
/// subscriber whose backlog drained, a class of dead letters purged, a plugin unloaded or
/// rebuilt) is set to 0 rather than left at its last value.
static SAMPLED: Mutex<BTreeSet<Series>> = Mutex::new(BTreeSet::new());

/// A gauge's name and labels.
type Series = (&'static str, Vec<(&'static str, String)>);

/// The Prometheus text exposition of every metric, the gauges sampled now from `registry`,
/// `store`, `leases` and `backpressure`.
pub async fn render(
    registry: &Registry,
    store: &Store,
    leases: Option<&PartitionLeases>,
    backpressure: Option<&Backpressure>,
) -> String {
    let handle = install();
    let mut sampled = BTreeSet::new();
    let mut set = |name: &'static str, labels: Vec<(&'static str, String)>, value: f64| {
        gauge!(name, labels.as_slice()).set(value);
        sampled.insert((name, labels));
    };
    for plugin in registry.plugins() {
        let labels = vec![
            ("plugin", plugin.name().to_owned()),
            ("version", plugin.version().to_owned()),
            ("build", plugin.identity().to_owned()),
        ];
        set("handler_host_plugin_info", labels, 1.0);
    }
    set(
        "handler_host_plugin_load_errors",
        vec![],
        registry.load_errors().len() as f64,
    );
    if let Some(leases) = leases {
        set(
            "handler_host_partitions_held",
            vec![],
            leases.status().held.len() as f64,
        );
    }
    let backlog = backpressure.map(Backpressure::status);
    if let Some(backlog) = backlog {
        set("handler_host_due_deliveries", vec![], backlog.due as f64);
    }
    set(
        "handler_host_backpressure_max_due",
        vec![],
        backlog.map_or(0.0, |b| b.max_due as f64),
    );
    set(
        "handler_host_backpressure_refusing",
        vec![],
        if backlog.is_some_and(|b| b.refusing) {
            1.0
        } else {
            0.0
        },
    );
    match store.backlog().await {
        Ok(backlogs) => {
            let now = now_ms();
            for backlog in backlogs {
                let subscriber = || vec![("subscriber", backlog.subscriber.clone())];
                set(
                    "handler_host_pending_deliveries",
                    subscriber(),
                    backlog.pending as f64,
                );
                set(
                    "handler_host_scheduled_deliveries",
                    subscriber(),
                    backlog.scheduled as f64,
                );
                let age = backlog.oldest_pending_age_ms(now).unwrap_or(0);
                set(
                    "handler_host_oldest_pending_age_seconds",
                    subscriber(),
                    age as f64 / 1000.0,
                );
                for (class, n) in &backlog.dead_by_class {
                    let mut labels = subscriber();
                    labels.push(("class", class.clone()));
                    set("handler_host_dead_letters", labels, *n as f64);
                }
            }
        }
        Err(error) => tracing::debug!("metrics: the backlog could not be read: {error:#}"),
    }
    // Read after the backlog query, which a failing database fails too.
    let up = if store.health().is_failing() {
        0.0
    } else {
        1.0
    };
    set("handler_host_database_up", vec![], up);
    let mut previous = SAMPLED.lock().expect("no scrape panics while holding it");
    for (name, labels) in previous.difference(&sampled) {
        gauge!(*name, labels.as_slice()).set(0.0);
    }
    *previous = sampled;
    drop(previous);
    handle.render()
}

/// A `tracing` layer that exports every span (commands, queries, deliveries, with their
/// message, correlation and causation ids as attributes) over OTLP/HTTP to `endpoint` (a
/// collector's base URL, such as `http://127.0.0.1:4318`), in batches from a thread of its
/// own. Keep the provider and shut it down at exit, which sends what is still buffered.
///
/// # Errors
/// The endpoint is not a URL the exporter accepts.
pub fn otlp_layer<S>(
    endpoint: &str,
) -> anyhow::Result<(
    impl tracing_subscriber::Layer<S>,
    opentelemetry_sdk::trace::SdkTracerProvider,
)>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_otlp::{Protocol, WithExportConfig};
    let base = endpoint.trim_end_matches('/');
    let traces = if base.ends_with("/v1/traces") {
        base.to_owned()
    } else {
        format!("{base}/v1/traces")
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(traces)
        .build()
        .map_err(|e| anyhow::anyhow!("the OTLP endpoint `{endpoint}`: {e}"))?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name("handler-host")
        .build();
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build();
    let tracer = provider.tracer("handler-host");
    EXPORTING.store(true, std::sync::atomic::Ordering::Relaxed);
    Ok((tracing_opentelemetry::layer().with_tracer(tracer), provider))
}

/// Whether [`otlp_layer`] was built: spans are exported, and trace context propagated.
static EXPORTING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The W3C trace context of the current span (`traceparent`, and `tracestate` when it has
/// one), as headers for the messages emitted inside it; empty when spans are not exported.
pub fn trace_headers() -> Vec<(String, String)> {
    use opentelemetry::propagation::TextMapPropagator;
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    if !EXPORTING.load(std::sync::atomic::Ordering::Relaxed) {
        return Vec::new();
    }
    let context = tracing::Span::current().context();
    if !context.span().span_context().is_valid() {
        return Vec::new();
    }
    let mut carrier = std::collections::HashMap::new();
    opentelemetry_sdk::propagation::TraceContextPropagator::new()
        .inject_context(&context, &mut carrier);
    let mut headers: Vec<(String, String)> = carrier.into_iter().collect();
    headers.sort();
    headers
}

/// Makes `span` continue the trace whose W3C context `headers` carry (`traceparent`,
/// `tracestate`); leaves it a new trace when they carry none or spans are not exported.
pub fn continue_trace<'a>(
    span: &tracing::Span,
    headers: impl IntoIterator<Item = (&'a str, &'a str)>,
) {
    use opentelemetry::propagation::TextMapPropagator;
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    if !EXPORTING.load(std::sync::atomic::Ordering::Relaxed) {
        return;
    }
    let carrier: std::collections::HashMap<String, String> = headers
        .into_iter()
        .filter(|(name, _)| matches!(*name, TRACEPARENT | "tracestate"))
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect();
    if carrier.is_empty() {
        return;
    }
    let context = opentelemetry_sdk::propagation::TraceContextPropagator::new().extract(&carrier);
    if context.span().span_context().is_valid() {
        let _ = span.set_parent(context);
    }
}

/// The W3C trace context header.
pub const TRACEPARENT: &str = "traceparent";
