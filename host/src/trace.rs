//! `host trace`: one request's causal tree, read from the database. The command at its root,
//! the events its handler emitted, each subscriber's delivery of them (attempts, outcome,
//! error, timing), the events those subscribers emitted in turn, and so on.
//!
//! A command is not stored itself: it shows as the cause of the events its handler emitted
//! (its id and the plugin that handled it). A request whose command emitted nothing, or whose
//! messages retention has deleted, leaves nothing to trace.

use crate::store::{DeliveryStatus, Store, TracedDelivery, TracedMessage, now_ms};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt::Write;

/// The most messages one trace reads: a runaway chain is cut off, and says so.
pub const MAX_MESSAGES: u32 = 10_000;

/// One request's causal tree.
#[derive(Debug, Serialize, Deserialize)]
pub struct Trace {
    pub correlation_id: String,
    /// The causes outside the trace: the command (or commands) of the request.
    pub roots: Vec<Root>,
    /// Whether [`MAX_MESSAGES`] cut the trace short.
    pub truncated: bool,
}

/// A command of the request, known by the events its handler emitted.
#[derive(Debug, Serialize, Deserialize)]
pub struct Root {
    /// The command's id (the `causation_id` of the events it emitted).
    pub command_id: Option<String>,
    /// The plugin that handled it.
    pub handled_by: String,
    pub emitted: Vec<Node>,
}

/// A message and each subscriber's delivery of it.
#[derive(Debug, Serialize, Deserialize)]
pub struct Node {
    #[serde(flatten)]
    pub message: MessageFacts,
    pub deliveries: Vec<Branch>,
}

/// What a trace shows of a message.
#[derive(Debug, Serialize, Deserialize)]
pub struct MessageFacts {
    pub id: String,
    pub kind: String,
    pub partition_key: Option<String>,
    pub occurred_at_ms: i64,
    pub depth: u32,
    pub tenant_id: Option<String>,
    pub actor: Option<String>,
}

/// One delivery, and the messages its subscriber emitted while handling it.
#[derive(Debug, Serialize, Deserialize)]
pub struct Branch {
    #[serde(flatten)]
    pub delivery: TracedDelivery,
    pub emitted: Vec<Node>,
}

/// Why there is nothing to trace for `id`.
pub fn not_found(id: &str) -> String {
    format!(
        "no message has the correlation id `{id}`, and no message has it as its id: a command \
         that emitted no events leaves nothing to trace, and retention deletes the messages of \
         finished requests"
    )
}

impl Trace {
    /// The trace of the request whose correlation id is `id`, or else of the request of the
    /// message whose id is `id`; `None` when neither is stored.
    ///
    /// # Errors
    /// The database could not be read.
    pub async fn find(store: &Store, id: &str) -> anyhow::Result<Option<Self>> {
        let mut correlation_id = id.to_owned();
        let mut messages = store.trace(id, MAX_MESSAGES + 1).await?;
        if messages.is_empty()
            && let Some(of_message) = store.correlation_of(id).await?
        {
            messages = store.trace(&of_message, MAX_MESSAGES + 1).await?;
            correlation_id = of_message;
        }
        if messages.is_empty() {
            return Ok(None);
        }
        let truncated = messages.len() > MAX_MESSAGES as usize;
        messages.truncate(MAX_MESSAGES as usize);
        Ok(Some(Self::build(&correlation_id, messages, truncated)))
    }

    /// Builds the tree from `messages` (commit order) of `correlation_id`.
    pub fn build(correlation_id: &str, messages: Vec<TracedMessage>, truncated: bool) -> Self {
        let ids: std::collections::HashSet<String> =
            messages.iter().map(|m| m.id.clone()).collect();
        // Children by (cause, emitting plugin): a subscriber's emits hang under its delivery.
        let mut children: HashMap<(Option<String>, String), Vec<TracedMessage>> = HashMap::new();
        let mut roots: Vec<(Option<String>, String)> = Vec::new();
        for message in messages {
            let parent = (message.causation_id.clone(), message.emitted_by.clone());
            let is_root = message
                .causation_id
                .as_ref()
                .is_none_or(|cause| !ids.contains(cause));
            if is_root && !roots.contains(&parent) {
                roots.push(parent.clone());
            }
            children.entry(parent).or_default().push(message);
        }
        let roots = roots
            .into_iter()
            .map(|(command_id, handled_by)| {
                let emitted = take_nodes(&mut children, &command_id, &handled_by);
                Root {
                    command_id,
                    handled_by,
                    emitted,
                }
            })
            .collect();
        Self {
            correlation_id: correlation_id.to_owned(),
            roots,
            truncated,
        }
    }

