//! The benches' local Kinesis endpoint as a process of its own (`tests/common/fake_kinesis.rs`),
//! for measuring what publishing adds to a served invocation (scripts/perf/publish.sh).
//!
//! It answers `PutRecords` after a fixed latency and accepts every entry, doing little work per
//! entry, so that many calls in flight at once are answered together, as Kinesis answers them,
//! instead of one after another. It keeps nothing and cannot be read back: for a Kinesis that
//! stores records and enforces the write limits, use the stand-in (`bike_local.kinesis_server`).
//!
//! Usage: kinesis_endpoint [--port PORT] [--latency-ms MS]   (defaults: any free port, 0 ms)
//! Prints `kinesis_endpoint: http://127.0.0.1:PORT` on stdout once it listens.

#[allow(dead_code)]
#[path = "../tests/common/fake_kinesis.rs"]
mod fake_kinesis;

use std::time::Duration;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let usage = "usage: kinesis_endpoint [--port PORT] [--latency-ms MS]";
    let (mut port, mut latency_ms) = (0u16, 0u64);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().expect(usage);
        match flag.as_str() {
            "--port" => port = value.parse().expect(usage),
            "--latency-ms" => latency_ms = value.parse().expect(usage),
            _ => panic!("{usage}"),
        }
    }
    let latency = Duration::from_millis(latency_ms);
    let (address, _) = fake_kinesis::listen(&format!("127.0.0.1:{port}"), latency, None).await;
    println!("kinesis_endpoint: http://{address}");
    std::future::pending::<()>().await
}
