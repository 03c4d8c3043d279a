//! The [`Plugin`] trait an author implements, and [`PluginInfo`], what it declares it handles.

use crate::bindings::handler_host::plugin::types as wit;
use crate::{HandlerError, Message, Reply};

/// A plugin: what it handles, and a handler per message class.
///
/// The host asks for [`Plugin::info`] when it loads the component and routes to the plugin only
/// the kinds declared there. Implement the handlers for the classes you declared; the others
/// keep their default, which rejects the message, naming the plugin and the kind.
///
/// Each call handles one message inside one unit of work: the state writes and events of the
/// call commit together when it returns `Ok`, and are thrown away when it returns `Err` or
/// panics. The functions take no `self` because nothing survives between calls except what is
/// in [`state`](crate::state).
///
/// Export the implementation with [`export_plugin!`](crate::export_plugin).
pub trait Plugin {
    /// The plugin's name and version and the kinds it handles.
    fn info() -> PluginInfo;

    /// Handles a command of a kind listed by [`PluginInfo::command`]; the reply goes back to the
    /// caller.
    ///
    /// # Errors
    /// The [`HandlerError`] decides what the host does: `Rejected` answers the caller with 422,
    /// `Retryable` and `Permanent` with a server error.
    fn handle_command(command: Message) -> Result<Reply, HandlerError> {
        Err(not_handled(&Self::info(), "command", &command))
    }

    /// Handles an event matching a pattern listed by [`PluginInfo::event`].
    ///
    /// # Errors
    /// `Rejected` is never retried, `Retryable` is retried with backoff and then dead-lettered,
    /// `Permanent` is dead-lettered at once.
    fn handle_event(event: Message) -> Result<(), HandlerError> {
        Err(not_handled(&Self::info(), "event", &event))
    }

    /// Answers a query of a kind listed by [`PluginInfo::query`]. A query may read
    /// [`state`](crate::state) but not write it or emit events.
    ///
    /// # Errors
    /// As for [`Plugin::handle_command`].
    fn handle_query(query: Message) -> Result<Reply, HandlerError> {
        Err(not_handled(&Self::info(), "query", &query))
    }
}

/// The rejection of a message the plugin has no handler for: the host only routes declared
/// kinds, so this means `info()` lists a kind whose handler was not written.
fn not_handled(info: &PluginInfo, class: &str, message: &Message) -> HandlerError {
    HandlerError::rejected(format!(
        "plugin `{}` does not handle {class} `{}`",
        info.name,
        message.kind()
    ))
}

/// What a plugin is and which message kinds it handles, built with chained calls:
///
/// ```
/// use handler_host_sdk::PluginInfo;
///
/// let info = PluginInfo::new("inventory", "0.1.0")
///     .command("stock.add")
///     .schema("stock.add", serde_json::json!({
///         "type": "object",
///         "required": ["sku", "qty"],
///         "properties": {"sku": {"type": "string"}, "qty": {"type": "integer", "minimum": 1}}
///     }))
///     .event("order.placed")
///     .query("stock.get");
/// assert_eq!(info.events(), ["order.placed"]);
/// assert_eq!(info.schemas()[0].0, "stock.add");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginInfo {
    name: String,
    version: String,
    commands: Vec<String>,
    events: Vec<String>,
    queries: Vec<String>,
    schemas: Vec<(String, String)>,
}