    /// Every message in the tree.
    #[cfg(test)]
    fn message_count(&self) -> usize {
        fn count(nodes: &[Node]) -> usize {
            nodes
                .iter()
                .map(|n| {
                    1 + n
                        .deliveries
                        .iter()
                        .map(|b| count(&b.emitted))
                        .sum::<usize>()
                })
                .sum()
        }
        self.roots.iter().map(|r| count(&r.emitted)).sum()
    }

    /// The tree as indented text, times relative to the first message.
    pub fn render(&self) -> String {
        let start = self
            .roots
            .iter()
            .flat_map(|r| r.emitted.iter().map(|n| n.message.occurred_at_ms))
            .min()
            .unwrap_or(0);
        let mut out = format!("correlation {}\n", self.correlation_id);
        for root in &self.roots {
            let id = root.command_id.as_deref().unwrap_or("(no cause)");
            let _ = writeln!(out, "command {id}, handled by {}", root.handled_by);
            render_nodes(&mut out, &root.emitted, start, "");
        }
        if self.truncated {
            let _ = writeln!(out, "(cut off after {MAX_MESSAGES} messages)");
        }
        out
    }
}

fn take_nodes(
    children: &mut HashMap<(Option<String>, String), Vec<TracedMessage>>,
    cause: &Option<String>,
    emitted_by: &str,
) -> Vec<Node> {
    let messages = children
        .remove(&(cause.clone(), emitted_by.to_owned()))
        .unwrap_or_default();
    messages
        .into_iter()
        .map(|message| {
            let cause = Some(message.id.clone());
            let deliveries = message
                .deliveries
                .into_iter()
                .map(|delivery| {
                    let emitted = take_nodes(children, &cause, &delivery.subscriber);
                    Branch { delivery, emitted }
                })
                .collect();
            Node {
                message: MessageFacts {
                    id: message.id,
                    kind: message.kind,
                    partition_key: message.partition_key,
                    occurred_at_ms: message.occurred_at_ms,
                    depth: message.depth,
                    tenant_id: message.tenant_id,
                    actor: message.actor,
                },
                deliveries,
            }
        })
        .collect()
}

