//! Live configuration: rules reload from the config file (on SIGHUP, and when the file or the
//! symlink a ConfigMap swaps changes), validated in full first, never half-applied.

mod common;

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use sluice::{
    config::Config,
    reload::{self, ConfigSource, Reloaded},
    server,
};
use sluice_testkit::folder::Folder;

fn login_rule(limit: u64) -> String {
    format!("[rules.login]\nalgorithm = \"fixed_window\"\nlimit = {limit}\nwindow = \"1h\"\n")
}

async fn remaining(http: &reqwest::Client, url: String) -> (u16, u64, u64) {
    let answer = http
        .post(url)
        .header("X-API-Key", "k")
        .send()
        .await
        .unwrap();
    let status = answer.status().as_u16();
    let header = |name: &str| -> u64 { answer.headers()[name].to_str().unwrap().parse().unwrap() };
    (
        status,
        header("x-ratelimit-limit"),
        header("x-ratelimit-remaining"),
    )
}

#[tokio::test]
async fn a_valid_file_swaps_the_rules_and_anything_else_changes_nothing() {
    let folder = Folder::new("reload-inprocess");
    let path = folder.path().join("sluice.toml");
    std::fs::write(&path, login_rule(3)).unwrap();
    let source = ConfigSource {
        path: path.clone(),
        overrides: common::loopback_overrides(),
    };
    let mut running = Config::load(Some(&path), &source.overrides).unwrap();
    let server = server::start(running.clone()).await.unwrap();
    let limiter = server.limiter().clone();
    let http = reqwest::Client::new();
    let check = || remaining(&http, common::http_url(&server, "/check?resource=login"));
    assert_eq!(check().await, (200, 3, 2));
    assert_eq!(check().await, (200, 3, 1));

    // More allowed per hour: the key's count carries over to the new limit.
    std::fs::write(&path, login_rule(5)).unwrap();
    let applied = reload::reload(&limiter, &mut running, &source);
    let Reloaded::Applied { version } = applied else {
        panic!("{applied:?}");
    };
    assert_eq!(
        check().await,
        (200, 5, 2),
        "2 spent of the new 5, then this one"
    );

    // An invalid file: every problem named, the running rules untouched.
    std::fs::write(
        &path,
        "[rules.login]\nalgorithm = \"fixed_window\"\nlimit = 0\nwindow = \"1h\"\n[rules.other]\nalgorithm = \"leaky\"\n",
    )
    .unwrap();
    let invalid = reload::reload(&limiter, &mut running, &source);
    let Reloaded::Invalid(err) = &invalid else {
        panic!("{invalid:?}");
    };
    let paths: Vec<&str> = err
        .issues()
        .iter()
        .map(|issue| issue.path.as_str())
        .collect();
    assert!(
        paths.contains(&"rules.login.limit") && paths.contains(&"rules.other.algorithm"),
        "{err}"
    );
    assert_eq!(check().await, (200, 5, 1), "still the last good rules");

    // Rules plus a listener: a restart-only change refuses the whole file.
    std::fs::write(
        &path,
        format!("[server]\nshutdown_grace = \"3s\"\n{}", login_rule(50)),
    )
    .unwrap();
    let refused = reload::reload(&limiter, &mut running, &source);
    assert!(
        matches!(&refused, Reloaded::Refused { sections } if sections == &["server"]),
        "{refused:?}"
    );
    assert_eq!(
        check().await,
        (200, 5, 0),
        "the rules of a refused file never apply"
    );

    std::fs::write(&path, login_rule(5)).unwrap();
    assert!(matches!(
        reload::reload(&limiter, &mut running, &source),
        Reloaded::Unchanged
    ));

    let metrics = common::metrics_text(&server).await;
    for expected in [
        r#"sluice_config_reloads_total{result="applied"} 1"#.to_owned(),
        r#"sluice_config_reloads_total{result="invalid"} 1"#.to_owned(),
        r#"sluice_config_reloads_total{result="refused"} 1"#.to_owned(),
        r#"sluice_config_reloads_total{result="unchanged"} 1"#.to_owned(),
        format!(r#"sluice_config_info{{version="{version}"}} 1"#),
    ] {
        assert!(metrics.contains(&expected), "{expected} in\n{metrics}");
    }
    assert_eq!(
        metrics.matches("sluice_config_info{").count(),
        1,
        "only the running version is reported"
    );

    // A second limit joins the rule: the key's count under `login` follows its name.
    std::fs::write(
        &path,
        "[[rules.login.limits]]\nname = \"burst\"\nalgorithm = \"token_bucket\"\ncapacity = 100\nrefill_per_second = 1\n\
         [[rules.login.limits]]\nname = \"login\"\nalgorithm = \"fixed_window\"\nlimit = 8\nwindow = \"1h\"\n",
    )
    .unwrap();
    let stacked = reload::reload(&limiter, &mut running, &source);
    assert!(matches!(stacked, Reloaded::Applied { .. }), "{stacked:?}");
    assert_eq!(check().await, (200, 8, 2), "5 spent before, this one, of 8");
    server.stop().await.unwrap();
}

/// Kubernetes mounts a ConfigMap as `config.toml -> ..data/config.toml`, `..data -> ..<ts>`,
/// and updates it by pointing `..data` at a new folder with one rename.
struct ConfigMap {
    folder: Folder,
    generation: u32,
}

impl ConfigMap {
    fn new(text: &str) -> ConfigMap {
        let mut map = ConfigMap {
            folder: Folder::new("reload-configmap"),
            generation: 0,
        };
        map.publish(text);
        std::os::unix::fs::symlink("..data/sluice.toml", map.path()).unwrap();
        map
    }

    fn path(&self) -> PathBuf {
        self.folder.path().join("sluice.toml")
    }

    fn publish(&mut self, text: &str) {
        self.generation += 1;
        let version = format!("..2026_11_30_v{}", self.generation);
        let dir = self.folder.path().join(&version);
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("sluice.toml"), text).unwrap();
        let staged = self.folder.path().join("..data_tmp");
        std::os::unix::fs::symlink(&version, &staged).unwrap();
        std::fs::rename(&staged, self.folder.path().join("..data")).unwrap();
    }
}