impl PluginInfo {
    /// A plugin called `name` at `version` (usually `env!("CARGO_PKG_VERSION")`) that handles
    /// nothing yet.
    pub fn new(name: impl Into<String>, version: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            version: version.into(),
            commands: Vec::new(),
            events: Vec::new(),
            queries: Vec::new(),
            schemas: Vec::new(),
        }
    }

    /// Handles commands of `kind`, e.g. `order.place`. A command kind belongs to one plugin.
    #[must_use = "the builder returns the updated info; use it"]
    pub fn command(mut self, kind: impl Into<String>) -> Self {
        self.commands.push(kind.into());
        self
    }

    /// Subscribes to events matching `pattern`: an exact kind (`order.placed`), a prefix
    /// (`order.*`) or everything (`*`).
    #[must_use = "the builder returns the updated info; use it"]
    pub fn event(mut self, pattern: impl Into<String>) -> Self {
        self.events.push(pattern.into());
        self
    }

    /// Answers queries of `kind`, e.g. `order.get`. A query kind belongs to one plugin.
    #[must_use = "the builder returns the updated info; use it"]
    pub fn query(mut self, kind: impl Into<String>) -> Self {
        self.queries.push(kind.into());
        self
    }

    /// Declares the JSON Schema the payloads of `kind` must match: a command or query this
    /// plugin handles (the host answers one that does not match 422, naming the failing path,
    /// before the handler runs) or an event it emits (a handler that emits one that does not
    /// match fails as `permanent`). References resolve within the schema only.
    #[must_use = "the builder returns the updated info; use it"]
    pub fn schema(mut self, kind: impl Into<String>, schema: serde_json::Value) -> Self {
        self.schemas.push((kind.into(), schema.to_string()));
        self
    }

    /// The plugin's name, which the host uses in its logs, metrics and admin surface.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The plugin's version.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The command kinds, in the order they were added.
    pub fn commands(&self) -> &[String] {
        &self.commands
    }

    /// The event patterns, in the order they were added.
    pub fn events(&self) -> &[String] {
        &self.events
    }

    /// The query kinds, in the order they were added.
    pub fn queries(&self) -> &[String] {
        &self.queries
    }

    /// The declared schemas as (kind, JSON text), in the order they were added.
    pub fn schemas(&self) -> &[(String, String)] {
        &self.schemas
    }
}

impl From<PluginInfo> for wit::PluginInfo {
    fn from(info: PluginInfo) -> Self {
        Self {
            name: info.name,
            version: info.version,
            commands: info.commands,
            events: info.events,
            queries: info.queries,
            schemas: info
                .schemas
                .into_iter()
                .map(|(kind, schema)| wit::PayloadSchema { kind, schema })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::tests::message;

    struct Declares;

    impl Plugin for Declares {
        fn info() -> PluginInfo {
            PluginInfo::new("declares", "1.2.3")
                .command("a.do")
                .query("a.get")
        }
    }

    #[test]
    fn builder_keeps_every_kind_in_order() {
        let info = PluginInfo::new("p", "1")
            .command("c.1")
            .command("c.2")
            .event("e.*")
            .query("q.1");
        assert_eq!(info.name(), "p");
        assert_eq!(info.version(), "1");
        assert_eq!(info.commands(), ["c.1", "c.2"]);
        assert_eq!(info.events(), ["e.*"]);
        assert_eq!(info.queries(), ["q.1"]);
        let info = info.schema("c.1", serde_json::json!({"type": "object"}));
        let wit: wit::PluginInfo = info.into();
        assert_eq!(wit.schemas.len(), 1);
        assert_eq!(wit.schemas[0].kind, "c.1");
        assert_eq!(wit.schemas[0].schema, r#"{"type":"object"}"#);
    }

    #[test]
    fn default_handlers_reject_naming_the_plugin_and_kind() {
        let error = Declares::handle_command(message("a.do", "{}")).unwrap_err();
        assert_eq!(
            error,
            HandlerError::rejected("plugin `declares` does not handle command `a.do`")
        );
        let error = Declares::handle_event(message("b.done", "{}")).unwrap_err();
        assert_eq!(
            error,
            HandlerError::rejected("plugin `declares` does not handle event `b.done`")
        );
        let error = Declares::handle_query(message("a.get", "{}")).unwrap_err();
        assert_eq!(
            error,
            HandlerError::rejected("plugin `declares` does not handle query `a.get`")
        );
    }
}
