//! Loading and matching envoyproxy/ratelimit configurations: what the reference rejects is
//! rejected (naming the file, the path and the fix); what it matches, matches.

use super::{Source, rule_set};
use crate::{
    algorithm::Algorithm,
    rls::{Leaf, Unit, matching::find},
    rules::RuleSet,
};

fn load(yaml: &str) -> RuleSet {
    rule_set(&[source("test.yaml", yaml)]).unwrap_or_else(|err| panic!("{err}"))
}

fn source(name: &str, yaml: &str) -> Source {
    Source {
        name: name.to_owned(),
        text: yaml.to_owned(),
    }
}

/// Every problem of a rejected configuration, one per line.
fn rejected(yaml: &str) -> String {
    match rule_set(&[source("bad.yaml", yaml)]) {
        Ok(_) => panic!("accepted:\n{yaml}"),
        Err(err) => err.to_string(),
    }
}

/// The limit `entries` reach in `domain`: its rule's first limit (requests, window seconds),
/// `unlimited`, `blocked`, or `none`.
fn reach(set: &RuleSet, domain: &str, entries: &[(&str, &str)]) -> String {
    let Some(matched) = find(set.envoy(), domain, entries) else {
        return "none".into();
    };
    match matched.leaf {
        Leaf::Unlimited(_) => "unlimited".into(),
        Leaf::Blocked(_) => "blocked".into(),
        Leaf::Limited(limited) => {
            let limit = &set.rules()[limited.rule].limits[0];
            format!(
                "{}/{}s",
                limit.algorithm.limit(),
                limit.algorithm.policy_window_us() / 1_000_000
            )
        }
    }
}

#[test]
fn the_most_specific_entry_wins_and_a_bare_key_is_the_default() {
    // envoyproxy/ratelimit README, example 3.
    let set = load(
        "
domain: edge_proxy_per_ip
descriptors:
  - key: remote_address
    rate_limit:
      unit: second
      requests_per_unit: 10
  - key: remote_address
    value: 50.0.0.5
    rate_limit:
      unit: second
      requests_per_unit: 0
",
    );
    let domain = "edge_proxy_per_ip";
    assert_eq!(
        reach(&set, domain, &[("remote_address", "50.0.0.1")]),
        "10/1s"
    );
    assert_eq!(
        reach(&set, domain, &[("remote_address", "50.0.0.5")]),
        "blocked"
    );
    assert_eq!(reach(&set, domain, &[("other", "50.0.0.5")]), "none");
    assert_eq!(
        reach(&set, "unknown_domain", &[("remote_address", "1")]),
        "none"
    );
}

#[test]
fn a_limit_applies_only_at_the_requests_last_entry() {
    // README example 4.
    let shallow = load(
        "
domain: example4
descriptors:
  - key: key
    value: value
    rate_limit: {requests_per_unit: 300, unit: second}
",
    );
    let two = [("key", "value"), ("subkey", "subvalue")];
    assert_eq!(reach(&shallow, "example4", &two), "none");
    assert_eq!(reach(&shallow, "example4", &two[..1]), "300/1s");
    let nested = load(
        "
domain: example4
descriptors:
  - key: key
    value: value
    descriptors:
      - key: subkey
        rate_limit: {requests_per_unit: 300, unit: second}
",
    );
    assert_eq!(reach(&nested, "example4", &two), "300/1s");
    assert_eq!(reach(&nested, "example4", &two[..1]), "none");
    let three = [("key", "value"), ("subkey", "x"), ("deeper", "y")];
    assert_eq!(reach(&nested, "example4", &three), "none");
}

#[test]
fn nested_lists_and_units_match_the_readme() {
    // README example 2, with every unit.
    let set = load(
        "
domain: messaging
descriptors:
  - key: message_type
    value: marketing
    descriptors:
      - key: to_number
        rate_limit: {unit: day, requests_per_unit: 5}
  - key: to_number
    rate_limit: {unit: DAY, requests_per_unit: 100}
  - key: every
    descriptors:
      - {key: s, rate_limit: {unit: second, requests_per_unit: 1}}
      - {key: m, rate_limit: {unit: minute, requests_per_unit: 1}}
      - {key: h, rate_limit: {unit: hour, requests_per_unit: 1}}
      - {key: w, rate_limit: {unit: week, requests_per_unit: 1}}
      - {key: mo, rate_limit: {unit: month, requests_per_unit: 1}}
      - {key: y, rate_limit: {unit: year, requests_per_unit: 1}}
",
    );
    let marketing = [("message_type", "marketing"), ("to_number", "2061111111")];
    assert_eq!(reach(&set, "messaging", &marketing), "5/86400s");
    assert_eq!(reach(&set, "messaging", &marketing[1..]), "100/86400s");
    for (key, seconds) in [
        ("s", 1),
        ("m", 60),
        ("h", 3_600),
        ("w", 604_800),
        ("mo", 2_592_000),
        ("y", 31_536_000),
    ] {
        assert_eq!(
            reach(&set, "messaging", &[("every", "x"), (key, "v")]),
            format!("1/{seconds}s")
        );
    }
}

