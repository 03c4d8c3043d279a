//! The store's conformance suite: every test runs on SQLite and on PostgreSQL (a fresh
//! database each), so the two backends keep the same semantics.

mod deliveries;
mod runs;
mod state;
mod two_hosts;

use super::test_support::on_every_backend;
use deliveries::*;
use runs::*;
use state::*;

on_every_backend!(
    a_stale_read_conflicts_alone_and_the_rest_of_the_batch_commits,
    a_delete_leaves_a_tombstone_with_a_new_version,
    state_is_namespaced_by_plugin,
    an_idempotency_key_is_taken_once_until_it_expires,
    a_delivery_commits_its_effects_once,
    a_dead_letter_holds_back_its_key_until_replayed,
    skip_parks_a_failed_delivery_and_strict_does_not,
    a_scheduled_event_is_not_due_before_its_time_and_holds_nothing_back,
    replay_all_and_stats_follow_the_filters,
    an_empty_value_is_not_a_tombstone,
    a_large_mixed_batch_commits_in_order,
    an_event_keeps_its_depth_and_its_cause_is_readable,
    the_backlog_counts_each_subscribers_unfinished_deliveries,
    a_hot_keys_deliveries_are_claimed_as_one_run_in_order,
    a_run_stops_before_a_delivery_that_failed_before,
    a_chained_write_commits_only_after_the_one_before_it,
);
