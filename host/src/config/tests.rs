//! The configuration file read, resolved and refused, key by key.

use super::*;

fn parse(text: &str) -> anyhow::Result<HostConfig> {
    HostConfig::parse(text, |_| Ok(()))
}

fn error(text: &str) -> String {
    format!("{:#}", parse(text).expect_err("the config must be refused"))
}

#[test]
fn no_file_and_an_empty_file_give_the_defaults() {
    let empty = parse("").unwrap();
    assert_eq!(empty, HostConfig::default());
    assert_eq!(*empty.policy("anyone"), PluginPolicy::DEFAULT);
    assert_eq!(
        HostConfig::without_file(|_| Ok(())).unwrap(),
        HostConfig::default()
    );
}

#[test]
fn default_dead_letter_classes_are_those_not_worth_a_retry() {
    let set = PluginPolicy::DEFAULT.dead_letter_at_once;
    for class in ErrorClass::ALL {
        assert_eq!(set.contains(class), !class.is_retried(), "{class}");
    }
}

#[test]
fn a_plugin_section_overrides_the_defaults_field_by_field() {
    let config = parse(
        r#"
        [defaults]
        call_deadline = "2s"
        retry = { max_attempts = 7, initial_delay = "50ms" }

        [plugins.billing]
        ordering = "skip"
        memory_mib = 16
        calls_per_instance = 500
        max_causal_depth = 5
        dead_letter_at_once = ["permanent"]
        retry = { max_attempts = 3, jitter = 0.0 }

        [idempotency]
        ttl = "1h"
        ttl_by_kind = { "order.place" = "10m" }

        [retention]
        delivered = "1d"
        batch_size = 10
        interval = "30s"
        "#,
    )
    .unwrap();
    assert_eq!(config.defaults.retry.max_attempts, 7);
    assert_eq!(config.defaults.ordering, Ordering::Strict);
    let billing = config.policy("billing");
    assert_eq!(billing.ordering, Ordering::Skip);
    assert_eq!(billing.retry.max_attempts, 3);
    assert_eq!(billing.retry.jitter, 0.0);
    // Inherited from [defaults], not from the built-in defaults.
    assert_eq!(billing.retry.initial_delay, Duration::from_millis(50));
    assert_eq!(billing.limits.call_deadline, Duration::from_secs(2));
    assert_eq!(billing.limits.memory_bytes, 16 << 20);
    assert_eq!(billing.limits.calls_per_instance, 500);
    assert_eq!(billing.max_causal_depth, 5);
    assert_eq!(config.policy("other").max_causal_depth, 32);
    assert_eq!(config.policy("other").limits.calls_per_instance, 1);
    assert!(billing.dead_letter_at_once.contains(ErrorClass::Permanent));
    assert!(!billing.dead_letter_at_once.contains(ErrorClass::Deadline));
    assert!(billing.is_dead(ErrorClass::Permanent, 1));
    assert!(!billing.is_dead(ErrorClass::Deadline, 2));
    assert!(billing.is_dead(ErrorClass::Deadline, 3));
    assert_eq!(config.policy("other").retry.max_attempts, 7);
    assert_eq!(
        config.idempotency.ttl_for("order.place"),
        Duration::from_secs(600)
    );
    assert_eq!(
        config.idempotency.ttl_for("order.cancel"),
        Duration::from_secs(3600)
    );
    assert_eq!(config.retention.delivered, Duration::from_secs(86_400));
    assert_eq!(config.retention.batch_size, 10);
}

#[test]
fn a_loop_is_dead_at_once_whatever_the_configured_classes() {
    let policy = PluginPolicy {
        dead_letter_at_once: ClassSet::EMPTY,
        ..PluginPolicy::DEFAULT
    };
    assert!(policy.is_dead(ErrorClass::Loop, 1));
    assert!(!policy.is_dead(ErrorClass::Permanent, 1));
}

#[test]
fn command_line_overrides_apply_to_the_defaults_under_the_plugin_sections() {
    let config = HostConfig::parse("[plugins.a]\nretry = { max_attempts = 2 }", |defaults| {
        defaults.retry.max_attempts = 9;
        Ok(())
    })
    .unwrap();
    assert_eq!(config.defaults.retry.max_attempts, 9);
    assert_eq!(config.policy("a").retry.max_attempts, 2);
}

#[test]
fn unknown_keys_are_refused_by_name() {
    assert!(error("[defaults]\nretries = 3").contains("retries"));
    assert!(error("[plugins.a]\nretry = { attempts = 3 }").contains("attempts"));
    assert!(error("[bogus]\nx = 1").contains("bogus"));
    assert!(error("[retention]\nkeep = \"1d\"").contains("keep"));
}

