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
    config::{Config, Overrides},
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
    "configmap.yaml",
    "deployment.yaml",
    "service.yaml",
    "hpa.yaml",
    "redis.yaml",
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
}

fn config_of(text: &str, origin: &str) -> Config {
    Config::parse(text, origin, &Overrides::default())
        .unwrap_or_else(|err| panic!("{origin} is not a valid configuration: {err}"))
}

#[tokio::test]
async fn the_deployment_probes_and_ports_are_what_the_service_serves() {
    let configmap = manifest("ConfigMap", "sluice-config");
    let config = config_of(
        configmap["data"]["sluice.toml"].as_str().unwrap(),
        "deploy/k8s/configmap.yaml",
    );
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
    let redis = manifest("StatefulSet", "redis");
    assert_eq!(redis["spec"]["serviceName"], "redis");

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
}
