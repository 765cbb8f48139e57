//! Runs one stage of the hot path a fixed number of times on the benches' events, for
//! instruction-level profiling with `valgrind --tool=callgrind` (scripts/perf/profile.sh).
//!
//! Criterion's timings move with the load of this shared machine; callgrind's instruction
//! counts do not. The measured calls are all inside `measured`, so callgrind can collect only
//! them (`--collect-atstart=no --toggle-collect=*perf_profile::measured*`): building the event,
//! loading the model and the first, warm-up call are left out. Run alone, it prints the
//! fastest and the median round (on a busy machine the fastest is the best estimate of the
//! uncontended cost) and the allocator calls per record, which the hot path should not make.
//!
//! Usage: perf_profile STAGE RECORDS ROUNDS [MODEL]
//!   STAGE  floor | decode | payloads | runtime-in | handler | publish | publish-kpl
//!          (benches: floor/N, decode/total/N, decode/payloads/N, lambda_runtime/event_in/N,
//!          handler/MODEL/N, and for `publish` handler/MODEL/N with every event published
//!          to a local Kinesis server that answers at once, on a thread of its own;
//!          `publish-kpl` the same with the events packed for a stream of four shards)
//!   MODEL  bike-demand | bike-linear  (handler only; default bike-linear)
//! Environment: LATENCY_MS, for `publish` and `publish-kpl`: the server answers each call
//! after that many milliseconds (default 0). TREE_KERNEL=onnxruntime runs the model's tree
//! ensembles on ONNX Runtime's kernel instead of the service's (as the function's variable).

#[path = "../benches/common/mod.rs"]
mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bike_prediction::event;
use bike_prediction::handler::Handler;
use bike_prediction::inputs::InputLayout;
use bike_prediction::kinesis::KinesisBatch;

/// The system allocator, counting calls, to show how many allocations a record costs.
struct CountingAllocator;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);
static REALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is passed on unchanged to the system allocator.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        REALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// One stage of the hot path, set up outside the measured calls.
enum Stage {
    Floor,
    Decode(InputLayout),
    /// Only the payloads, from a batch read outside the measured calls.
    Payloads(InputLayout, KinesisBatch),
    /// What lambda_runtime does with the invocation body before the handler sees it.
    RuntimeIn,
    Handler(Box<Handler>, tokio::runtime::Runtime),
}

impl Stage {
    fn run(&self, event: &[u8]) -> usize {
        match self {
            Stage::Floor => common::floor(event),
            Stage::Decode(layout) => {
                let kinesis = KinesisBatch::from_slice(event).expect("a Kinesis event");
                event::decode(&kinesis, layout).1.rows
            }
            Stage::Payloads(layout, kinesis) => event::decode(kinesis, layout).1.rows,
            Stage::RuntimeIn => {
                let deserializer = &mut serde_json::Deserializer::from_slice(event);
                let records: KinesisBatch =
                    serde_path_to_error::deserialize(deserializer).expect("a Kinesis event");
                records.len()
            }
            Stage::Handler(handler, tokio) => tokio
                .block_on(handler.handle_bytes(event))
                .expect("the event is handled")
                .response
                .len(),
        }
    }
}

/// Every call callgrind should count, and nothing else; each round's wall time goes into
/// `times` (allocated by the caller, so that it is not counted).
#[inline(never)]
fn measured(stage: &Stage, event: &[u8], times: &mut [Duration]) {
    for time in times {
        let started = Instant::now();
        black_box(stage.run(black_box(event)));
        *time = started.elapsed();
    }
}

fn main() {
    let usage = "usage: perf_profile floor|decode|payloads|runtime-in|handler|publish|publish-kpl RECORDS ROUNDS [bike-demand|bike-linear]";
    // As the function does at start, so that rounds reuse each other's memory.
    bike_prediction::memory::keep_freed_memory();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [stage, records, rounds, rest @ ..] = args.as_slice() else {
        panic!("{usage}");
    };
    let records: usize = records.parse().expect(usage);
    let rounds: usize = rounds.parse().expect(usage);
    assert!(rounds > 0, "{usage}");
    let model = rest.first().map_or("bike-linear", String::as_str);
    let stage = match stage.as_str() {
        "floor" => Stage::Floor,
        "decode" => Stage::Decode(InputLayout::float_columns(&common::reference().columns)),
        "payloads" => Stage::Payloads(
            InputLayout::float_columns(&common::reference().columns),
            KinesisBatch::from_slice(&common::kinesis_event(records)).expect("a Kinesis event"),
        ),
        "runtime-in" => Stage::RuntimeIn,
        "handler" => {
            let tokio = tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("a tokio runtime");
            let kernel = match std::env::var("TREE_KERNEL").as_deref() {
                Ok("onnxruntime") => bike_prediction::trees::TreeKernel::OnnxRuntime,
                _ => bike_prediction::trees::TreeKernel::Native,
            };
            let handler = Handler::new(common::load_model_with(model, 1, kernel), model, "run");
            Stage::Handler(Box::new(handler), tokio)
        }
        "publish" | "publish-kpl" => {
            use bike_prediction::pack::ShardMap;
            use bike_prediction::publish::{Publisher, RetryPolicy};
            let tokio = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a tokio runtime");
            // LATENCY_MS: the server answers each call after that long (default at once).
            let latency = std::env::var("LATENCY_MS")
                .ok()
                .and_then(|ms| ms.parse().ok())
                .map_or(Duration::ZERO, Duration::from_millis);
            let kinesis = common::kinesis_with_latency(latency);
            let publisher = Publisher::new(kinesis, "out", RetryPolicy::default());
            let mut handler =
                Handler::new(common::load_model(model), model, "run").publishing_to(publisher);
            if stage == "publish-kpl" {
                // Four shards, as `aws kinesis create-stream --shard-count 4` splits the keys.
                let shards = ShardMap::even(4);
                handler = handler.aggregating(shards);
            }
            Stage::Handler(Box::new(handler), tokio)
        }
        _ => panic!("{usage}"),
    };
    let event = common::kinesis_event(records);
    // Warm-up: first-call allocations and lazy initialisation are not the steady state.
    stage.run(&event);
    let allocations = ALLOCATIONS.load(Ordering::Relaxed);
    let reallocations = REALLOCATIONS.load(Ordering::Relaxed);
    let mut times = vec![Duration::ZERO; rounds];
    measured(&stage, &event, &mut times);
    let per_record = |count: &AtomicUsize, before: usize| {
        (count.load(Ordering::Relaxed) - before) as f64 / (rounds * records) as f64
    };
    // On a shared machine the fastest round is the best estimate of the uncontended cost; the
    // median says how typical it is.
    times.sort();
    println!(
        "{records} records, {rounds} rounds: fastest {:?}, median {:?} per round",
        times[0],
        times[rounds / 2]
    );
    println!(
        "allocations per record: {:.3} allocs, {:.3} reallocs",
        per_record(&ALLOCATIONS, allocations),
        per_record(&REALLOCATIONS, reallocations)
    );
}
