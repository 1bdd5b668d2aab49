//! The deployment files, checked offline: the Kubernetes manifests against the API schemas
//! (kubernetes-validate, from PyPI), their probes and ports against what the service really
//! serves, the configurations they carry through the service's own validation, and
//! docker-compose.yml through `docker-compose config`.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::Value;
use sluice::{
    config::{BackendConfig, Config, Overrides},
    server,
};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn run(program: &str, args: &[&str], install: &str) -> String {
    sluice_testkit::tools::run_ok(
        Command::new(program).args(args).current_dir(repo()),
        install,
    )
}

const MANIFESTS: [&str; 5] = [
    "deployment.yaml",
    "service.yaml",
    "hpa.yaml",
    "redis.yaml",
    "pdb.yaml",
];

/// Every document of a YAML file, as JSON (PyYAML comes with kubernetes-validate).
fn yaml_documents(path: &Path) -> Vec<Value> {
    let script = "import json, sys, yaml; \
                  print(json.dumps([d for d in yaml.safe_load_all(open(sys.argv[1])) if d]))";
    let text = run(
        "python3",
        &["-c", script, path.to_str().unwrap()],
        "`pip install kubernetes-validate` (it brings PyYAML; scripts/test installs it)",
    );
    serde_json::from_str(&text).unwrap()
}

fn manifest(kind: &str, name: &str) -> Value {
    for file in MANIFESTS {
        for document in yaml_documents(&repo().join("deploy/k8s").join(file)) {
            if document["kind"] == kind && document["metadata"]["name"] == name {
                return document;
            }
        }
    }
    panic!("no {kind} {name} in deploy/k8s")
}

#[test]
fn kubernetes_manifests_match_the_api_schemas() {
    let files: Vec<String> = MANIFESTS
        .iter()
        .map(|file| format!("deploy/k8s/{file}"))
        .collect();
    let mut args = vec!["--strict"];
    args.extend(files.iter().map(String::as_str));
    let said = run(
        "kubernetes-validate",
        &args,
        "`pip install kubernetes-validate==1.37.0` (scripts/test installs it)",
    );
    assert_eq!(said.matches("passed for resource").count(), 6, "{said}");
    // Every manifest is in the kustomization.
    let kustomization = &yaml_documents(&repo().join("deploy/k8s/kustomization.yaml"))[0];
    let listed: Vec<&str> = kustomization["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    for file in MANIFESTS {
        assert!(listed.contains(&file), "kustomization.yaml lists {file}");
    }
    // The configuration is generated from deploy/k8s/sluice.toml, so an edit rolls the pods.
    let generator = &kustomization["configMapGenerator"][0];
    assert_eq!(generator["name"], "sluice-config");
    assert_eq!(generator["files"][0], "sluice.toml");
    let deployment = manifest("Deployment", "sluice");
    let volumes = &deployment["spec"]["template"]["spec"]["volumes"];
    assert_eq!(volumes[0]["configMap"]["name"], "sluice-config");
}

fn config_of(text: &str, origin: &str) -> Config {
    Config::parse(text, origin, &Overrides::default())
        .unwrap_or_else(|err| panic!("{origin} is not a valid configuration: {err}"))
}

