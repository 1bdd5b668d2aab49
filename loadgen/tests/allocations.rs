//! What one request costs in heap allocations. The generator's own bookkeeping (picking a key,
//! recording latencies and outcomes, the ledger, its Prometheus metrics) must allocate nothing
//! per request, and so must its own gRPC (HTTP/2) and HTTP/1.1 clients: the whole path from
//! picking a key to recording the answer is counted here.
//!
//! Allocations are counted per thread: the generator runs on this test's thread (a
//! current-thread runtime), the service on threads of its own.

use std::{
    alloc::{GlobalAlloc, Layout, System},
    cell::Cell,
    time::Duration,
};

use loadgen::{
    engine::{self, LoadModel, RunConfig},
    keys::{Distribution, KeyPicker},
    ledger::KeyLedger,
    metrics::ClientMetrics,
    stats::{Interval, Outcome, Recorder},
    wire::{Answer, Call, Endpoint},
};
use sluice::{
    config::{Config, Overrides},
    server,
};

struct CountingAllocator;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn count_one() {
    let _ = ALLOCATIONS.try_with(|count| count.set(count.get() + 1));
}

// SAFETY: every call is passed to the system allocator unchanged; counting touches only a
// const-initialized thread-local with no destructor.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_one();
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count_one();
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_one();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

#[test]
fn bookkeeping_allocates_nothing_per_request() {
    let targets = 2;
    let mut picker = KeyPicker::new(Distribution::Zipf(1.1), 10_000, 7);
    let mut recorder = Recorder::new(targets);
    let mut interval = Interval::new(targets);
    let ledger: Vec<KeyLedger> = (0..10_000).map(|_| KeyLedger::default()).collect();
    let metrics = ClientMetrics::new(&["a".into(), "b".into()]);
    let answer = Answer {
        allowed: true,
        banned: false,
        shadow_denied: false,
        limit: 100,
        remaining: 3,
        reset_after_us: 1_000,
        retry_after_us: 0,
        policy_window_us: 1_000_000,
        algorithm: None,
        failed_over: false,
        limits: Default::default(),
    };
    let mut one_request = |i: u64| {
        let key = picker.next_index();
        let result = if i.is_multiple_of(3) {
            Ok(Answer {
                allowed: false,
                ..answer
            })
        } else {
            Ok(answer)
        };
        ledger[key].record(1, &result);
        let outcome = Outcome::of(result.as_ref().unwrap());
        // Latencies over the whole range, so every histogram has grown to its size already.
        let latency = 1 + (i * 7919) % 60_000_000;
        recorder.record((i % 2) as usize, outcome, latency, latency / 2);
        recorder.lag.saturating_record(latency / 3);
        interval.record((i % 2) as usize, outcome, latency);
        metrics.observe((i % 2) as usize, outcome, latency, latency / 3);
    };
    for i in 0..100_000 {
        one_request(i);
    }
    let before = allocations();
    for i in 100_000..300_000 {
        one_request(i);
    }
    assert_eq!(
        allocations() - before,
        0,
        "the per-request bookkeeping allocated"
    );
}

/// Allocations per request of a whole run, at the margin: the difference between two runs of
/// different lengths, so connection set-up and reports cancel out.
fn allocations_per_request(target: &Endpoint, call: Call) -> f64 {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let run = |requests: u64| {
        let mut config = RunConfig::new(vec![target.clone()]);
        config.model = LoadModel::Closed { concurrency: 16 };
        config.connections = 2;
        config.requests = Some(requests);
        config.duration = Some(Duration::from_secs(60));
        config.call = call;
        let before = allocations();
        let result = runtime.block_on(engine::run(config)).unwrap();
        assert_eq!(result.recorder.counts.errors(), 0, "{target} {call:?}");
        assert_eq!(result.recorder.counts.total(), requests);
        allocations() - before
    };
    run(2_000);
    let short = run(10_000);
    let long = run(30_000);
    (long as f64 - short as f64) / 20_000.0
}

#[test]
fn a_request_allocates_nothing_on_either_protocol() {
    let service = std::thread::spawn(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let overrides = Overrides::loopback("loadgen:admin:loadgen-test-admin-token");
        let rules = "[default_rule]\nalgorithm = \"token_bucket\"\ncapacity = 100\nrefill_per_second = 10\n";
        let config = Config::parse(rules, "test", &overrides).unwrap();
        let node = runtime.block_on(server::start(config)).unwrap();
        let addresses = (node.grpc_addr, node.http_addr);
        (runtime, node, addresses)
    });
    let (_runtime, _node, (grpc, http)) = service.join().unwrap();
    let grpc: Endpoint = format!("grpc://{grpc}").parse().unwrap();
    let http: Endpoint = format!("http://{http}").parse().unwrap();
    // Measured: 0.01-0.03 per request on loadgen's own clients (an occasional new read buffer
    // or HPACK table entry). Through hyper they were 15 per gRPC call (8 on the h2 crate
    // alone), 6 per HTTP /healthz and 14 per /check. The bound leaves no room for an
    // allocation per request.
    let limits = [
        (&grpc, Call::Check, 0.5),
        (&grpc, Call::Health, 0.5),
        (&http, Call::Check, 0.5),
        (&http, Call::Health, 0.5),
    ];
    let mut measured = Vec::new();
    for (target, call, limit) in limits {
        let per_request = allocations_per_request(target, call);
        measured.push(format!("{target} {call:?}: {per_request:.2}"));
        assert!(
            per_request <= limit,
            "{target} {call:?}: {per_request:.2} allocations per request, at most {limit} expected ({measured:?})"
        );
    }
    println!("allocations per request: {measured:?}");
}
