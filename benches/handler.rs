//! The whole invocation, and what the Lambda runtime adds around it.
//!
//! - `handler/<model>/N`: `Handler::handle_bytes`, from the raw event bytes, as the runtime
//!   receives them, to the response bytes, with nothing published (`TEST_RUN`), for the
//!   bundled gradient-boosting model and the linear one. Compare `handler/bike-linear/N` with
//!   `floor/N` (benches/event.rs).
//! - `handler/<kind>/10000`: the same for models of other kinds
//!   (`tests/fixtures/model-kinds/`): `columns-float-string`, a scikit-learn pipeline with one
//!   input per column and a one-hot-encoded string column, and `classifier-zipmap`, a
//!   classifier whose probabilities come as ZipMap's sequence of maps.
//! - `publish/<how>/10000`: the bundled model's 10,000-record event handled with its events
//!   published to a local Kinesis server that answers each `PutRecords` call after 20 ms, a
//!   realistic round trip to Kinesis, with `PUBLISH_CONCURRENCY` calls in flight (1, one call
//!   after another, to 32, the default), and with the events packed into KPL aggregated
//!   records (`kpl`, `OUTPUT_AGGREGATION=kpl`), against the same event with `TEST_RUN`
//!   (`test-run`). The difference is what publishing adds to an invocation.
//! - `lambda_runtime/*/N`: the work done outside the handler when the function serves Lambda
//!   (src/main.rs `serve`, lambda_runtime 1.5). lambda_runtime deserializes the invocation body
//!   into the handler's payload type through `serde_path_to_error` (its
//!   `deserializer::deserialize`), which tracks the path of every value, so:
//!   - `event_in`: the body into `EventBody` (a `KinesisBatch` or why the body is not one),
//!     the payload type `serve` asks for, that way;
//!   - `raw_value_in`: the body into `Box<RawValue>` that way, the alternative of taking the
//!     event as text and parsing it in the handler (`decode/total` on top);
//!   - `response_out`: the response back through `String::from_utf8`,
//!     `RawValue::from_string` (a full JSON validation) and lambda_runtime's
//!     `serde_json::to_vec` of the body, as `serve` returns it.
//!
//!   Lambda bills these too; the handler benches do not include them.

mod common;

use std::hint::black_box;

use bike_prediction::handler::Handler;
use bike_prediction::kinesis::EventBody;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use serde_json::value::RawValue;

/// Like the Lambda runtime: one thread, the handler awaited on it.
fn tokio_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a tokio runtime")
}

/// Benches `handler` on `event`, awaited on `tokio` as the runtime awaits it.
fn bench_handling(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    id: criterion::BenchmarkId,
    tokio: &tokio::runtime::Runtime,
    handler: &Handler,
    event: &[u8],
) {
    group.bench_function(id, |b| {
        b.to_async(tokio).iter(|| async {
            handler
                .handle_bytes(black_box(event))
                .await
                .expect("handled")
        })
    });
}

fn events() -> Vec<(usize, Vec<u8>)> {
    common::SIZES
        .into_iter()
        .map(|records| (records, common::kinesis_event(records)))
        .collect()
}

fn handler(c: &mut Criterion) {
    let tokio = tokio_runtime();
    let events = events();
    for name in common::MODELS {
        // Built once, outside the timed closure, as at cold start; no publisher.
        let handler = Handler::new(common::load_model(name), name, "run");
        let mut group = c.benchmark_group(format!("handler/{name}"));
        for (records, event) in &events {
            let response = tokio
                .block_on(handler.handle_bytes(event))
                .expect("the event is handled")
                .response;
            let response: serde_json::Value = serde_json::from_slice(&response).expect("JSON");
            assert_eq!(
                response["predictions"].as_array().map(Vec::len),
                Some(*records)
            );
            let id = common::batch(&mut group, *records);
            bench_handling(&mut group, id, &tokio, &handler, event);
        }
        group.finish();
    }
}

