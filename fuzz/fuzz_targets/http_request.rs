//! The public HTTP API (the axum router the node serves) with any request: a first line
//! `METHOD PATH`, header lines `name: value`, an empty line, then the body. Every request is
//! answered, never with a panic nor a 500.
#![no_main]

use std::sync::{Arc, atomic::AtomicBool};

use http_body_util::BodyExt;
use tower::ServiceExt;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some(request) = request(data) else {
        return;
    };
    let router = sluice::api::http::router(
        fuzz_support::limiter(),
        Arc::new(AtomicBool::new(true)),
        fuzz_support::reporters(),
    );
    fuzz_support::runtime().block_on(async move {
        let response = router.oneshot(request).await.expect("the router answers");
        let status = response.status();
        let _ = response.into_body().collect().await;
        assert_ne!(status, http::StatusCode::INTERNAL_SERVER_ERROR);
    });
});

fn request(data: &[u8]) -> Option<http::Request<axum::body::Body>> {
    let (head, body) = match data.windows(2).position(|pair| pair == b"\n\n") {
        Some(end) => (&data[..end], &data[end + 2..]),
        None => (data, &[][..]),
    };
    let mut lines = head.split(|byte| *byte == b'\n');
    let first = lines.next()?;
    let space = first.iter().position(|byte| *byte == b' ')?;
    let method = http::Method::from_bytes(&first[..space]).ok()?;
    let path = std::str::from_utf8(&first[space + 1..]).ok()?;
    let mut builder = http::Request::builder().method(method).uri(path);
    for line in lines {
        let colon = line.iter().position(|byte| *byte == b':')?;
        let name = http::HeaderName::from_bytes(&line[..colon]).ok()?;
        let value = http::HeaderValue::from_bytes(line[colon + 1..].trim_ascii()).ok()?;
        builder = builder.header(name, value);
    }
    builder.body(axum::body::Body::from(body.to_vec())).ok()
}
