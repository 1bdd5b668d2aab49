use super::*;
use crate::algorithm::Algorithm;
use crate::rules::FailureMode;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, "test", &Overrides::default())
}

fn issue_paths(text: &str) -> Vec<String> {
    parse(text)
        .expect_err("config should be rejected")
        .issues()
        .iter()
        .map(|issue| issue.path.clone())
        .collect()
}

#[test]
fn builtin_and_example_configs_are_valid() {
    let builtin = Config::load(None, &Overrides::default()).unwrap();
    assert!(builtin.rules.has_default());
    assert_eq!(builtin.server.grpc_addr.to_string(), DEFAULT_GRPC_ADDR);
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config/sluice.example.toml");
    let config = Config::load(Some(Path::new(example)), &Overrides::default()).unwrap();
    let login = config.rules.resolve("login", "someone").unwrap();
    assert_eq!(login.name, "login");
    assert_eq!(
        config.rules.resolve("login", "internal-sso").unwrap().name,
        "login-internal"
    );
    assert_eq!(
        config.rules.resolve("unlisted", "k").unwrap().name,
        "default"
    );
    let exports = config.rules.resolve("exports", "k").unwrap();
    assert_eq!(exports.concurrency.unwrap().max_in_flight(), 2);
}

#[test]
fn reports_every_problem_with_its_path() {
    let paths = issue_paths(
        r#"
        [server]
        grpc_addr = "not-an-address"
        [limits]
        max_key_bytes = 0
        [backend]
        kind = "etcd"
        [backend.memory]
        shards = 3
        [default_rule]
        algorithm = "leaky"
        [rules.a]
        algorithm = "token_bucket"
        capacity = 0
        refill_per_second = -1.0
        [rules.b]
        algorithm = "fixed_window"
        limit = 10
        window = "10 minutes"
        capacity = 3
        "#,
    );
    assert_eq!(
        paths,
        [
            "server.grpc_addr",
            "limits.max_key_bytes",
            "backend.kind",
            "backend.memory.shards",
            "default_rule.algorithm",
            "rules.a.capacity",
            "rules.a.refill_per_second",
            "rules.b.capacity",
            "rules.b.window",
        ]
    );
}

#[test]
fn messages_say_how_to_fix() {
    let err = parse("[rules.r]\nalgorithm = \"gcra\"\nrate_per_second = 5\n").unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("rules.r.burst: missing; gcra needs rate_per_second and burst"),
        "{text}"
    );
}

#[test]
fn no_rules_is_an_error() {
    assert_eq!(issue_paths("[server]\n"), ["rules"]);
}

#[test]
fn overrides_need_unique_keys_and_names() {
    let paths = issue_paths(
        r#"
        [rules.r]
        algorithm = "fixed_window"
        limit = 1
        window = "1s"
        [[rules.r.overrides]]
        key = "k"
        name = "r"
        algorithm = "fixed_window"
        limit = 2
        window = "1s"
        [[rules.r.overrides]]
        key = "k"
        algorithm = "fixed_window"
        limit = 3
        window = "1s"
        [[rules.r.overrides]]
        algorithm = "fixed_window"
        limit = 3
        window = "1s"
        "#,
    );
    assert_eq!(
        paths,
        [
            "rules.r.overrides[0].name",
            "rules.r.overrides[1].key",
            "rules.r.overrides[2].key"
        ]
    );
}

#[test]
fn rates_too_slow_for_exact_arithmetic_are_rejected() {
    let paths = issue_paths(
        "[rules.t]\nalgorithm = \"token_bucket\"\ncapacity = 1000000000\nrefill_per_second = 0.001\n",
    );
    assert_eq!(paths, ["rules.t.refill_per_second"]);
    let paths = issue_paths(
        "[rules.s]\nalgorithm = \"sliding_window_counter\"\nlimit = 1000000000\nwindow = \"366d\"\n",
    );
    assert_eq!(paths, ["rules.s.limit"]);
}

#[test]
fn syntax_and_unknown_fields_are_parse_errors() {
    let err = parse("[default_rule\n").unwrap_err();
    assert!(matches!(err, ConfigError::Parse { .. }), "{err}");
    let err = parse("[default_rule]\nalgorithm = \"gcra\"\nrate = 5\n").unwrap_err();
    assert!(err.to_string().contains("unknown field `rate`"), "{err}");
}