#[test]
fn wildcards_are_tried_in_configuration_order_after_the_exact_value() {
    // README example 9, plus an exact value beside the wildcards.
    let set = load(
        "
domain: example9
descriptors:
  - key: path
    value: /api/*/action
    rate_limit: {unit: minute, requests_per_unit: 20}
  - key: path
    value: /api/*
    rate_limit: {unit: minute, requests_per_unit: 30}
  - key: path
    value: /api/7/action
    rate_limit: {unit: minute, requests_per_unit: 40}
  - key: route
    value: /api/*/resource/*/action
    rate_limit: {unit: minute, requests_per_unit: 50}
",
    );
    let domain = "example9";
    assert_eq!(reach(&set, domain, &[("path", "/api/1/action")]), "20/60s");
    assert_eq!(reach(&set, domain, &[("path", "/api/1/other")]), "30/60s");
    assert_eq!(reach(&set, domain, &[("path", "/api/7/action")]), "40/60s");
    assert_eq!(
        reach(&set, domain, &[("route", "/api/v1/resource/9/action")]),
        "50/60s"
    );
    assert_eq!(reach(&set, domain, &[("route", "/api/v1/action")]), "none");
}

#[test]
fn unlimited_replaces_and_shadow_load_as_the_reference() {
    let set = load(
        "
domain: internal
descriptors:
  - key: ldap
    rate_limit: {unlimited: true}
  - key: azure
    shadow_mode: true
    rate_limit:
      unit: minute
      requests_per_unit: 100
      name: azure_limit
      replaces: [{name: other}]
",
    );
    assert_eq!(reach(&set, "internal", &[("ldap", "x")]), "unlimited");
    let matched = find(set.envoy(), "internal", &[("azure", "x")]).expect("azure matches");
    let Leaf::Limited(limited) = matched.leaf else {
        panic!("azure is limited");
    };
    assert_eq!(limited.named.name, "azure_limit");
    assert_eq!(limited.named.replaces, ["other"]);
    assert_eq!(limited.unit, Unit::Minute);
    assert!(set.rules()[limited.rule].shadow);
}

#[test]
fn a_shared_wildcard_names_one_bucket_for_every_value() {
    // README example 11.
    let set = load(
        "
domain: example11
descriptors:
  - key: files
    value: files/*
    share_threshold: true
    rate_limit: {unit: hour, requests_per_unit: 10}
  - key: files_no_share
    value: files_no_share/*
    rate_limit: {unit: hour, requests_per_unit: 10}
",
    );
    let shared = find(set.envoy(), "example11", &[("files", "files/a.pdf")]).unwrap();
    assert_eq!(shared.shared, [(0, "files/*")]);
    let own = find(
        set.envoy(),
        "example11",
        &[("files_no_share", "files_no_share/a")],
    )
    .unwrap();
    assert!(own.shared.is_empty());
}

#[test]
fn sluice_blocks_choose_the_algorithm_the_window_and_stacked_limits() {
    let set = load(
        "
domain: api
descriptors:
  - key: bucket
    rate_limit: {unit: second, requests_per_unit: 10}
    sluice: {algorithm: token_bucket}
  - key: five_minutes
    rate_limit: {unit: minute, requests_per_unit: 100}
    sluice: {algorithm: sliding_window_counter, window: 5m}
  - key: stacked
    rate_limit: {name: per_user}
    sluice:
      failure_mode: allow
      limits:
        - {name: per_second, algorithm: gcra, rate_per_second: 10, burst: 20}
        - {name: per_day, algorithm: fixed_window, limit: 1000, window: 1d}
  - key: alone
    sluice: {algorithm: sliding_window_log, limit: 3, window: 10s}
",
    );
    let rule_of = |key: &str| {
        let matched = find(set.envoy(), "api", &[(key, "v")]).expect("matches");
        let Leaf::Limited(limited) = matched.leaf else {
            panic!("{key} is limited");
        };
        (limited.clone(), set.rules()[limited.rule].clone())
    };
    let (bucket, rule) = rule_of("bucket");
    assert!(
        matches!(&rule.limits[0].algorithm, Algorithm::TokenBucket(a) if a.capacity() == 10 && a.refill_per_second() == 10.0)
    );
    assert_eq!(bucket.unit, Unit::Second);
    let (five, rule) = rule_of("five_minutes");
    assert_eq!(rule.limits[0].algorithm.policy_window_us(), 300_000_000);
    assert_eq!(five.unit, Unit::Minute);
    let (stacked, rule) = rule_of("stacked");
    assert_eq!(stacked.named.name, "per_user");
    assert_eq!(rule.limits.len(), 2);
    assert_eq!(rule.failure_mode, Some(crate::rules::FailureMode::Allow));
    let (_, rule) = rule_of("alone");
    assert_eq!(rule.limits[0].algorithm.name(), "sliding_window_log");
}

#[test]
fn configurations_the_reference_rejects_are_rejected_with_file_path_and_fix() {
    let cases: &[(&str, &[&str])] = &[
        ("descriptors: []", &["bad.yaml: domain", "empty domain"]),
        (
            "domain: d\ndescriptors:\n  - value: v\n",
            &["descriptors[0]", "empty key"],
        ),
        (
            "domain: d\ndescriptors:\n  - {key: k, value: v}\n  - {key: k, value: v}\n",
            &[
                "descriptors[1] (k_v)",
                "duplicate descriptor composite key `k_v`",
            ],
        ),
        (
            "domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unit: fortnight, requests_per_unit: 1}\n",
            &[
                "descriptors[0] (k).rate_limit.unit",
                "invalid rate limit unit `fortnight`",
            ],
        ),
        (
            "domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unlimited: true, unit: second}\n",
            &["descriptors[0] (k).rate_limit", "unlimited; remove `unit`"],
        ),
        (
            "domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unit: second, requests_per_unit: 1, name: a, replaces: [{name: a}]}\n",
            &["replaces[0]", "same descriptor"],
        ),
        (
            "domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unit: second, requests_per_unit: 1, replaces: [{}]}\n",
            &["replaces[0]", "empty replaces entry"],
        ),
        (
            "domain: d\ndescriptors:\n  - key: k\n    value: v\n    share_threshold: true\n",
            &["share_threshold", "wildcard"],
        ),
        (
            "domain: d\ndescriptors:\n  - key: k\n    rate_limits: {unit: second}\n",
            &["bad.yaml", "unknown field `rate_limits`"],
        ),
        (
            "domain: d\ndescriptors:\n  - key: k\n    descriptors:\n      - key: inner\n        rate_limit: {unit: second, requests_per_unit: 1, burst: 2}\n",
            &["bad.yaml", "unknown field `burst`"],
        ),
        (
            "domain: d\ndescriptors:\n  - key: k\n    sluice: {algorithm: leaky}\n",
            &[
                "descriptors[0] (k).sluice.algorithm",
                "unknown algorithm `leaky`",
            ],
        ),
        (
            "domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unit: second, requests_per_unit: 5}\n    sluice: {limits: [{name: a, algorithm: gcra, rate_per_second: 1, burst: 1}]}\n",
            &["descriptors[0] (k).rate_limit:", "sluice.limits"],
        ),
        ("domain: [a]\n", &["bad.yaml", "expected a string"]),
    ];
    for (yaml, expected) in cases {
        let message = rejected(yaml);
        for part in *expected {
            assert!(
                message.contains(part),
                "rejecting\n{yaml}\nsays\n{message}\nwithout `{part}`"
            );
        }
    }
}

#[test]
fn a_domain_configured_twice_is_rejected_naming_the_second_file() {
    let yaml = "domain: shared\ndescriptors: [{key: k, rate_limit: {unit: second, requests_per_unit: 1}}]\n";
    let err = rule_set(&[source("a.yaml", yaml), source("b.yaml", yaml)]).unwrap_err();
    let message = err.to_string();
    assert!(message.contains("b.yaml: domain"), "{message}");
    assert!(message.contains("duplicate domain `shared`"), "{message}");
}

#[test]
fn scalar_values_read_as_text_as_the_reference_reads_them() {
    let set = load(
        "
domain: 42
descriptors:
  - key: status
    value: 200
    rate_limit: {unit: second, requests_per_unit: 3}
  - key: flag
    value: true
    rate_limit: {unit: second, requests_per_unit: 4}
",
    );
    assert_eq!(reach(&set, "42", &[("status", "200")]), "3/1s");
    assert_eq!(reach(&set, "42", &[("flag", "true")]), "4/1s");
}
