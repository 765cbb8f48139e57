//! Lambda's size limits: a request filled to the 6 MB invocation limit, whose response would
//! be larger than the 6 MB Lambda takes back, gets a response within it, with nothing lost
//! from the accounting.

mod common;

use bike_prediction::handler::{Handler, Invocation};
use bike_prediction::kinesis::KinesisBatch;
use bike_prediction::output::MAX_RESPONSE_BYTES;
use common::{bundled_model, kinesis_event, load_model, payload, reference};

/// Lambda's largest synchronous request: 6 MB.
const MAX_REQUEST_BYTES: usize = 6 * 1024 * 1024;

/// A Kinesis event of exactly `MAX_REQUEST_BYTES` (give or take the bytes base64 cannot
/// split), of small good records.
fn full_request() -> (Vec<u8>, usize) {
    let reference = reference();
    let record = |i: usize, padding: usize| {
        let record = payload(
            &reference.columns,
            &reference.rows[i % 2000],
            &serde_json::json!(i),
        );
        let mut record: serde_json::Value = serde_json::from_slice(&record).unwrap();
        // An unknown field, ignored, to bring the request to the limit.
        record["padding"] = "x".repeat(padding).into();
        serde_json::to_vec(&record).unwrap()
    };
    let one = kinesis_event(&[record(0, 0)]).len();
    let count = MAX_REQUEST_BYTES / one;
    let mut payloads: Vec<Vec<u8>> = (0..count).map(|i| record(i, 0)).collect();
    // Pad the last record as far as the limit allows: base64 grows 4 bytes per 3.
    let mut padding = 0;
    loop {
        payloads[count - 1] = record(count - 1, padding + 1);
        if kinesis_event(&payloads).len() > MAX_REQUEST_BYTES {
            payloads[count - 1] = record(count - 1, padding);
            return (kinesis_event(&payloads), count);
        }
        let short = MAX_REQUEST_BYTES - kinesis_event(&payloads).len();
        padding += (short * 3 / 4).saturating_sub(4).max(1);
    }
}

#[tokio::test]
async fn a_full_request_gets_a_response_within_lambda_limit_with_every_record_counted() {
    let (event, count) = full_request();
    assert!(event.len() <= MAX_REQUEST_BYTES && event.len() + 16 > MAX_REQUEST_BYTES);
    let records = KinesisBatch::from_slice(&event).unwrap();
    // A long model name, on every event: the events are larger than the records.
    let model_name = "bike-demand-".repeat(100);
    let handler = Handler::new(
        load_model(&bundled_model("bike-demand")).unwrap(),
        &model_name,
        "run",
    );
    let unlimited = handler
        .handle(&records, &Invocation::default())
        .await
        .unwrap();
    assert!(
        unlimited.response.len() > MAX_RESPONSE_BYTES,
        "the case must be one whose whole response is too large: {} bytes",
        unlimited.response.len()
    );

    let lambda = Invocation {
        response_limit: Some(MAX_RESPONSE_BYTES),
        ..Invocation::default()
    };
    let handled = handler.handle(&records, &lambda).await.unwrap();
    assert!(
        handled.response.len() <= MAX_RESPONSE_BYTES,
        "{}",
        handled.response.len()
    );
    let response: serde_json::Value = serde_json::from_slice(&handled.response).unwrap();
    let listed = response["predictions"].as_array().unwrap().len();
    let omitted = response["omitted"]["predictions"].as_u64().unwrap() as usize;
    assert!(listed > 0 && omitted > 0);
    assert_eq!(listed + omitted, count);
    assert_eq!(handled.report.predicted, count);
    assert_eq!(response["omitted"]["rejected"], 0);
    // The predictions listed are the first ones, exactly as without a limit.
    let all: serde_json::Value = serde_json::from_slice(&unlimited.response).unwrap();
    assert_eq!(
        response["predictions"].as_array().unwrap()[..],
        all["predictions"].as_array().unwrap()[..listed]
    );
}