#[test]
fn overrides_win_over_the_file() {
    let text = "[server]\ngrpc_addr = \"127.0.0.1:1\"\n[default_rule]\nalgorithm = \"gcra\"\nrate_per_second = 1\nburst = 1\n";
    let overrides = Overrides {
        grpc_addr: Some("127.0.0.1:2".into()),
        max_keys: Some(128),
        ..Overrides::default()
    };
    let config = Config::parse(text, "test", &overrides).unwrap();
    assert_eq!(config.server.grpc_addr.port(), 2);
    assert_eq!(
        config.backend,
        BackendConfig::Memory(MemoryConfig {
            shards: 64,
            max_keys: 128,
            full_policy: crate::config::FullPolicy::Evict,
            sweep_interval: Duration::from_secs(1),
        })
    );
    let bad = Overrides {
        backend: Some("nope".into()),
        ..Overrides::default()
    };
    let err = Config::parse(text, "test", &bad).unwrap_err();
    assert_eq!(err.issues()[0].path, "backend.kind");
}

#[test]
fn every_algorithm_is_built_with_its_parameters() {
    let config = parse(
        r#"
        [rules.tb]
        algorithm = "token_bucket"
        capacity = 10
        refill_per_second = 0.5
        [rules.g]
        algorithm = "gcra"
        rate_per_second = 4
        burst = 2
        [rules.fw]
        algorithm = "fixed_window"
        limit = 7
        window = "250ms"
        [rules.swc]
        algorithm = "sliding_window_counter"
        limit = 8
        window = "2s"
        [rules.swl]
        algorithm = "sliding_window_log"
        limit = 9
        window = "1m"
        "#,
    )
    .unwrap();
    let limit = |resource: &str| {
        let rule = config.rules.resolve(resource, "k").unwrap();
        assert_eq!(rule.limits.len(), 1);
        assert_eq!(
            rule.limits[0].name, rule.name,
            "the one limit is named like its rule"
        );
        let algorithm = &rule.limits[0].algorithm;
        (
            algorithm.name(),
            algorithm.limit(),
            algorithm.policy_window_us(),
        )
    };
    assert_eq!(limit("tb"), ("token_bucket", 10, 20_000_000));
    assert_eq!(limit("g"), ("gcra", 2, 500_000));
    assert_eq!(limit("fw"), ("fixed_window", 7, 250_000));
    assert_eq!(limit("swc"), ("sliding_window_counter", 8, 2_000_000));
    assert_eq!(limit("swl"), ("sliding_window_log", 9, 60_000_000));
    assert!(config.rules.resolve("other", "k").is_none());
    assert!(matches!(
        config.rules.resolve("g", "k").unwrap().limits[0].algorithm,
        Algorithm::Gcra(_)
    ));
}

#[test]
fn redis_backend_and_failure_modes() {
    let config = parse(
        r#"
        [backend]
        kind = "redis"
        [backend.redis]
        urls = ["redis://127.0.0.1:7000"]
        deadline = "5ms"
        failure_mode = "local"
        fallback_share = 0.25
        fallback_max_keys = 5000
        [rules.r]
        algorithm = "gcra"
        rate_per_second = 10
        burst = 4
        failure_mode = "allow"
        "#,
    )
    .unwrap();
    let BackendConfig::Redis(redis) = &config.backend else {
        panic!("redis backend expected");
    };
    assert_eq!(redis.urls, ["redis://127.0.0.1:7000"]);
    assert_eq!(redis.deadline, Duration::from_millis(5));
    assert_eq!(
        (redis.failure_mode, redis.fallback_share),
        (FailureMode::Local, 0.25)
    );
    assert_eq!(redis.fallback_max_keys, 5000);
    assert_eq!(redis.breaker_backoff, Duration::from_millis(500));
    let rule = config.rules.resolve("r", "k").unwrap();
    assert_eq!(rule.failure_mode, Some(FailureMode::Allow));

    let paths = issue_paths(
        r#"
        [backend]
        kind = "redis"
        [backend.redis]
        urls = ["http://x", "redis://y"]
        failure_mode = "maybe"
        fallback_share = 2.0
        fallback_max_keys = 0
        deadline = "0ms"
        [default_rule]
        algorithm = "gcra"
        rate_per_second = 1
        burst = 1
        failure_mode = "sometimes"
        "#,
    );
    assert_eq!(
        paths,
        [
            "backend.redis.urls",
            "backend.redis.urls[0]",
            "backend.redis.deadline",
            "backend.redis.failure_mode",
            "backend.redis.fallback_share",
            "backend.redis.fallback_max_keys",
            "default_rule.failure_mode",
        ]
    );
}

