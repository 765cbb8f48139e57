//! A local Kinesis server for tests and benches, in process: `PutRecords` answered after a
//! fixed latency, optionally within one shard's records-per-second limit. Included by
//! `tests/common` and `benches/common`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What a fake Kinesis server saw.
#[derive(Debug, Default)]
pub struct FakeKinesisStats {
    /// Entries accepted.
    pub accepted: Arc<AtomicUsize>,
    /// Entries answered with `ProvisionedThroughputExceededException`.
    pub throttled: AtomicUsize,
    /// `PutRecords` calls.
    pub calls: AtomicUsize,
    /// Calls being answered now, and the most there ever were at once.
    pub in_flight: AtomicUsize,
    pub max_in_flight: AtomicUsize,
    /// The partition keys of the accepted entries, in the order they were accepted.
    pub keys: Mutex<Vec<String>>,
}

/// The entries of a `PutRecords` request, as far as the server reads them.
#[derive(serde::Deserialize)]
struct Request<'a> {
    #[serde(rename = "Records", borrow)]
    records: Vec<RequestEntry<'a>>,
}

#[derive(serde::Deserialize)]
struct RequestEntry<'a> {
    #[serde(rename = "PartitionKey", borrow)]
    key: Key<'a>,
}

/// A partition key, borrowed from the request unless it has escapes.
#[derive(serde::Deserialize)]
struct Key<'a>(#[serde(borrow)] std::borrow::Cow<'a, str>);

/// Serves `PutRecords` on a new port of 127.0.0.1, on the current tokio runtime, answering each
/// call after `delay`, and, with `records_per_second`, taking at most that many entries a
/// second (a token bucket holding one second's worth, as a Kinesis shard): the entries over it
/// are answered with `ProvisionedThroughputExceededException` while the call's others are
/// accepted. Returns a client for it and what it saw.
pub async fn serve(
    delay: Duration,
    records_per_second: Option<f64>,
) -> (aws_sdk_kinesis::Client, Arc<FakeKinesisStats>) {
    let (address, stats) = listen("127.0.0.1:0", delay, records_per_second).await;
    (kinesis_at(address), stats)
}