fn kinds(c: &mut Criterion) {
    let tokio = tokio_runtime();
    let records = 10_000;
    for kind in ["columns-float-string", "classifier-zipmap"] {
        let handler = Handler::new(common::load_kind(kind), kind, "run");
        let event = common::kind_event(kind, records);
        let response = tokio
            .block_on(handler.handle_bytes(&event))
            .expect("the event is handled")
            .response;
        let response: serde_json::Value = serde_json::from_slice(&response).expect("JSON");
        assert_eq!(
            response["predictions"].as_array().map(Vec::len),
            Some(records)
        );
        let mut group = c.benchmark_group(format!("handler/{kind}"));
        let id = common::batch(&mut group, records);
        bench_handling(&mut group, id, &tokio, &handler, &event);
        group.finish();
    }
}

fn lambda_runtime(c: &mut Criterion) {
    let tokio = tokio_runtime();
    let events = events();
    let handler = Handler::new(common::load_model("bike-linear"), "bike-linear", "run");

    let mut group = c.benchmark_group("lambda_runtime/event_in");
    for (records, event) in &events {
        let id = common::batch(&mut group, *records);
        group.bench_function(id, |b| {
            b.iter(|| {
                let deserializer = &mut serde_json::Deserializer::from_slice(black_box(event));
                let payload: EventBody =
                    serde_path_to_error::deserialize(deserializer).expect("never fails");
                payload.0.expect("a Kinesis event")
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("lambda_runtime/raw_value_in");
    for (records, event) in &events {
        let id = common::batch(&mut group, *records);
        group.bench_function(id, |b| {
            b.iter(|| {
                let deserializer = &mut serde_json::Deserializer::from_slice(black_box(event));
                let payload: Box<RawValue> =
                    serde_path_to_error::deserialize(deserializer).expect("a JSON event");
                payload
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("lambda_runtime/response_out");
    for (records, event) in &events {
        let response = tokio
            .block_on(handler.handle_bytes(event))
            .expect("the event is handled")
            .response;
        let id = common::batch(&mut group, *records);
        group.bench_function(id, |b| {
            b.iter_batched(
                // The handler's response, handed over by value as `serve` does.
                || response.clone(),
                |response| {
                    let text = String::from_utf8(response).expect("UTF-8");
                    let body = RawValue::from_string(text).expect("JSON");
                    serde_json::to_vec(&body).expect("a RawValue serializes")
                },
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

fn publish(c: &mut Criterion) {
    use bike_prediction::pack::ShardMap;
    use bike_prediction::publish::{Publisher, RetryPolicy};
    // Timers and sockets on, as in the function.
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let records = 10_000;
    let event = common::kinesis_event(records);
    let kinesis = common::kinesis_with_latency(std::time::Duration::from_millis(20));
    let mut group = c.benchmark_group("publish");
    group
        .throughput(criterion::Throughput::Elements(records as u64))
        .sampling_mode(criterion::SamplingMode::Flat)
        .sample_size(10)
        .measurement_time(std::time::Duration::from_secs(4));
    let settings = [
        ("test-run", None, false),
        ("concurrency-1", Some(1), false),
        ("concurrency-4", Some(4), false),
        ("concurrency-8", Some(8), false),
        ("concurrency-16", Some(16), false),
        ("concurrency-32", Some(32), false),
        ("kpl", Some(32), true),
    ];
    for (how, concurrency, aggregated) in settings {
        let mut handler = Handler::new(common::load_model("bike-demand"), "bike-demand", "run");
        if let Some(calls) = concurrency {
            let publisher = Publisher::new(kinesis.clone(), "out", RetryPolicy::default())
                .with_concurrency(calls);
            handler = handler.publishing_to(publisher);
        }
        if aggregated {
            // The server answers for one shard.
            handler = handler.aggregating(ShardMap::even(1));
        }
        let handled = tokio
            .block_on(handler.handle_bytes(&event))
            .expect("handled");
        let expected = if concurrency.is_some() { records } else { 0 };
        assert_eq!(handled.report.published, expected, "{how}");
        assert_eq!(handled.report.redeliver, 0, "{how}");
        let id = criterion::BenchmarkId::new(how, records);
        bench_handling(&mut group, id, &tokio, &handler, &event);
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::criterion();
    targets = handler, kinds, publish, lambda_runtime
}
criterion_main!(benches);