#[tokio::test]
async fn the_deployment_probes_and_ports_are_what_the_service_serves() {
    let text = std::fs::read_to_string(repo().join("deploy/k8s/sluice.toml")).unwrap();
    let config = config_of(&text, "deploy/k8s/sluice.toml");
    let deployment = manifest("Deployment", "sluice");
    assert_eq!(deployment["spec"]["replicas"], 3);
    assert_eq!(deployment["spec"]["strategy"]["type"], "RollingUpdate");
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert!(container["resources"]["requests"]["cpu"].is_string());
    let port = |name: &str| {
        container["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("a container port named {name}"))["containerPort"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(port("http"), u64::from(config.server.http_addr.port()));
    assert_eq!(port("grpc"), u64::from(config.server.grpc_addr.port()));
    // The pod outlives the service's own drain.
    assert!(
        pod["terminationGracePeriodSeconds"].as_u64().unwrap()
            > config.server.shutdown_grace.as_secs()
    );
    let service = manifest("Service", "sluice");
    for service_port in service["spec"]["ports"].as_array().unwrap() {
        let target = service_port["targetPort"].as_str().unwrap();
        port(target);
    }
    let hpa = manifest("HorizontalPodAutoscaler", "sluice");
    assert_eq!(hpa["spec"]["scaleTargetRef"]["name"], "sluice");
    assert_eq!(hpa["spec"]["minReplicas"], 3);
    // While Redis is down each replica allows its share alone: at the HPA's largest fleet the
    // shares still add up to at most the limit.
    let BackendConfig::Redis(redis_config) = &config.backend else {
        panic!("deploy/k8s/sluice.toml keeps state in Redis");
    };
    let most = hpa["spec"]["maxReplicas"].as_f64().unwrap();
    assert!(
        redis_config.fallback_share_live || redis_config.fallback_share * most <= 1.0,
        "fallback_share {} x maxReplicas {most} would admit more than the limit during an outage",
        redis_config.fallback_share
    );
    let redis = manifest("StatefulSet", "redis");
    assert_eq!(redis["spec"]["serviceName"], "redis");
    // Redis evicts (nearest-to-fresh first) before its container's memory limit kills it.
    let args: Vec<&str> = redis["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|arg| arg.as_str().unwrap())
        .collect();
    let after = |flag: &str| args[args.iter().position(|a| *a == flag).unwrap() + 1];
    assert_eq!(after("--maxmemory-policy"), "volatile-ttl");
    let maxmemory_mib = after("--maxmemory")
        .trim_end_matches("mb")
        .parse::<u64>()
        .unwrap();
    let limit = redis["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"]
        .as_str()
        .unwrap();
    let limit_mib = limit.trim_end_matches("Mi").parse::<u64>().unwrap();
    assert!(maxmemory_mib < limit_mib, "{maxmemory_mib} MB vs {limit}");

    // Rollouts and drains: a pod leaves the endpoints (preStop) before it stops listening,
    // and finishes its drain inside the grace period; one pod at most is taken away at once.
    let sleep = container["lifecycle"]["preStop"]["sleep"]["seconds"]
        .as_u64()
        .expect("a preStop sleep");
    assert!(
        sleep + config.server.shutdown_grace.as_secs()
            < pod["terminationGracePeriodSeconds"].as_u64().unwrap(),
        "preStop {sleep} s + drain {:?} fit the grace period",
        config.server.shutdown_grace
    );
    assert_eq!(
        deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"],
        0
    );
    let budget = manifest("PodDisruptionBudget", "sluice");
    assert_eq!(budget["spec"]["maxUnavailable"], 1);
    assert_eq!(
        budget["spec"]["selector"]["matchLabels"],
        deployment["spec"]["selector"]["matchLabels"]
    );
    assert_eq!(
        pod["topologySpreadConstraints"][0]["topologyKey"],
        "kubernetes.io/hostname"
    );
    // Pod Security "restricted", for the limiter and for Redis.
    for (name, pod) in [
        ("sluice", pod),
        ("redis", &redis["spec"]["template"]["spec"]),
    ] {
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{name}");
        assert_eq!(
            pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault",
            "{name}"
        );
        let container = &pod["containers"][0]["securityContext"];
        assert_eq!(container["allowPrivilegeEscalation"], false, "{name}");
        assert_eq!(container["capabilities"]["drop"][0], "ALL", "{name}");
    }

    // The probes' paths, asked of a real server: ready and live answer 200.
    let overrides = Overrides::loopback("probe:read:deploy-test-read-token");
    let rules = "[default_rule]\nalgorithm = \"gcra\"\nrate_per_second = 10\nburst = 5\n";
    let node = server::start(Config::parse(rules, "test", &overrides).unwrap())
        .await
        .unwrap();
    for probe in ["readinessProbe", "livenessProbe"] {
        let http = &container[probe]["httpGet"];
        assert_eq!(http["port"], "http", "{probe} uses the HTTP port");
        let path = http["path"].as_str().unwrap();
        let url = format!("http://{}{path}", node.http_addr);
        let status = reqwest::get(&url).await.unwrap().status();
        assert_eq!(status, 200, "{probe} {path}");
    }
    node.stop().await.unwrap();
}

#[test]
fn compose_file_and_its_service_config_are_valid() {
    let said = run(
        "docker-compose",
        &["--profile", "tools", "config", "--services"],
        "`apt-get install docker-compose` (Debian's package; scripts/test installs it)",
    );
    for service in [
        "redis",
        "limiter-1",
        "limiter-2",
        "lb",
        "prometheus",
        "grafana",
        "loadgen",
        "k6",
    ] {
        assert!(
            said.lines().any(|line| line == service),
            "{service}: {said}"
        );
    }
    let text = std::fs::read_to_string(repo().join("deploy/compose/sluice.toml")).unwrap();
    let config = config_of(&text, "deploy/compose/sluice.toml");
    assert_eq!(config.server.http_addr.port(), 8080);
    assert_eq!(config.server.grpc_addr.port(), 50051);
    // The limiters' healthcheck probes their HTTP port, and the load balancer waits for it.
    let resolved: Value = serde_json::from_str(&run(
        "python3",
        &[
            "-c",
            "import json, subprocess, yaml; print(json.dumps(yaml.safe_load(subprocess.run(['docker-compose', 'config'], capture_output=True, check=True).stdout)))",
        ],
        "`apt-get install docker-compose` and `pip install pyyaml`",
    ))
    .unwrap();
    let limiter = &resolved["services"]["limiter-1"];
    let test: Vec<&str> = limiter["healthcheck"]["test"]
        .as_array()
        .unwrap()
        .iter()
        .map(|part| part.as_str().unwrap())
        .collect();
    assert_eq!(test[..3], ["CMD", "/usr/local/bin/ratelimiter", "--probe"]);
    assert_eq!(
        test[3],
        format!("127.0.0.1:{}", config.server.http_addr.port())
    );
    assert_eq!(
        resolved["services"]["lb"]["depends_on"]["limiter-1"]["condition"],
        "service_healthy"
    );
    assert!(limiter["mem_limit"].is_string() || limiter["mem_limit"].is_number());
}

/// The image's own defaults: its baked-in configuration, with the environment the Dockerfile
/// sets, listens on every interface (so `docker run -p 8080:8080` reaches it).
#[test]
fn the_image_listens_on_every_interface_by_default() {
    let dockerfile = std::fs::read_to_string(repo().join("deploy/Dockerfile")).unwrap();
    let setting = |name: &str| {
        dockerfile
            .split(&format!("{name}="))
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("the Dockerfile sets {name}"))
            .to_owned()
    };
    let overrides = Overrides {
        grpc_addr: Some(setting("SLUICE_GRPC_ADDR")),
        http_addr: Some(setting("SLUICE_HTTP_ADDR")),
        ..Overrides::default()
    };
    assert!(dockerfile.contains("COPY service/config/sluice.example.toml /etc/sluice/sluice.toml"));
    let config = Config::load(
        Some(&repo().join("service/config/sluice.example.toml")),
        &overrides,
    )
    .unwrap();
    for addr in [config.server.grpc_addr, config.server.http_addr] {
        assert!(addr.ip().is_unspecified(), "{addr}");
    }
    let ignored = std::fs::read_to_string(repo().join(".dockerignore")).unwrap();
    for build_output in ["target/", "results/", ".git/"] {
        assert!(
            ignored.lines().any(|line| line == build_output),
            "{build_output}"
        );
    }
}

/// The container healthcheck: `ratelimiter --probe HOST:PORT` exits 0 for a ready node and 1
/// (saying why) for a port nothing answers on.
#[tokio::test]
async fn the_probe_flag_reports_readiness() {
    let overrides = Overrides::loopback("probe:read:deploy-test-read-token");
    let rules = "[default_rule]\nalgorithm = \"gcra\"\nrate_per_second = 10\nburst = 5\n";
    let node = server::start(Config::parse(rules, "test", &overrides).unwrap())
        .await
        .unwrap();
    let probe = |addr: String| {
        Command::new(env!("CARGO_BIN_EXE_ratelimiter"))
            .args(["--probe", &addr])
            .output()
            .unwrap()
    };
    let ready = tokio::task::spawn_blocking({
        let addr = node.http_addr.to_string();
        move || probe(addr)
    })
    .await
    .unwrap();
    assert!(
        ready.status.success(),
        "{}",
        String::from_utf8_lossy(&ready.stderr)
    );
    let closed = sluice_testkit::local_redis::free_port().unwrap();
    let down = tokio::task::spawn_blocking(move || probe(format!("127.0.0.1:{closed}")))
        .await
        .unwrap();
    assert_eq!(down.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&down.stderr).contains("not ready"));
    node.stop().await.unwrap();
}
