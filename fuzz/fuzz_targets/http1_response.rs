//! The load generator's HTTP/1.1 client against a server that answers its request with any
//! bytes, then closes: the exchange ends (a response or an error) within the timeout, never
//! a panic.
#![no_main]

use std::time::Duration;

use transport::{http1::Connection, socket::Dialer};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let reply = data.to_vec();
    let address = fuzz_support::listener().local_addr().unwrap().to_string();
    fuzz_support::runtime().block_on(async move {
        let server = tokio::spawn(fuzz_support::reply_once(reply, b"\r\n\r\n"));
        let Ok(mut connection) = Connection::dial(&Dialer::plain(&address)).await else {
            let _ = server.await;
            return;
        };
        let request: &[&[u8]] = &[b"GET /healthz HTTP/1.1\r\nHost: fuzz\r\n\r\n"];
        let ended =
            tokio::time::timeout(Duration::from_secs(5), connection.exchange(request)).await;
        assert!(ended.is_ok(), "the exchange never ended");
        let _ = server.await;
    });
});