fn render_nodes(out: &mut String, nodes: &[Node], start: i64, indent: &str) {
    for (i, node) in nodes.iter().enumerate() {
        let last = i + 1 == nodes.len();
        let (branch, next) = if last {
            ("└─ ", "   ")
        } else {
            ("├─ ", "│  ")
        };
        let m = &node.message;
        let key = m
            .partition_key
            .as_deref()
            .map(|k| format!(" key {k}"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "{indent}{branch}{} {}{key}  +{} ms",
            m.kind,
            m.id,
            m.occurred_at_ms - start
        );
        let inner = format!("{indent}{next}");
        if node.deliveries.is_empty() {
            let _ = writeln!(out, "{inner}   (no delivery kept)");
        }
        for (j, b) in node.deliveries.iter().enumerate() {
            let last = j + 1 == node.deliveries.len();
            let (branch, next) = if last {
                ("└─ ", "   ")
            } else {
                ("├─ ", "│  ")
            };
            let _ = writeln!(
                out,
                "{inner}{branch}→ {}  {}",
                b.delivery.subscriber,
                delivery_summary(&b.delivery, start)
            );
            render_nodes(out, &b.emitted, start, &format!("{inner}{next}"));
        }
    }
}

/// One line about a delivery: status, attempts, when, and the last error when it failed.
fn delivery_summary(d: &TracedDelivery, start: i64) -> String {
    let attempts = match d.attempts {
        1 => "1 attempt".to_owned(),
        n => format!("{n} attempts"),
    };
    let mut line = match d.status {
        DeliveryStatus::Done => format!(
            "done, {attempts}, +{} ms",
            d.completed_at_ms.map_or(0, |at| at - start)
        ),
        DeliveryStatus::Dead => format!("DEAD, {attempts}"),
        // A scheduled event, not due yet.
        DeliveryStatus::Pending if d.attempts == 0 && d.next_attempt_at_ms > now_ms() => {
            format!("scheduled, due at +{} ms", d.next_attempt_at_ms - start)
        }
        DeliveryStatus::Pending if d.attempts == 0 => "pending, not run yet".to_owned(),
        DeliveryStatus::Pending => format!(
            "pending, {attempts}, next at +{} ms",
            d.next_attempt_at_ms - start
        ),
    };
    if let Some(by) = &d.handled_by {
        let _ = write!(line, " ({by})");
    }
    if d.status != DeliveryStatus::Done
        && let Some(error) = &d.last_error
    {
        let class = d.error_class.as_deref().unwrap_or("unknown");
        let first = d.first_failed_at_ms.map_or(0, |at| at - start);
        let last = d.last_failed_at_ms.map_or(0, |at| at - start);
        let _ = write!(
            line,
            "; {class} from +{first} to +{last} ms: {}",
            error.lines().next().unwrap_or_default()
        );
    }
    if d.status == DeliveryStatus::Dead {
        let _ = write!(line, "  [host bus replay {}]", d.id);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(id: &str, cause: Option<&str>, by: &str, subscribers: &[&str]) -> TracedMessage {
        TracedMessage {
            id: id.into(),
            kind: format!("k.{id}"),
            partition_key: None,
            causation_id: cause.map(str::to_owned),
            emitted_by: by.into(),
            occurred_at_ms: 1000,
            depth: 1,
            tenant_id: None,
            actor: None,
            deliveries: subscribers
                .iter()
                .enumerate()
                .map(|(i, s)| TracedDelivery {
                    id: i as i64,
                    subscriber: (*s).into(),
                    status: DeliveryStatus::Done,
                    attempts: 1,
                    next_attempt_at_ms: 1000,
                    error_class: None,
                    last_error: None,
                    first_failed_at_ms: None,
                    last_failed_at_ms: None,
                    completed_at_ms: Some(1005),
                    handled_by: None,
                })
                .collect(),
        }
    }

    #[test]
    fn a_pending_delivery_says_whether_it_waits_for_its_time_or_a_turn() {
        let mut delivery = message("a", None, "p", &["s"]).deliveries.remove(0);
        delivery.status = DeliveryStatus::Pending;
        delivery.attempts = 0;
        delivery.next_attempt_at_ms = now_ms() + 60_000;
        let start = now_ms();
        let scheduled = delivery_summary(&delivery, start);
        assert!(scheduled.starts_with("scheduled, due at +"), "{scheduled}");
        delivery.next_attempt_at_ms = start;
        assert_eq!(delivery_summary(&delivery, start), "pending, not run yet");
    }

    #[test]
    fn emits_hang_under_the_delivery_of_the_subscriber_that_made_them() {
        // The command c (plugin p) emits a, delivered to s and t; s emits b, t emits d.
        let trace = Trace::build(
            "c",
            vec![
                message("a", Some("c"), "p", &["s", "t"]),
                message("b", Some("a"), "s", &["u"]),
                message("d", Some("a"), "t", &[]),
            ],
            false,
        );
        assert_eq!(trace.roots.len(), 1);
        let root = &trace.roots[0];
        assert_eq!(
            (root.command_id.as_deref(), root.handled_by.as_str()),
            (Some("c"), "p")
        );
        let a = &root.emitted[0];
        assert_eq!(a.message.id, "a");
        let emitted_by = |i: usize| -> Vec<&str> {
            a.deliveries[i]
                .emitted
                .iter()
                .map(|n| n.message.id.as_str())
                .collect()
        };
        assert_eq!((emitted_by(0), emitted_by(1)), (vec!["b"], vec!["d"]));
        assert_eq!(trace.message_count(), 3);
        let text = trace.render();
        assert!(text.contains("command c, handled by p"), "{text}");
        assert!(text.contains("→ s  done, 1 attempt, +5 ms"), "{text}");
    }
}
