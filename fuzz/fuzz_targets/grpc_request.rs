//! The gRPC APIs (sluice.v1 and Envoy's RLS v3, the tonic services the node serves) with any
//! message bytes: the first byte picks the method, the rest is the protobuf payload. Every
//! call ends in an answer or a status, never a panic nor an internal error.
#![no_main]

use http_body_util::BodyExt;
use tower::ServiceExt;

const METHODS: [&str; 6] = [
    "/sluice.v1.RateLimiter/Check",
    "/sluice.v1.RateLimiter/Status",
    "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit",
    "/sluice.v1.RateLimiter/Report",
    "/sluice.v1.RateLimiter/Acquire",
    "/sluice.v1.RateLimiter/Release",
];

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&pick, message)) = data.split_first() else {
        return;
    };
    let method = METHODS[pick as usize % METHODS.len()];
    let mut frame = Vec::with_capacity(message.len() + 5);
    frame.push(0);
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(message);
    let request = http::Request::post(method)
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        // Report's token, so its reading of the reports is reached too.
        .header(
            "authorization",
            format!("Bearer {}", fuzz_support::REPORT_TOKEN),
        )
        .body(http_body_util::Full::new(bytes::Bytes::from(frame)))
        .expect("a request");
    let limiter = fuzz_support::limiter();
    fuzz_support::runtime().block_on(async move {
        let response = if method.starts_with("/envoy") {
            let settings = fuzz_support::config().envoy.settings.clone();
            sluice::api::rls::RlsApi::server(limiter, settings)
                .oneshot(request)
                .await
        } else {
            sluice::api::grpc::GrpcApi::server(limiter, fuzz_support::reporters())
                .oneshot(request)
                .await
        }
        .expect("the service answers");
        let collected = response.into_body().collect().await.expect("a body");
        if let Some(trailers) = collected.trailers() {
            let status = trailers.get("grpc-status").map(|value| value.as_bytes());
            // 13 is INTERNAL: a fault of the service, not of the input.
            assert_ne!(status, Some(&b"13"[..]), "{trailers:?}");
        }
    });
});