#[test]
fn the_grpc_stream_limit_is_bounded() {
    let rule = "[default_rule]\nalgorithm = \"gcra\"\nrate_per_second = 1\nburst = 1\n";
    assert_eq!(
        issue_paths(&format!(
            "[server]\ngrpc_max_concurrent_streams = 0\n{rule}"
        )),
        ["server.grpc_max_concurrent_streams"]
    );
    let config = parse(&format!(
        "[server]\ngrpc_max_concurrent_streams = 64\n{rule}"
    ))
    .unwrap();
    assert_eq!(config.server.grpc_max_concurrent_streams, 64);
    assert_eq!(
        parse(rule).unwrap().server.grpc_max_concurrent_streams,
        DEFAULT_GRPC_MAX_CONCURRENT_STREAMS
    );
}

#[test]
fn redis_urls_are_parsed_as_the_client_will_parse_them() {
    let config = r#"
        [backend]
        kind = "redis"
        [backend.redis]
        cluster = true
        urls = ["redis://127.0.0.1:99999", "redis://[::1", "rediss://127.0.0.1:6379", "redis://127.0.0.1:6380"]
        [default_rule]
        algorithm = "gcra"
        rate_per_second = 1
        burst = 1
        "#;
    assert_eq!(
        issue_paths(config),
        [
            "backend.redis.urls[0]",
            "backend.redis.urls[1]",
            "backend.redis.urls[2]"
        ]
    );
    let message = parse(config).unwrap_err().to_string();
    assert!(
        message.contains("`redis://127.0.0.1:99999` is not a valid Redis URL"),
        "{message}"
    );
    assert!(
        message.contains("write e.g. \"redis://127.0.0.1:6379\""),
        "{message}"
    );
}

#[test]
fn a_rule_stacks_named_limits_in_order() {
    let config = parse(
        r#"
        [rules.api]
        [[rules.api.limits]]
        name = "burst"
        algorithm = "token_bucket"
        capacity = 10
        refill_per_second = 10
        [[rules.api.limits]]
        name = "daily"
        algorithm = "fixed_window"
        limit = 1000
        window = "1d"
        [[rules.api.overrides]]
        key = "partner"
        [[rules.api.overrides.limits]]
        algorithm = "gcra"
        rate_per_second = 100
        burst = 200
        "#,
    )
    .unwrap();
    let rule = config.rules.resolve("api", "k").unwrap();
    let names: Vec<&str> = rule.limits.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["burst", "daily"]);
    assert_eq!(
        rule.max_cost(),
        10,
        "the smallest limit bounds a request's cost"
    );
    let partner = config.rules.resolve("api", "partner").unwrap();
    assert_eq!(partner.limits.len(), 1);
    assert_eq!(
        partner.limits[0].name, partner.name,
        "a lone limit may go unnamed"
    );
}

