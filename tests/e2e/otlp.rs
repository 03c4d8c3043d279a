//! `--otlp-endpoint`: the host's spans reach an OTLP/HTTP receiver (a small collector run by
//! the test, decoding the protobuf with the OpenTelemetry project's own message types), with
//! the message, correlation and causation ids as attributes, and one request is one trace:
//! the command continues the caller's `traceparent`, and each delivery is a child of the span
//! that emitted its message.

use crate::harness::{DEMO, EVENTUALLY, Host, host_dir, wait_for};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Attribute;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use serde_json::json;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;

#[test]
fn spans_with_their_ids_reach_an_otlp_receiver() {
    let (endpoint, spans) = receiver();
    let host = Host::start_in(
        host_dir(DEMO),
        &["--otlp-endpoint", &endpoint],
        // Batches every 100 ms rather than every 5 s.
        &[("OTEL_BSP_SCHEDULE_DELAY", "100")],
    );
    host.command_ok("stock.add", json!({ "sku": "widget", "qty": 10 }));
    let placed = host.post(
        "/commands/order.place",
        json!({ "order_id": "o-x", "sku": "widget", "qty": 1 })
            .to_string()
            .into(),
        &[("correlation-id", "otel-1"), ("traceparent", CALLER)],
    );
    assert_eq!(placed.status, 200, "{placed:?}");

    let mut received: Vec<Span> = Vec::new();
    let of_request = |received: &[Span], name: &str| -> Vec<Span> {
        received
            .iter()
            .filter(|s| s.name == name && text(s, "correlation_id").as_deref() == Some("otel-1"))
            .cloned()
            .collect()
    };
    // The command, and its event's deliveries to inventory and order-summary; then
    // order-summary's delivery of what inventory emitted.
    wait_for(EVENTUALLY, "the request's spans at the receiver", || {
        while let Ok(batch) = spans.try_recv() {
            received.extend(batch);
        }
        (of_request(&received, "command").len() == 1
            && of_request(&received, "delivery").len() == 3)
            .then_some(())
    });
    let command = &of_request(&received, "command")[0];
    assert_eq!(text(command, "kind").as_deref(), Some("order.place"));
    let command_id = text(command, "message_id").expect("the command's message id");
    let deliveries = of_request(&received, "delivery");
    let to_inventory = deliveries
        .iter()
        .find(|s| text(s, "subscriber").as_deref() == Some("inventory"))
        .expect("a span of inventory's delivery");
    assert_eq!(text(to_inventory, "kind").as_deref(), Some("order.placed"));
    assert_eq!(
        text(to_inventory, "causation_id").as_deref(),
        Some(command_id.as_str()),
        "the event was caused by the command"
    );
    assert!(to_inventory.end_time_unix_nano >= to_inventory.start_time_unix_nano);

    // One trace, continuing the caller's: the command is a child of the caller's span, each
    // delivery of the command's event a child of the command, and order-summary's delivery of
    // what inventory emitted a child of inventory's delivery.
    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    assert_eq!(
        hex(&command.trace_id),
        CALLER_TRACE,
        "the command continues the caller's trace"
    );
    assert_eq!(hex(&command.parent_span_id), CALLER_SPAN);
    for delivery in &deliveries {
        assert_eq!(
            delivery.trace_id, command.trace_id,
            "every delivery is in the request's trace"
        );
    }
    assert_eq!(
        to_inventory.parent_span_id, command.span_id,
        "inventory's delivery follows the command"
    );
    let of_reserved = deliveries
        .iter()
        .find(|s| text(s, "kind").as_deref() == Some("stock.reserved"))
        .expect("a span of order-summary's delivery of stock.reserved");
    assert_eq!(
        of_reserved.parent_span_id, to_inventory.span_id,
        "what inventory emitted is delivered under inventory's delivery"
    );
}

/// The caller's trace and span, as its `traceparent` header carries them.
const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";
const CALLER: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// The string value of the attribute `key` of `span`.
fn text(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| a.value.as_ref()?.value.clone())
        .map(|value| match value {
            Attribute::StringValue(s) => s,
            Attribute::IntValue(n) => n.to_string(),
            other => format!("{other:?}"),
        })
}

/// An OTLP/HTTP receiver on a free port: its base URL, and the spans of each export request.
/// It answers every `POST /v1/traces` with an empty `ExportTraceServiceResponse`.
fn receiver() -> (String, mpsc::Receiver<Vec<Span>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let (sender, spans) = mpsc::channel();
    std::thread::spawn(move || {
        for connection in listener.incoming().flatten() {
            let sender = sender.clone();
            std::thread::spawn(move || serve(connection, &sender));
        }
    });
    (endpoint, spans)
}

/// Reads the HTTP/1.1 requests of one connection, decoding each body.
fn serve(connection: TcpStream, spans: &mpsc::Sender<Vec<Span>>) {
    let mut writer = connection.try_clone().expect("a second handle");
    let mut reader = BufReader::new(connection);
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        assert!(
            request_line.starts_with("POST /v1/traces "),
            "{request_line}"
        );
        let mut length = 0;
        loop {
            let mut header = String::new();
            reader.read_line(&mut header).expect("a header line");
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().expect("a length");
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).expect("the body");
        let request = ExportTraceServiceRequest::decode(body.as_slice())
            .expect("the body is an OTLP ExportTraceServiceRequest");
        let batch: Vec<Span> = request
            .resource_spans
            .into_iter()
            .flat_map(|r| r.scope_spans)
            .flat_map(|s| s.spans)
            .collect();
        let _ = spans.send(batch);
        writer
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n")
            .expect("answering");
    }
}
