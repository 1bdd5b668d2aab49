//! The generator's own HTTP/2 client against a second server implementation: gRPC's C core (Python
//! grpcio, tests/support/grpc_server.py), whose HTTP/2 framing and HPACK encoder (it indexes
//! headers in the dynamic table) are not the h2 crate's that every Rust server here runs on.

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    time::Duration,
};

use sluice_testkit::local_redis::free_port;
use transport::{ErrorKind, http2::Connection, socket::Dialer};

const INSTALL: &str = "`python3 -m pip install grpcio==1.85.3` (scripts/test does this)";

/// The C-core server on a free port, killed when dropped.
struct CoreServer {
    child: Child,
    address: String,
}

impl CoreServer {
    fn start(max_streams: u32) -> Self {
        let port = free_port().unwrap();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/grpc_server.py");
        let mut child = sluice_testkit::tools::spawn(
            Command::new("python3")
                .arg(script)
                .arg(port.to_string())
                .arg(max_streams.to_string())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped()),
            "`apt-get install -y python3`",
        )
        .unwrap();
        let mut ready = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut ready)
            .unwrap();
        if ready.trim() != "ready" {
            let mut said = String::new();
            let _ = std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut said);
            let _ = child.kill();
            panic!("the grpcio test server did not start ({said}); install it with {INSTALL}");
        }
        Self {
            child,
            address: format!("127.0.0.1:{port}"),
        }
    }

    async fn connect(&self) -> Connection {
        Connection::connect(&Dialer::plain(&self.address))
            .await
            .unwrap()
    }
}

impl Drop for CoreServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `payload` as one gRPC length-prefixed message.
fn framed(payload: &[u8]) -> Vec<u8> {
    let mut message = vec![0];
    message.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    message.extend_from_slice(payload);
    message
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_large_answers_and_errors_from_grpc_core() {
    let server = CoreServer::start(100);
    let connection = server.connect().await;
    let health = connection.request_head("/grpc.health.v1.Health/Check");
    // Again and again: C core's second answer refers to headers it indexed in the first.
    for _ in 0..3 {
        let answer = connection.unary(&health, &framed(&[])).await.unwrap();
        assert_eq!(&answer[..], [0x08, 0x01], "SERVING");
    }
    let large = connection.request_head("/test/Large");
    let answer = connection.unary(&large, &framed(&[])).await.unwrap();
    assert_eq!(answer.len(), 1 << 20);
    assert!(answer.iter().all(|byte| *byte == 7));
    let unavailable = connection.request_head("/test/Unavailable");
    assert_eq!(
        connection.unary(&unavailable, &framed(&[])).await,
        Err(ErrorKind::Unavailable)
    );
    let missing = connection.request_head("/test/Missing");
    assert!(connection.unary(&missing, &framed(&[])).await.is_err());
    // The connection survived all of it.
    assert!(!connection.is_closed());
    let answer = connection.unary(&health, &framed(&[])).await.unwrap();
    assert_eq!(&answer[..], [0x08, 0x01]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_past_grpc_cores_stream_limit_wait_and_each_gets_its_own_answer() {
    let server = CoreServer::start(4);
    let connection = server.connect().await;
    let echo = connection.request_head("/test/Echo");
    let calls: Vec<_> = (0..40)
        .map(|index| {
            let (connection, echo) = (connection.clone(), echo.clone());
            tokio::spawn(async move {
                let payload = format!("call {index}");
                let answer = tokio::time::timeout(
                    Duration::from_secs(10),
                    connection.unary(&echo, &framed(payload.as_bytes())),
                )
                .await
                .expect("answered within 10 s")
                .unwrap();
                assert_eq!(answer, payload.as_bytes());
            })
        })
        .collect();
    for call in calls {
        call.await.unwrap();
    }
}