#[test]
fn bad_values_are_refused_naming_the_key() {
    let cases = [
        ("[plugins.a]\nordering = \"random\"", "plugins.a.ordering"),
        (
            "[defaults]\ncall_deadline = \"5\"",
            "defaults.call_deadline",
        ),
        (
            "[defaults]\ncall_deadline = \"0s\"",
            "defaults.call_deadline",
        ),
        ("[plugins.a]\nmemory_mib = 0", "plugins.a.memory_mib"),
        ("[plugins.a]\nmemory_mib = 4097", "plugins.a.memory_mib"),
        (
            "[plugins.a]\ncalls_per_instance = 0",
            "plugins.a.calls_per_instance",
        ),
        (
            "[plugins.a]\nmax_causal_depth = 0",
            "plugins.a.max_causal_depth",
        ),
        (
            "[plugins.a]\ndead_letter_at_once = [\"fatal\"]",
            "plugins.a.dead_letter_at_once",
        ),
        (
            "[plugins.a]\nretry = { jitter = 1.5 }",
            "plugins.a.retry.jitter",
        ),
        (
            "[defaults]\nretry = { multiplier = 0.5 }",
            "defaults.retry.multiplier",
        ),
        (
            "[plugins.a]\nretry = { max_attempts = 0 }",
            "plugins.a.retry.max_attempts",
        ),
        (
            "[plugins.a]\nretry = { initial_delay = \"1m\", max_delay = \"1s\" }",
            "plugins.a.retry.initial_delay",
        ),
        ("[idempotency]\nttl = \"0h\"", "idempotency.ttl"),
        (
            "[idempotency]\nttl_by_kind = { \"a.b\" = \"soon\" }",
            "idempotency.ttl_by_kind.\"a.b\"",
        ),
        ("[retention]\nbatch_size = 0", "retention.batch_size"),
    ];
    for (text, key) in cases {
        let message = error(text);
        assert!(
            message.contains(&format!("`{key}`")),
            "{text:?} → {message}"
        );
    }
    // A wrong type is caught by the TOML reader, which shows the line and the key.
    assert!(error("[plugins.a]\nmemory_mib = \"lots\"").contains("memory_mib"));
}

#[test]
fn durations_parse_and_print_exactly() {
    for (text, ms) in [
        ("0ms", 0),
        ("250ms", 250),
        ("5s", 5_000),
        ("2m", 120_000),
        ("24h", 86_400_000),
        ("7d", 604_800_000),
        ("1h 30m", 5_400_000),
        (" 2days ", 172_800_000),
    ] {
        let duration = parse_duration("k", text).unwrap();
        assert_eq!(duration, Duration::from_millis(ms), "{text}");
        let printed = format_duration(duration);
        assert_eq!(
            parse_duration("k", &printed).unwrap(),
            duration,
            "{printed}"
        );
    }
    assert_eq!(format_duration(Duration::from_millis(1500)), "1s 500ms");
    assert_eq!(format_duration(Duration::from_secs(90)), "1m 30s");
    for bad in ["", "5", "s", "-1s", "5 parsecs", "99999999999999999999d"] {
        assert!(parse_duration("k", bad).is_err(), "{bad:?}");
    }
}

#[test]
fn backpressure_is_on_by_default_and_its_resume_mark_follows_the_bound() {
    assert_eq!(parse("").unwrap().backpressure, BackpressureConfig::DEFAULT);
    assert_eq!(
        BackpressureConfig::DEFAULT,
        BackpressureConfig {
            max_due: 100_000,
            resume_at: 80_000
        }
    );
    let set = parse("[backpressure]\nmax_due = 20").unwrap().backpressure;
    assert_eq!((set.max_due, set.resume_at), (20, 16));
    for bound in [1, 2, 3, 4, 5, 7, 1_000] {
        let mark = BackpressureConfig::bounded_at(bound).resume_at;
        assert!(mark < bound, "{bound} → {mark}");
    }
    let both = parse("[backpressure]\nmax_due = 50\nresume_at = 10")
        .unwrap()
        .backpressure;
    assert_eq!((both.max_due, both.resume_at), (50, 10));
    let off = parse("[backpressure]\nmax_due = 0").unwrap().backpressure;
    assert!(!off.is_on());
    assert_eq!(off, BackpressureConfig::OFF);
}

#[test]
fn a_new_bound_from_the_command_line_takes_its_own_resume_mark() {
    let file = parse("[backpressure]\nmax_due = 1000\nresume_at = 900")
        .unwrap()
        .backpressure;
    let keys = ["--max-due", "--resume-at"];
    assert_eq!(file.over(None, None, keys).unwrap(), file);
    assert_eq!(
        file.over(Some(20), None, keys).unwrap(),
        BackpressureConfig::bounded_at(20)
    );
    let marked = file.over(None, Some(500), keys).unwrap();
    assert_eq!((marked.max_due, marked.resume_at), (1000, 500));
    let error = file.over(Some(20), Some(20), keys).unwrap_err();
    assert_eq!(error.key, "--resume-at");
    assert_eq!(
        file.over(Some(0), Some(5), keys).unwrap_err().key,
        "--resume-at"
    );
}

#[test]
fn bad_backpressure_values_are_refused_naming_the_key() {
    for (text, key) in [
        (
            "[backpressure]\nmax_due = 10\nresume_at = 10",
            "backpressure.resume_at",
        ),
        (
            "[backpressure]\nmax_due = 0\nresume_at = 1",
            "backpressure.resume_at",
        ),
        (
            "[backpressure]\nresume_at = 100000",
            "backpressure.resume_at",
        ),
        (
            "[backpressure]\nmax_due = 1000000001",
            "backpressure.max_due",
        ),
    ] {
        let message = error(text);
        assert!(
            message.contains(&format!("`{key}`")),
            "{text:?} → {message}"
        );
    }
    assert!(error("[backpressure]\nmax = 1").contains("max"));
    assert!(error("[backpressure]\nmax_due = -1").contains("max_due"));
}
