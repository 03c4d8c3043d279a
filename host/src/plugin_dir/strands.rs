//! Changes a running host refuses because they would strand work: a plugin version or a
//! removal that leaves pending or dead-lettered deliveries without a handler.

use super::PluginDir;
use crate::registry::Registry;
use crate::store::Store;
use std::collections::BTreeMap;

/// What a running host does with a change of the folder that would leave pending or
/// dead-lettered deliveries without a handler.
#[derive(Clone)]
pub struct Strands {
    /// Where the deliveries are.
    pub store: Store,
    /// Refuse the change (the default), or only warn (`--allow-stranding`).
    pub refuse: bool,
}

impl PluginDir {
    /// Checks from now on each change against the deliveries waiting (see [`Strands`]).
    pub fn check_strands(&mut self, strands: Strands) {
        self.strands = Some(strands);
    }

    /// Why `change` is refused: serving `next` in place of `current` would leave `plugin`'s
    /// pending or dead deliveries of some kinds without a handler. `None` when it strands
    /// nothing, or when stranding is allowed (then it is logged).
    pub(super) async fn stranding(
        &self,
        plugin: &str,
        current: &Registry,
        next: &Registry,
        change: &str,
    ) -> Option<String> {
        let strands = self.strands.as_ref()?;
        let rows = match strands.store.unfinished_by_kind(plugin).await {
            Ok(rows) => rows,
            Err(error) => {
                return Some(format!(
                    "{change} is refused: cannot check `{plugin}`'s waiting deliveries: {error:#}"
                ));
            }
        };
        let handles = |registry: &Registry, kind: &str| {
            registry.subscribers(kind).iter().any(|name| name == plugin)
        };
        let mut stranded = BTreeMap::<String, (i64, i64)>::new();
        for (kind, status, count) in rows {
            if handles(current, &kind) && !handles(next, &kind) {
                let counts = stranded.entry(kind).or_default();
                match status.as_str() {
                    "pending" => counts.0 += count,
                    _ => counts.1 += count,
                }
            }
        }
        if stranded.is_empty() {
            return None;
        }
        let kinds: Vec<String> = stranded
            .iter()
            .map(|(kind, (pending, dead))| format!("{kind} ({pending} pending, {dead} dead)"))
            .collect();
        let what = format!(
            "{change} would leave deliveries to `{plugin}` without a handler: {}",
            kinds.join(", ")
        );
        if !strands.refuse {
            tracing::warn!("{what}; allowed by --allow-stranding");
            return None;
        }
        Some(format!(
            "{what}. Refused: let them finish, or purge the dead letters (`host bus purge \
             --subscriber {plugin} --force`), then change the folder again; or run the host \
             with --allow-stranding"
        ))
    }
}
