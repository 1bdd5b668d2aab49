//! TLS targets (`grpcs://`, `https://`): the generator against a real rustls server that
//! terminates TLS in front of a real service, with a certificate from a test CA made by
//! openssl. Verified against the CA (`--tls-ca`), refused without it, and accepted unverified
//! only when asked (`--tls-insecure`).

use std::{path::Path, process::Command, sync::Arc, time::Duration};

use loadgen::{
    client::{TargetClient, socket::TlsOptions},
    engine::{self, LoadModel, RunConfig},
    schedule::Schedule,
    wire::Endpoint,
};
use sluice::{
    config::{Config, Overrides},
    server::{self, RunningServer},
};
use sluice_testkit::folder::Folder;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{
    TlsAcceptor,
    rustls::{
        ServerConfig,
        pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    },
};

const RULES: &str =
    "[default_rule]\nalgorithm = \"token_bucket\"\ncapacity = 1000\nrefill_per_second = 1000\n";

/// A test CA and a certificate it signed for `localhost` and 127.0.0.1, in `dir`.
fn certificates(dir: &Path) {
    let openssl = |args: &[&str]| {
        sluice_testkit::tools::run_ok(
            Command::new("openssl").args(args).current_dir(dir),
            "`apt-get install -y openssl` (scripts/test does this)",
        )
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    openssl(
        &[
            &["req", "-x509", "-days", "1", "-subj", "/CN=sluice-test-ca"],
            &ec[..],
            &["-keyout", "ca.key", "-out", "ca.pem"],
        ]
        .concat(),
    );
    openssl(
        &[
            &["req", "-subj", "/CN=localhost"],
            &ec[..],
            &["-keyout", "server.key", "-out", "server.csr"],
        ]
        .concat(),
    );
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-days",
        "1",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-extfile",
        "server.ext",
        "-out",
        "server.pem",
    ]);
}

/// Terminates TLS on a free loopback port and forwards each connection to `backend`:
/// returns the port.
async fn tls_front(dir: &Path, backend: std::net::SocketAddr) -> u16 {
    let chain = CertificateDer::pem_file_iter(dir.join("server.pem"))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(dir.join("server.key")).unwrap();
    let mut config = ServerConfig::builder_with_provider(Arc::new(
        tokio_rustls::rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut client) = acceptor.accept(client).await else {
                    return;
                };
                let Ok(mut server) = TcpStream::connect(backend).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            });
        }
    });
    port
}

struct Setup {
    _dir: Folder,
    ca: std::path::PathBuf,
    node: RunningServer,
    grpcs: Endpoint,
    https: Endpoint,
}

/// A service behind TLS fronts; `name` keeps each test's certificates apart.
async fn setup(name: &str) -> Setup {
    let dir = Folder::new(name);
    certificates(dir.path());
    let overrides = Overrides::loopback("tls:admin:tls-test-admin-token-0123");
    let node = server::start(Config::parse(RULES, "test", &overrides).unwrap())
        .await
        .unwrap();
    let grpc_port = tls_front(dir.path(), node.grpc_addr).await;
    let http_port = tls_front(dir.path(), node.http_addr).await;
    Setup {
        ca: dir.path().join("ca.pem"),
        grpcs: format!("grpcs://localhost:{grpc_port}").parse().unwrap(),
        https: format!("https://127.0.0.1:{http_port}").parse().unwrap(),
        node,
        _dir: dir,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcs_and_https_targets_verified_against_a_ca_file() {
    let setup = setup("tls-verified").await;
    let mut config = RunConfig::new(vec![setup.grpcs.clone(), setup.https.clone()]);
    config.tls = TlsOptions {
        ca_file: Some(setup.ca.clone()),
        insecure: false,
    };
    config.model = LoadModel::Open {
        schedule: Schedule::constant(500.0),
        workers: 8,
    };
    config.requests = Some(400);
    config.duration = Some(Duration::from_secs(10));
    let result = engine::run(config).await.unwrap();
    let counts = result.recorder.counts;
    assert_eq!(counts.errors(), 0, "{counts:?}");
    assert_eq!(counts.total(), 400);
    for (target, recorded) in result.recorder.targets.iter().enumerate() {
        assert!(
            recorded.counts.allowed > 150,
            "target {target}: {:?}",
            recorded.counts
        );
    }
    setup.node.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_certificate_is_refused_unless_verification_is_off() {
    let setup = setup("tls-unverified").await;
    for endpoint in [&setup.grpcs, &setup.https] {
        // The system's CAs do not know the test CA.
        let refused = TargetClient::connect(endpoint, 1, &TlsOptions::default()).await;
        let error = refused
            .err()
            .map(|error| format!("{error:#}"))
            .unwrap_or_default();
        assert!(
            error.contains("cannot connect") || error.contains("certificate"),
            "{endpoint}: `{error}`"
        );
        let insecure = TlsOptions {
            ca_file: None,
            insecure: true,
        };
        let mut client = TargetClient::connect(endpoint, 1, &insecure).await.unwrap();
        let answer = client
            .check("key", "", 1, Duration::from_secs(2))
            .await
            .unwrap();
        assert!(answer.allowed, "{endpoint}");
    }
    // A CA file that holds no certificate is named with the flag.
    let empty = setup.ca.with_file_name("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let bad = TlsOptions {
        ca_file: Some(empty),
        insecure: false,
    };
    let error = TargetClient::connect(&setup.grpcs, 1, &bad)
        .await
        .err()
        .map(|error| format!("{error:#}"))
        .unwrap();
    assert!(error.contains("--tls-ca"), "{error}");
    setup.node.stop().await.unwrap();
}
