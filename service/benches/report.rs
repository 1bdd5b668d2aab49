//! What a backend report costs against a check, on one node with the memory store: through the
//! limiter alone, and through the public HTTP router (parsing, the token, the answer), one
//! report per call as a backend reporting every request would send it.
//!
//! `cargo bench -p sluice-service --bench report`; figures and the command that produced them
//! are recorded in results/benchmarks/report-vs-check.md.

use std::{
    hint::black_box,
    sync::{Arc, atomic::AtomicBool},
};

use axum::body::Body;
use criterion::{Criterion, criterion_group, criterion_main};
use http_body_util::BodyExt;
use sluice::{
    config::{Config, Overrides},
    limiter::{BackendReport, CheckRequest, Limiter},
    metrics::Metrics,
    store::Backend,
};
use tower::ServiceExt;

const TOKEN: &str = "bench-report-token-0123";

/// One adaptive resource whose limit the benchmark never reaches.
const RULES: &str = r#"
[rules.api]
algorithm = "token_bucket"
capacity = 1000000000
refill_per_second = 1000000000
[rules.api.adaptive]
target_latency = "50ms"
"#;

fn setup(runtime: &tokio::runtime::Runtime) -> (Arc<Limiter<Backend>>, Config) {
    let overrides = Overrides {
        admin_addr: Some("127.0.0.1:0".into()),
        admin_tokens: Some(format!("backend:report:{TOKEN}")),
        ..Overrides::default()
    };
    let config = Config::parse(RULES, "bench", &overrides).expect("valid");
    let metrics = Metrics::new();
    let backend = runtime
        .block_on(sluice::server::build_backend(&config, &metrics))
        .expect("memory backend");
    (
        Arc::new(Limiter::from_config(&config, backend, metrics)),
        config,
    )
}

fn report_vs_check(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (limiter, config) = setup(&runtime);
    let mut group = c.benchmark_group("report_vs_check");
    group.bench_function("limiter/check", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let verdict = limiter
                    .check(CheckRequest {
                        key: black_box("client-1"),
                        resource: "api",
                        cost: None,
                    })
                    .await
                    .unwrap();
                black_box(verdict.outcome);
            })
        })
    });
    let one = [BackendReport {
        resource: "api",
        latency_us: 12_000,
        failed: false,
    }];
    group.bench_function("limiter/report", |b| {
        b.iter(|| limiter.report(black_box(&one)).unwrap())
    });

    let router = sluice::api::http::router(
        limiter.clone(),
        Arc::new(AtomicBool::new(true)),
        config.admin.as_ref().map(|admin| admin.tokens.clone()),
    );
    let call = |request: http::Request<Body>| {
        let router = router.clone();
        runtime.block_on(async move {
            let response = router.oneshot(request).await.unwrap();
            assert_eq!(response.status(), 200);
            black_box(response.into_body().collect().await.unwrap());
        })
    };
    group.bench_function("http/check", |b| {
        b.iter(|| {
            call(
                http::Request::post("/check?resource=api")
                    .header("x-api-key", "client-1")
                    .body(Body::empty())
                    .unwrap(),
            )
        })
    });
    group.bench_function("http/report", |b| {
        b.iter(|| {
            call(
                http::Request::post("/report")
                    .header("authorization", format!("Bearer {TOKEN}"))
                    .header("content-type", "application/json")
                    .body(Body::from(
                        r#"{"resource":"api","latency_ms":12.0,"failed":false}"#,
                    ))
                    .unwrap(),
            )
        })
    });
    group.finish();
}

criterion_group!(benches, report_vs_check);
criterion_main!(benches);
