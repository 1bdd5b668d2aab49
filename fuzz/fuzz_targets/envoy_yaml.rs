//! envoyproxy/ratelimit's YAML, as `[envoy] config_paths` loads it: rules or named issues.
#![no_main]

use sluice::config::envoy_yaml::{Source, rule_set};

libfuzzer_sys::fuzz_target!(|text: &str| {
    let _ = rule_set(&[Source {
        name: "fuzz.yaml".to_owned(),
        text: text.to_owned(),
    }]);
});
