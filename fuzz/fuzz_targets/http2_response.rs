//! The load generator's HTTP/2 client (frames, HPACK, gRPC framing) against a server that
//! sends its SETTINGS, then any bytes, then closes: the call ends (an answer or an error)
//! within the timeout and the connection is marked closed; a panic in its task would leave
//! the call waiting.
#![no_main]

use std::time::Duration;

use transport::{http2::Connection, socket::Dialer};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut reply = vec![0, 0, 0, 4, 0, 0, 0, 0, 0];
    reply.extend_from_slice(data);
    let address = fuzz_support::listener().local_addr().unwrap().to_string();
    fuzz_support::runtime().block_on(async move {
        // The client's preface ends with its SETTINGS; the request may follow at once.
        let server = tokio::spawn(fuzz_support::reply_once(
            reply,
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        ));
        let Ok(connection) = Connection::connect(&Dialer::plain(&address)).await else {
            let _ = server.await;
            return;
        };
        let head = connection.request_head("/fuzz/Call");
        let call = connection.unary(&head, &[0, 0, 0, 0, 0]);
        let ended = tokio::time::timeout(Duration::from_secs(5), call).await;
        assert!(ended.is_ok(), "the call never ended");
        let _ = server.await;
        let closed = tokio::time::timeout(Duration::from_secs(5), async {
            while !connection.is_closed() {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await;
        assert!(closed.is_ok(), "the connection never closed");
    });
});