/// [`serve`] on `address`; returns the address it listens on. Besides `PutRecords`, it answers
/// `DescribeStreamSummary` (an active stream of one shard, by any name) and `ListShards` (that
/// shard), at once, as a function's cold start asks them; any other call is refused.
pub async fn listen(
    address: &str,
    delay: Duration,
    records_per_second: Option<f64>,
) -> (std::net::SocketAddr, Arc<FakeKinesisStats>) {
    let listener = tokio::net::TcpListener::bind(address).await.unwrap();
    let address = listener.local_addr().unwrap();
    let stats = Arc::new(FakeKinesisStats::default());
    let bucket = Arc::new(Mutex::new((
        records_per_second.unwrap_or(0.0),
        std::time::Instant::now(),
    )));
    let server_stats = stats.clone();
    tokio::spawn(async move {
        while let Ok((mut connection, _)) = listener.accept().await {
            let stats = server_stats.clone();
            let bucket = bucket.clone();
            tokio::spawn(async move {
                let mut buffer = Vec::new();
                loop {
                    // One request: headers, then `content-length` bytes of body.
                    let mut chunk = [0u8; 64 * 1024];
                    let end = loop {
                        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                            break end + 4;
                        }
                        match connection.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(read) => buffer.extend_from_slice(&chunk[..read]),
                        }
                    };
                    let headers = String::from_utf8_lossy(&buffer[..end]).to_ascii_lowercase();
                    let length: usize = headers
                        .lines()
                        .find_map(|line| line.strip_prefix("content-length:"))
                        .map_or(0, |value| value.trim().parse().unwrap());
                    while buffer.len() < end + length {
                        match connection.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(read) => buffer.extend_from_slice(&chunk[..read]),
                        }
                    }
                    let target = headers
                        .lines()
                        .find_map(|line| line.strip_prefix("x-amz-target:"))
                        .map_or("", str::trim);
                    if let Some(answer) = control_answer(target, &buffer[end..end + length]) {
                        buffer.drain(..end + length);
                        if connection.write_all(answer.as_bytes()).await.is_err() {
                            return;
                        }
                        continue;
                    }
                    let request: Option<Request<'_>> =
                        serde_json::from_slice(&buffer[end..end + length]).ok();
                    let keys: Vec<String> = request
                        .map(|request| {
                            request
                                .records
                                .into_iter()
                                .map(|entry| entry.key.0.into_owned())
                                .collect()
                        })
                        .unwrap_or_default();
                    buffer.drain(..end + length);
                    stats.calls.fetch_add(1, Ordering::Relaxed);
                    let now = stats.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                    stats.max_in_flight.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(delay).await;
                    stats.in_flight.fetch_sub(1, Ordering::SeqCst);
                    // Written by hand, like the server's own answer would be: the bench measures
                    // the client, and a server that took longer than it would hold it up.
                    let mut answer = String::with_capacity(64 + keys.len() * 80);
                    let mut failed = 0;
                    let mut taken_keys = Vec::with_capacity(keys.len());
                    for (i, key) in keys.into_iter().enumerate() {
                        let taken = match records_per_second {
                            None => true,
                            Some(rate) => {
                                let mut bucket = bucket.lock().unwrap();
                                let (tokens, since) = &mut *bucket;
                                *tokens =
                                    (*tokens + since.elapsed().as_secs_f64() * rate).min(rate);
                                *since = std::time::Instant::now();
                                let taken = *tokens >= 1.0;
                                if taken {
                                    *tokens -= 1.0;
                                }
                                taken
                            }
                        };
                        answer.push_str(if i == 0 { "" } else { "," });
                        if taken {
                            taken_keys.push(key);
                            answer.push_str(r#"{"SequenceNumber":""#);
                            answer.push_str(&i.to_string());
                            answer.push_str(r#"","ShardId":"shardId-000000000000"}"#);
                        } else {
                            failed += 1;
                            answer.push_str(r#"{"ErrorCode":"ProvisionedThroughputExceededException","ErrorMessage":"Rate exceeded for shard shardId-000000000000"}"#);
                        }
                    }
                    stats
                        .accepted
                        .fetch_add(taken_keys.len(), Ordering::Relaxed);
                    stats.throttled.fetch_add(failed, Ordering::Relaxed);
                    stats.keys.lock().unwrap().extend(taken_keys);
                    let answer =
                        format!(r#"{{"FailedRecordCount":{failed},"Records":[{answer}]}}"#);
                    let response = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/x-amz-json-1.1\r\ncontent-length: {}\r\n\r\n{answer}",
                        answer.len()
                    );
                    if connection.write_all(response.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (address, stats)
}

/// The whole HTTP answer to a call other than `PutRecords` (`target` is its `X-Amz-Target`,
/// lowercased), or `None` for `PutRecords`.
fn control_answer(target: &str, body: &[u8]) -> Option<String> {
    let operation = target.strip_prefix("kinesis_20131202.");
    if operation == Some("putrecords") {
        return None;
    }
    let request: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let name = request["StreamName"].as_str().unwrap_or("stream");
    let (status, answer) = match operation {
        Some("describestreamsummary") => (
            "200 OK",
            serde_json::json!({"StreamDescriptionSummary": {
                "StreamName": name,
                "StreamARN": format!("arn:aws:kinesis:us-east-1:123456789012:stream/{name}"),
                "StreamStatus": "ACTIVE",
                "StreamModeDetails": {"StreamMode": "PROVISIONED"},
                "RetentionPeriodHours": 24,
                "StreamCreationTimestamp": 1.7e9,
                "EnhancedMonitoring": [{"ShardLevelMetrics": []}],
                "EncryptionType": "NONE",
                "OpenShardCount": 1,
                "ConsumerCount": 0,
            }}),
        ),
        Some("listshards") => (
            "200 OK",
            serde_json::json!({"Shards": [{
                "ShardId": "shardId-000000000000",
                "HashKeyRange": {
                    "StartingHashKey": "0",
                    "EndingHashKey": u128::MAX.to_string(),
                },
                "SequenceNumberRange": {"StartingSequenceNumber": "0"},
            }]}),
        ),
        _ => (
            "400 Bad Request",
            serde_json::json!({"__type": "UnknownOperationException", "message": target}),
        ),
    };
    let answer = answer.to_string();
    Some(format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/x-amz-json-1.1\r\ncontent-length: {}\r\n\r\n{answer}",
        answer.len()
    ))
}

/// A Kinesis client for the server at `address`, with test credentials and the publishing
/// client's timeouts.
pub fn kinesis_at(address: std::net::SocketAddr) -> aws_sdk_kinesis::Client {
    let config = aws_sdk_kinesis::Config::builder()
        .behavior_version(aws_sdk_kinesis::config::BehaviorVersion::latest())
        .region(aws_sdk_kinesis::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_kinesis::config::Credentials::for_tests())
        .endpoint_url(format!("http://{address}"))
        .timeout_config(bike_prediction::publish::timeouts())
        .build();
    aws_sdk_kinesis::Client::from_conf(config)
}
