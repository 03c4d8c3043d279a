//! Every loaded plugin, and who owns or subscribes to which kind.
//!
//! Exactly one plugin owns a command kind or query kind; a second claimant is refused with an
//! error naming both. Any number of plugins subscribe to an event kind, by exact kind or by a
//! pattern in which `*` matches any run of characters (`order.*`, `*`).

use crate::plugin::{LoadError, Plugin};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// The routing table of a running host: an immutable snapshot. A change to the plugins makes
/// a new registry that replaces this one whole (see [`crate::plugin_dir`]); a call that took
/// a plugin from the old snapshot finishes on it.
#[derive(Clone, Default)]
pub struct Registry {
    plugins: BTreeMap<String, Arc<Plugin>>,
    commands: HashMap<String, Arc<Plugin>>,
    queries: HashMap<String, Arc<Plugin>>,
    /// (pattern, subscriber)
    subscriptions: Vec<(String, String)>,
    /// Why entries of the plugins folder are not among the plugins.
    load_errors: Vec<LoadError>,
}

impl Registry {
    /// Registers a plugin, refusing it whole when its name or any kind it owns is taken.
    ///
    /// # Errors
    /// A [`LoadError`] naming the plugin's file and the plugin that already holds the name or kind.
    pub fn add(&mut self, plugin: Arc<Plugin>) -> Result<(), LoadError> {
        let refuse = |cause: String| Err(LoadError::new(plugin.source(), cause));
        if let Some(other) = self.plugins.get(plugin.name()) {
            return refuse(format!(
                "a plugin named `{}` is already loaded from {}",
                plugin.name(),
                other.source().display()
            ));
        }
        for (what, kinds, owners) in [
            ("command", &plugin.info().commands, &self.commands),
            ("query", &plugin.info().queries, &self.queries),
        ] {
            for kind in kinds {
                if let Some(owner) = owners.get(kind) {
                    return refuse(format!(
                        "plugin `{}` claims {what} `{kind}`, which plugin `{}` ({}) already owns",
                        plugin.name(),
                        owner.name(),
                        owner.source().display()
                    ));
                }
            }
        }
        let name = plugin.name().to_owned();
        for kind in &plugin.info().commands {
            self.commands.insert(kind.clone(), plugin.clone());
        }
        for kind in &plugin.info().queries {
            self.queries.insert(kind.clone(), plugin.clone());
        }
        for pattern in &plugin.info().events {
            self.subscriptions.push((pattern.clone(), name.clone()));
        }
        self.plugins.insert(name, plugin);
        Ok(())
    }

    /// This registry without the plugin named `name` (unchanged when there is none).
    #[must_use]
    pub fn without(&self, name: &str) -> Self {
        let mut rest = Self {
            load_errors: self.load_errors.clone(),
            ..Self::default()
        };
        for plugin in self.plugins.values().filter(|p| p.name() != name) {
            rest.add(plugin.clone())
                .expect("a subset of a consistent registry is consistent");
        }
        rest
    }

    /// This registry with `plugin` in place of the plugin named `replacing` (the previous
    /// version from the same file), or why `plugin` cannot join: this registry is left as it is.
    ///
    /// # Errors
    /// The [`LoadError`] of [`Registry::add`].
    pub fn with(&self, plugin: Arc<Plugin>, replacing: Option<&str>) -> Result<Self, LoadError> {
        let mut next = match replacing {
            Some(old) => self.without(old),
            None => self.clone(),
        };
        next.add(plugin)?;
        Ok(next)
    }

    /// Records why entries of the plugins folder did not load.
    pub fn set_load_errors(&mut self, errors: Vec<LoadError>) {
        self.load_errors = errors;
    }

    /// Why entries of the plugins folder are not among the plugins.
    pub fn load_errors(&self) -> &[LoadError] {
        &self.load_errors
    }

    /// The plugin that owns command `kind`; `None` when no loaded plugin handles it.
    pub fn command_owner(&self, kind: &str) -> Option<&Arc<Plugin>> {
        self.commands.get(kind)
    }

    /// The plugin that owns query `kind`; `None` when no loaded plugin handles it.
    pub fn query_owner(&self, kind: &str) -> Option<&Arc<Plugin>> {
        self.queries.get(kind)
    }

    /// The loaded plugin named `name`, if any.
    pub fn plugin(&self, name: &str) -> Option<&Arc<Plugin>> {
        self.plugins.get(name)
    }

    /// Every loaded plugin, in name order.
    pub fn plugins(&self) -> impl Iterator<Item = &Arc<Plugin>> {
        self.plugins.values()
    }

    /// The names of the loaded plugins, in order.
    pub fn names(&self) -> Vec<String> {
        self.plugins.keys().cloned().collect()
    }

    /// The plugins subscribed to `kind`, each once, in name order.
    pub fn subscribers(&self, kind: &str) -> Vec<String> {
        let mut names: Vec<String> = self
            .subscriptions
            .iter()
            .filter(|(pattern, _)| pattern_matches(pattern, kind))
            .map(|(_, name)| name.clone())
            .collect();
        names.sort();
        names.dedup();
        names
    }
}

/// Glob match where `*` stands for any run of characters (dots included).
pub fn pattern_matches(pattern: &str, kind: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = kind.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty(); // no `*`: exact match
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::pattern_matches;

    #[test]
    fn patterns() {
        assert!(pattern_matches("order.placed", "order.placed"));
        assert!(!pattern_matches("order.placed", "order.placed2"));
        assert!(pattern_matches("order.*", "order.placed"));
        assert!(pattern_matches("order.*", "order.a.b"));
        assert!(!pattern_matches("order.*", "orders.placed"));
        assert!(!pattern_matches("order.*", "stock.reserved"));
        assert!(pattern_matches("*", "anything"));
        assert!(pattern_matches("*.placed", "order.placed"));
        assert!(!pattern_matches("*.placed", "order.placed.x"));
        assert!(pattern_matches("a*b*c", "a-b-c"));
        assert!(!pattern_matches("a*b*c", "a-c-b"));
        assert!(!pattern_matches("ab*ba", "aba"));
    }
}