#[test]
fn stacked_limits_are_validated_with_paths_and_fixes() {
    let cases: [(&str, &[&str]); 5] = [
        ("[rules.a]\nlimits = []\n", &["rules.a.limits"]),
        (
            "[rules.a]\nalgorithm = \"gcra\"\n[[rules.a.limits]]\nalgorithm = \"fixed_window\"\nlimit = 1\nwindow = \"1s\"\n",
            &["rules.a.algorithm"],
        ),
        (
            "[[rules.a.limits]]\nalgorithm = \"fixed_window\"\nlimit = 1\nwindow = \"1s\"\n[[rules.a.limits]]\nname = \"b\"\nalgorithm = \"fixed_window\"\nlimit = 2\nwindow = \"1m\"\n",
            &["rules.a.limits[0].name"],
        ),
        (
            "[[rules.a.limits]]\nname = \"x\"\nalgorithm = \"fixed_window\"\nlimit = 1\nwindow = \"1s\"\n[[rules.a.limits]]\nname = \"x\"\nalgorithm = \"fixed_window\"\nlimit = 2\nwindow = \"1m\"\n",
            &["rules.a.limits[1].name"],
        ),
        (
            "[[rules.a.limits]]\nname = \"x y\"\nalgorithm = \"gcra\"\nburst = 0\nrate_per_second = 1\n",
            &["rules.a.limits[0].name", "rules.a.limits[0].burst"],
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(issue_paths(text), expected, "{text}");
    }
    let many: String = (0..9)
        .map(|i| format!("[[rules.a.limits]]\nname = \"l{i}\"\nalgorithm = \"gcra\"\nburst = 1\nrate_per_second = 1\n"))
        .collect();
    assert_eq!(issue_paths(&many), ["rules.a.limits"]);
    let message = parse("[rules.a]\nlimits = []\n").unwrap_err().to_string();
    assert!(message.contains("[[rules.a.limits]]"), "{message}");
}

#[test]
fn shadow_mode_per_rule_and_for_the_whole_node() {
    let text = "[rules.a]\nalgorithm = \"gcra\"\nrate_per_second = 1\nburst = 1\nshadow = true\n[rules.b]\nalgorithm = \"gcra\"\nrate_per_second = 1\nburst = 1\n";
    let config = parse(text).unwrap();
    let shadow =
        |config: &Config, resource: &str| config.rules.resolve(resource, "k").unwrap().shadow;
    assert!(shadow(&config, "a") && !shadow(&config, "b"));
    assert!(!config.server.shadow);
    let node = parse(&format!("[server]\nshadow = true\n{text}")).unwrap();
    assert!(node.server.shadow && shadow(&node, "a") && shadow(&node, "b"));
    let flag = Overrides {
        shadow: Some(true),
        ..Overrides::default()
    };
    let flagged = Config::parse(text, "test", &flag).unwrap();
    assert!(shadow(&flagged, "b"), "--shadow wins over the file");
}

#[test]
fn a_ban_is_built_with_defaults_and_every_problem_named() {
    let config = parse(
        "[rules.login]\nalgorithm = \"fixed_window\"\nlimit = 5\nwindow = \"1m\"\n[rules.login.ban]\nafter = 20\nwithin = \"1m\"\nduration = \"15m\"\nfactor = 2\n",
    )
    .unwrap();
    let ban = config
        .rules
        .resolve("login", "k")
        .unwrap()
        .ban
        .clone()
        .unwrap();
    assert_eq!(
        (ban.after, ban.within_us, ban.duration_us, ban.factor),
        (20, 60_000_000, 900_000_000, 2.0)
    );
    assert_eq!(
        ban.max_duration_us, 86_400_000_000,
        "capped at a day by default"
    );
    assert_eq!(ban.scope, crate::algorithm::ban::BanScope::Resource);
    let paths = issue_paths(
        "[rules.login]\nalgorithm = \"fixed_window\"\nlimit = 5\nwindow = \"1m\"\n[rules.login.ban]\nwithin = \"1m\"\nduration = \"2h\"\nfactor = 0.5\nmax_duration = \"1h\"\nscope = \"planet\"\n",
    );
    assert_eq!(
        paths,
        [
            "rules.login.ban.after",
            "rules.login.ban.factor",
            "rules.login.ban.scope",
            "rules.login.ban.max_duration",
        ]
    );
    let message = parse("[rules.a]\nalgorithm = \"gcra\"\nrate_per_second = 1\nburst = 1\n[rules.a.ban]\nafter = 3\n")
        .unwrap_err()
        .to_string();
    assert!(message.contains("within = \"1m\""), "{message}");
}

#[test]
fn the_fallback_share_is_a_fraction_or_live_and_bursts_are_bounded() {
    let redis = |settings: &str| {
        format!(
            "[backend]\nkind = \"redis\"\n[backend.redis]\n{settings}\n[default_rule]\nalgorithm = \"gcra\"\nrate_per_second = 1\nburst = 1\n"
        )
    };
    let config = parse(&redis(
        "fallback_share = \"live\"\nmax_in_flight = 32\nqueue_timeout = \"250ms\"",
    ))
    .unwrap();
    let BackendConfig::Redis(settings) = &config.backend else {
        panic!("redis backend expected");
    };
    assert!(settings.fallback_share_live);
    assert_eq!(settings.max_in_flight, 32);
    assert_eq!(settings.queue_timeout, Duration::from_millis(250));
    let defaults = parse(&redis("")).unwrap();
    let BackendConfig::Redis(defaults) = &defaults.backend else {
        panic!("redis backend expected");
    };
    assert!(!defaults.fallback_share_live);
    assert_eq!(defaults.max_in_flight, 128);
    assert_eq!(
        issue_paths(&redis(
            "fallback_share = \"half\"\nmax_in_flight = 0\nqueue_timeout = \"0s\""
        )),
        [
            "backend.redis.fallback_share",
            "backend.redis.max_in_flight",
            "backend.redis.queue_timeout",
        ]
    );
}

const A_RULE: &str = "[default_rule]\nalgorithm = \"gcra\"\nrate_per_second = 1\nburst = 1\n";

#[test]
fn sentinels_name_the_primary() {
    let config = parse(&format!(
        "[backend]\nkind = \"redis\"\n[backend.redis.sentinel]\nmaster = \"mymaster\"\nurls = [\"redis://10.0.0.1:26379\", \"redis://10.0.0.2:26379\"]\n{A_RULE}"
    ))
    .unwrap();
    let BackendConfig::Redis(redis) = &config.backend else {
        panic!("a redis backend")
    };
    assert!(redis.urls.is_empty());
    assert_eq!(
        redis.sentinel,
        Some(SentinelConfig {
            master: "mymaster".into(),
            urls: vec![
                "redis://10.0.0.1:26379".into(),
                "redis://10.0.0.2:26379".into()
            ],
        })
    );
    assert_eq!(
        redis.addresses(),
        "primary `mymaster` of sentinels redis://10.0.0.1:26379, redis://10.0.0.2:26379"
    );
}

#[test]
fn sentinels_reject_what_cannot_work_naming_each_field() {
    assert_eq!(
        issue_paths(&format!(
            "[backend]\nkind = \"redis\"\n[backend.redis]\nurls = [\"redis://127.0.0.1:6379\"]\ncluster = true\n[backend.redis.sentinel]\nurls = [\"http://x\"]\n{A_RULE}"
        )),
        [
            "backend.redis.sentinel.master",
            "backend.redis.sentinel.urls[0]",
            "backend.redis.urls",
            "backend.redis.sentinel",
        ]
    );
    assert_eq!(
        issue_paths(&format!(
            "[backend]\nkind = \"redis\"\n[backend.redis.sentinel]\nmaster = \"m\"\n{A_RULE}"
        )),
        ["backend.redis.sentinel.urls"]
    );
}

#[test]
fn the_redis_url_flag_replaces_the_sentinels() {
    let overrides = Overrides {
        redis_url: Some("redis://127.0.0.1:7000".into()),
        ..Overrides::default()
    };
    let config = Config::parse(
        &format!("[backend]\nkind = \"redis\"\n[backend.redis.sentinel]\nmaster = \"m\"\nurls = [\"redis://127.0.0.1:26379\"]\n{A_RULE}"),
        "test",
        &overrides,
    )
    .unwrap();
    let BackendConfig::Redis(redis) = &config.backend else {
        panic!("a redis backend")
    };
    assert_eq!(redis.urls, ["redis://127.0.0.1:7000"]);
    assert_eq!(redis.sentinel, None);
}

/// A config with the admin API on, so adaptive rules can be reported to.
fn parse_with_admin(text: &str) -> Result<Config, ConfigError> {
    Config::parse(
        text,
        "test",
        &Overrides::loopback("ops:admin:0123456789abcdef0123"),
    )
}

#[test]
fn an_adaptive_rule_is_built_with_defaults_and_its_overrides_follow_it() {
    let config = parse_with_admin(
        "[rules.api]\nalgorithm = \"fixed_window\"\nlimit = 5\nwindow = \"1m\"\n[rules.api.adaptive]\ntarget_latency = \"50ms\"\n[[rules.api.overrides]]\nkey = \"big\"\nalgorithm = \"fixed_window\"\nlimit = 50\nwindow = \"1m\"\n",
    )
    .unwrap();
    let adaptive = config.rules.resolve("api", "k").unwrap().adaptive.unwrap();
    let aimd = adaptive.aimd;
    assert_eq!(
        (
            aimd.target_latency_us,
            aimd.max_error_ppm,
            aimd.floor_ppm,
            aimd.increase_ppm,
            aimd.decrease_ppm,
            aimd.min_reports,
            adaptive.window_us
        ),
        (50_000, 50_000, 100_000, 50_000, 700_000, 20, 1_000_000)
    );
    assert_eq!(
        config.rules.resolve("api", "big").unwrap().adaptive,
        Some(adaptive),
        "an override follows its resource's factor"
    );
}

#[test]
fn adaptive_problems_are_named_with_their_fix() {
    let rule = "algorithm = \"fixed_window\"\nlimit = 5\nwindow = \"1m\"\n";
    let paths = |text: &str| -> Vec<String> {
        parse_with_admin(text)
            .expect_err("config should be rejected")
            .issues()
            .iter()
            .map(|issue| issue.path.clone())
            .collect()
    };
    assert_eq!(
        paths(&format!(
            "[rules.api]\n{rule}[rules.api.adaptive]\nwindow = \"10ms\"\nfloor = 0\ndecrease = 1.5\n"
        )),
        [
            "rules.api.adaptive.target_latency",
            "rules.api.adaptive.window",
            "rules.api.adaptive.decrease",
        ],
        "the window is too short, decrease out of range; floor 0 waits for the rest"
    );
    assert_eq!(
        paths(&format!(
            "[rules.api]\n{rule}[rules.api.adaptive]\ntarget_latency = \"1s\"\nfloor = 0\n"
        )),
        ["rules.api.adaptive.floor"]
    );
    assert_eq!(
        paths(&format!(
            "[default_rule]\n{rule}[default_rule.adaptive]\ntarget_latency = \"1s\"\n"
        )),
        ["default_rule.adaptive"]
    );
    assert_eq!(
        paths(&format!(
            "[rules.api]\n{rule}[[rules.api.overrides]]\nkey = \"k\"\n{rule}[rules.api.overrides.adaptive]\ntarget_latency = \"1s\"\n"
        )),
        ["rules.api.overrides[0].adaptive"]
    );
    // Without tokens nobody could report, so the rule would never move.
    let issues = parse(&format!(
        "[rules.api]\n{rule}[rules.api.adaptive]\ntarget_latency = \"1s\"\n"
    ))
    .unwrap_err();
    assert_eq!(issues.issues()[0].path, "rules.api.adaptive");
    assert!(issues.to_string().contains("role `report`"), "{issues}");
}

#[test]
fn the_example_configs_commented_adaptive_rule_is_valid_once_uncommented() {
    let example = include_str!("../../config/sluice.example.toml");
    let start = example
        .find("# [rules.checkout]")
        .expect("the example shows an adaptive rule");
    let uncommented: String = example[start..]
        .lines()
        .map(|line| {
            line.trim_start_matches('#')
                .split(" #")
                .next()
                .unwrap_or("")
        })
        .collect::<Vec<_>>()
        .join("\n");
    let config = parse_with_admin(&uncommented).unwrap();
    let adaptive = config.rules.resolve("checkout", "k").unwrap().adaptive;
    assert_eq!(adaptive.unwrap().aimd.target_latency_us, 250_000);
}

#[test]
fn a_concurrency_limit_is_built_and_its_problems_named() {
    let config = parse(
        "[rules.jobs]\nalgorithm = \"fixed_window\"\nlimit = 5\nwindow = \"1m\"\n[rules.jobs.concurrency]\nmax_in_flight = 3\n",
    )
    .unwrap();
    let concurrency = config
        .rules
        .resolve("jobs", "k")
        .unwrap()
        .concurrency
        .unwrap();
    assert_eq!(
        (concurrency.max_in_flight(), concurrency.lease_ttl_us()),
        (3, 60_000_000),
        "a lease lasts a minute by default"
    );
    let rule = "algorithm = \"fixed_window\"\nlimit = 5\nwindow = \"1m\"\n";
    assert_eq!(
        issue_paths(&format!(
            "[rules.jobs]\n{rule}[rules.jobs.concurrency]\nlease_ttl = \"2d\"\n"
        )),
        [
            "rules.jobs.concurrency.max_in_flight",
            "rules.jobs.concurrency.lease_ttl"
        ]
    );
    assert_eq!(
        issue_paths(&format!(
            "[rules.jobs]\n{rule}[rules.jobs.concurrency]\nmax_in_flight = 0\n"
        )),
        ["rules.jobs.concurrency.max_in_flight"]
    );
    assert_eq!(
        issue_paths(&format!(
            "[rules.jobs]\n{rule}[rules.jobs.concurrency]\nmax_in_flight = 2\n[rules.jobs.ban]\nafter = 3\nwithin = \"1m\"\nduration = \"1m\"\n"
        )),
        ["rules.jobs.ban"],
        "bans and leases do not stack yet"
    );
}