fn path_arg(path: &Path) -> String {
    path.display().to_string()
}

/// Polls `check` until it reports `limit`, for at most `within`; returns how long it took.
async fn until_limit(
    http: &reqwest::Client,
    node: &common::binary::Node,
    limit: u64,
    within: Duration,
) -> Duration {
    let started = Instant::now();
    loop {
        let (_, seen, _) = remaining(http, node.url("/check?resource=login")).await;
        if seen == limit {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "still limit {seen}, not {limit}, after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_configmap_swap_reloads_under_load_and_a_bad_one_keeps_the_rules() {
    let poll = "[server]\nconfig_poll_interval = \"100ms\"\n";
    let mut map = ConfigMap::new(&format!("{poll}{}", login_rule(1000)));
    let mut node = common::binary::Node::start(&["--config", &path_arg(&map.path())]);
    let http = reqwest::Client::new();

    // A load of checks runs across the swap: every answer is from the old rule or the new
    // one, none fails.
    let url = node.url("/check?resource=login");
    let load = tokio::spawn({
        let http = http.clone();
        async move {
            let mut limits = Vec::new();
            for _ in 0..400 {
                let (status, limit, _) = remaining(&http, url.clone()).await;
                assert!(status == 200 || status == 429, "{status}");
                limits.push(limit);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            limits
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    map.publish(&format!("{poll}{}", login_rule(2000)));
    node.wait_for("configuration reloaded");
    let limits = load.await.unwrap();
    assert!(
        limits.iter().all(|limit| *limit == 1000 || *limit == 2000),
        "{limits:?}"
    );
    let switched = limits
        .iter()
        .position(|limit| *limit == 2000)
        .expect("the new rule answered");
    assert!(
        limits[switched..].iter().all(|limit| *limit == 2000),
        "never back to the old rule"
    );
    until_limit(&http, &node, 2000, Duration::from_secs(2)).await;

    map.publish(&format!(
        "{poll}[rules.login]\nalgorithm = \"fixed_window\"\nlimit = -1\n"
    ));
    node.wait_for("configuration reload failed");
    tokio::time::sleep(Duration::from_millis(300)).await;
    until_limit(&http, &node, 2000, Duration::from_secs(1)).await;
    let metrics = http
        .get(node.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"sluice_config_reloads_total{result="invalid"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn sighup_reloads_when_polling_is_off() {
    let folder = Folder::new("reload-sighup");
    let path = folder.path().join("sluice.toml");
    let no_poll = "[server]\nconfig_poll_interval = \"0s\"\n";
    std::fs::write(&path, format!("{no_poll}{}", login_rule(7))).unwrap();
    let mut node = common::binary::Node::start(&["--config", &path_arg(&path)]);
    let http = reqwest::Client::new();
    until_limit(&http, &node, 7, Duration::from_secs(1)).await;
    std::fs::write(&path, format!("{no_poll}{}", login_rule(9))).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    until_limit(&http, &node, 7, Duration::from_secs(1)).await;
    node.signal("HUP");
    node.wait_for("configuration reloaded");
    until_limit(&http, &node, 9, Duration::from_secs(1)).await;
}
