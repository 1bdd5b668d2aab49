//! loadgen's own HTTP/2 client against a real HTTP/2 server (the h2 crate's, which tonic's
//! servers run on), scripted to do what the Sluice service never does on its happy path:
//! limit concurrent streams, answer slowly, answer in many frames, fail, go away.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use hyper::{HeaderMap, Response, StatusCode};
use transport::{ErrorKind, http2::Connection, socket::Dialer};

use tokio::net::TcpListener;

/// What the scripted server saw, for the tests to assert on (a panic in its tasks would go
/// unnoticed).
#[derive(Default)]
struct Observed {
    most_in_flight: AtomicUsize,
    /// Why the client reset each stream it reset.
    resets: std::sync::Mutex<Vec<h2::Reason>>,
}

/// What the scripted server does with a request, chosen by its path.
async fn answer(
    request: hyper::Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
    in_flight: Arc<AtomicUsize>,
    observed: Arc<Observed>,
) -> Result<(), h2::Error> {
    let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    observed.most_in_flight.fetch_max(now, Ordering::SeqCst);
    let path = request.uri().path().to_owned();
    let mut body = request.into_body();
    let mut message = BytesMut::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        let _ = body.flow_control().release_capacity(chunk.len());
        message.extend_from_slice(&chunk);
    }
    let trailers = |status: &'static str| {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", status.parse().unwrap());
        trailers
    };
    let ok = || {
        Response::builder()
            .status(StatusCode::OK)
            .header("content-type", "application/grpc")
            .body(())
            .unwrap()
    };
    match path.as_str() {
        "/test/Echo" => {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let mut send = respond.send_response(ok(), false)?;
            send.send_data(message.freeze(), false)?;
            send.send_trailers(trailers("0"))?;
        }
        "/test/Large" => {
            // 200 KiB in one gRPC message: h2 splits it into 16 KiB DATA frames.
            let size = 200 * 1024;
            let mut framed = BytesMut::new();
            framed.extend_from_slice(&[0]);
            framed.extend_from_slice(&(size as u32).to_be_bytes());
            framed.resize(5 + size, 7);
            let mut send = respond.send_response(ok(), false)?;
            send.send_data(framed.freeze(), false)?;
            send.send_trailers(trailers("0"))?;
        }
        "/test/InvalidArgument" => {
            // Trailers-only: the status in the response headers, END_STREAM on them.
            let mut response = ok();
            response
                .headers_mut()
                .insert("grpc-status", "3".parse().unwrap());
            respond.send_response(response, true)?;
        }
        "/test/UnavailableTrailer" => {
            let mut send = respond.send_response(ok(), false)?;
            send.send_data(message.freeze(), false)?;
            send.send_trailers(trailers("14"))?;
        }
        "/test/NoTrailers" => {
            let mut send = respond.send_response(ok(), false)?;
            send.send_data(message.freeze(), true)?;
        }
        "/test/NotFound" => {
            let response = Response::builder()
                .status(StatusCode::NOT_FOUND)
                .body(())
                .unwrap();
            respond.send_response(response, true)?;
        }
        "/test/Stall" => {
            // Never answers; the client's cancellation resets the stream.
            let reason = std::future::poll_fn(|cx| respond.poll_reset(cx)).await?;
            observed.resets.lock().unwrap().push(reason);
        }
        _ => respond.send_reset(h2::Reason::REFUSED_STREAM),
    }
    in_flight.fetch_sub(1, Ordering::SeqCst);
    Ok(())
}

struct Server {
    address: String,
    observed: Arc<Observed>,
    shutdown: tokio::sync::mpsc::Sender<()>,
}

/// An h2 server on a free loopback port, one connection at a time, at most `max_streams`
/// concurrent streams each. A message on `shutdown` sends GOAWAY on the current connection.
async fn serve(max_streams: u32) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let observed = Arc::new(Observed::default());
    let (shutdown, mut shutdown_requests) = tokio::sync::mpsc::channel::<()>(1);
    let seen = Arc::clone(&observed);
    tokio::spawn(async move {
        loop {
            let (socket, _) = listener.accept().await.unwrap();
            let mut connection = h2::server::Builder::new()
                .max_concurrent_streams(max_streams)
                .handshake::<_, Bytes>(socket)
                .await
                .unwrap();
            let in_flight = Arc::new(AtomicUsize::new(0));
            loop {
                tokio::select! {
                    accepted = connection.accept() => match accepted {
                        Some(Ok((request, respond))) => {
                            let (in_flight, seen) = (Arc::clone(&in_flight), Arc::clone(&seen));
                            tokio::spawn(answer(request, respond, in_flight, seen));
                        }
                        _ => break,
                    },
                    Some(()) = shutdown_requests.recv() => connection.graceful_shutdown(),
                }
            }
        }
    });
    Server {
        address,
        observed,
        shutdown,
    }
}

fn message(text: &str) -> Vec<u8> {
    let mut framed = vec![0];
    framed.extend_from_slice(&(text.len() as u32).to_be_bytes());
    framed.extend_from_slice(text.as_bytes());
    framed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_beyond_the_servers_stream_limit_wait_and_each_gets_its_own_answer() {
    let server = serve(2).await;
    let connection = Connection::connect(&Dialer::plain(&server.address))
        .await
        .unwrap();
    let echo = connection.request_head("/test/Echo");
    // Collected first, so all calls are in flight before any is awaited.
    let calls: Vec<_> = (0..24)
        .map(|i| {
            let (connection, echo) = (connection.clone(), echo.clone());
            tokio::spawn(async move {
                let answer = connection
                    .unary(&echo, &message(&format!("call {i}")))
                    .await;
                (i, answer)
            })
        })
        .collect();
    for call in calls {
        let (i, answer) = call.await.unwrap();
        assert_eq!(answer, Ok(Bytes::from(format!("call {i}"))));
    }
    assert_eq!(
        server.observed.most_in_flight.load(Ordering::SeqCst),
        2,
        "the client must keep to the server's SETTINGS_MAX_CONCURRENT_STREAMS, and use it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_answer_arrives_whole_and_errors_map_to_their_kinds() {
    let server = serve(100).await;
    let connection = Connection::connect(&Dialer::plain(&server.address))
        .await
        .unwrap();
    let call = |path: &'static str| {
        let head = connection.request_head(path);
        let connection = connection.clone();
        async move { connection.unary(&head, &message("x")).await }
    };
    let large = call("/test/Large").await.unwrap();
    assert_eq!(large.len(), 200 * 1024);
    assert!(large.iter().all(|&byte| byte == 7));
    assert_eq!(
        call("/test/InvalidArgument").await,
        Err(ErrorKind::InvalidArgument)
    );
    assert_eq!(
        call("/test/UnavailableTrailer").await,
        Err(ErrorKind::Unavailable)
    );
    assert_eq!(call("/test/NoTrailers").await, Err(ErrorKind::Unavailable));
    assert_eq!(call("/test/NotFound").await, Err(ErrorKind::Unavailable));
    assert_eq!(call("/test/Refused").await, Err(ErrorKind::Unavailable));
    // None of those broke the connection.
    assert!(!connection.is_closed());
    assert_eq!(call("/test/Echo").await, Ok(Bytes::from("x")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_call_cancels_its_stream_and_the_connection_goes_on() {
    let server = serve(1).await;
    let connection = Connection::connect(&Dialer::plain(&server.address))
        .await
        .unwrap();
    let stall = connection.request_head("/test/Stall");
    let abandoned = tokio::time::timeout(
        Duration::from_millis(100),
        connection.unary(&stall, &message("")),
    )
    .await;
    assert!(abandoned.is_err(), "the stalled call must still be waiting");
    // With one stream allowed, this call only starts once the stalled stream was reset and
    // the server counted it finished.
    let echo = connection.request_head("/test/Echo");
    let answer = tokio::time::timeout(
        Duration::from_secs(5),
        connection.unary(&echo, &message("after")),
    )
    .await
    .expect("the next call must not wait for the abandoned one");
    assert_eq!(answer, Ok(Bytes::from("after")));
    // The stalled stream's handler records the reset in its own task: give it a moment.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while server.observed.resets.lock().unwrap().is_empty()
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        *server.observed.resets.lock().unwrap(),
        [h2::Reason::CANCEL],
        "the abandoned stream must be reset with CANCEL, once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn goaway_marks_the_connection_closed_so_callers_redial() {
    let server = serve(100).await;
    let connection = Connection::connect(&Dialer::plain(&server.address))
        .await
        .unwrap();
    let echo = connection.request_head("/test/Echo");
    assert_eq!(
        connection.unary(&echo, &message("before")).await,
        Ok(Bytes::from("before"))
    );
    server.shutdown.send(()).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !connection.is_closed() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "GOAWAY did not close the connection"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        connection.unary(&echo, &message("after")).await,
        Err(ErrorKind::Unavailable)
    );
    let redialed = Connection::connect(connection.dialer()).await.unwrap();
    assert_eq!(
        redialed.unary(&echo, &message("again")).await,
        Ok(Bytes::from("again"))
    );
}

#[tokio::test]
async fn a_server_that_is_not_http2_is_a_clear_connect_error() {
    // An HTTP/1.1-only server answers the preface with an error and closes.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut buffer = [0; 64];
        let _ = socket.read(&mut buffer).await;
        let _ = socket
            .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
            .await;
    });
    let error = Connection::connect(&Dialer::plain(&address))
        .await
        .err()
        .expect("an error");
    let text = error.to_string();
    assert!(text.contains("without HTTP/2 SETTINGS"), "{text}");
}

/// Fuzzing the frame reader: a server that sends its SETTINGS, then whatever bytes (random,
/// or a valid frame header with random contents), then closes. Whatever arrives, the waiting
/// call ends (an answer or an error) and the connection is marked closed: a panic in the
/// connection's task would leave the call waiting forever.
#[test]
fn any_bytes_from_the_server_end_the_call_cleanly() {
    use proptest::prelude::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let frames = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..200),
        // A frame header that parses (length, type 0-9, flags, stream 1) and a random payload.
        (
            0u8..10,
            any::<u8>(),
            proptest::collection::vec(any::<u8>(), 0..64)
        )
            .prop_map(|(kind, flags, payload)| {
                let mut frame = (payload.len() as u32).to_be_bytes()[1..].to_vec();
                frame.extend_from_slice(&[kind, flags, 0, 0, 0, 1]);
                frame.extend_from_slice(&payload);
                frame
            }),
    ];
    let config = ProptestConfig::with_cases(300);
    proptest::test_runner::TestRunner::new(config)
        .run(&proptest::collection::vec(frames, 1..4), |sent| {
            runtime.block_on(async {
                let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
                let address = listener.local_addr().unwrap().to_string();
                let server = tokio::spawn(async move {
                    let (mut socket, _) = listener.accept().await.unwrap();
                    // An empty SETTINGS frame, then the fuzz.
                    socket
                        .write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0])
                        .await
                        .unwrap();
                    let mut preface = [0u8; 24];
                    let _ = socket.read_exact(&mut preface).await;
                    for bytes in sent {
                        let _ = socket.write_all(&bytes).await;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                });
                let connection = Connection::connect(&Dialer::plain(&address)).await.unwrap();
                let head = connection.request_head("/test/Echo");
                let request = message("x");
                let call = connection.unary(&head, &request);
                let ended = tokio::time::timeout(Duration::from_secs(2), call).await;
                prop_assert!(ended.is_ok(), "the call never ended");
                server.await.unwrap();
                let closed = tokio::time::timeout(Duration::from_secs(2), async {
                    while !connection.is_closed() {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                })
                .await;
                prop_assert!(closed.is_ok(), "the connection never closed");
                Ok(())
            })
        })
        .unwrap();
}
