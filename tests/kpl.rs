//! Records aggregated by the `aws-kinesis-agg` library (`tools/bike_local/kpl.py`), the
//! reference for the KPL format, mixed with plain and corrupt records: every user record is
//! read as that library's deaggregator reads it, and predicted as Python onnxruntime predicts
//! its row.

mod common;

use std::io::Write as _;
use std::process::{Command, Stdio};

use base64::Engine as _;
use bike_prediction::handler::Handler;
use bike_prediction::kinesis::KinesisBatch;
use common::{bundled_model, close, kinesis_event, load_model, payload, reference, root};
use serde::Deserialize;
use serde_json::json;

/// Relative tolerance against the Python reference (see tests/reference.rs).
const TOLERANCE: f64 = 1e-4;

/// One aggregated record as the library wrote it, and its user records as the library's
/// deaggregator reads them back.
#[derive(Deserialize)]
struct Aggregated {
    data: String,
    #[serde(rename = "userRecords")]
    user_records: Vec<UserRecord>,
}

#[derive(Deserialize)]
struct UserRecord {
    #[serde(rename = "partitionKey")]
    partition_key: String,
    data: String,
    #[serde(rename = "subSequenceNumber")]
    sub_sequence_number: u32,
}

fn base64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

fn unbase64(text: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap()
}

/// The aggregates the library makes of `aggregates` (each a list of user records
/// `{"partitionKey", "data", "explicitHashKey"?}`).
fn aggregated_by_the_library(aggregates: &serde_json::Value) -> Vec<Aggregated> {
    let python = root().join(".venv/tools/bin/python");
    let mut child = Command::new(&python)
        .args(["-m", "bike_local.kpl"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e} (run scripts/local/setup-tools.sh)",
                python.display()
            )
        });
    let input = serde_json::to_vec(aggregates).unwrap();
    child.stdin.take().unwrap().write_all(&input).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "bike_local.kpl failed");
    serde_json::from_slice(&output.stdout).unwrap()
}

#[tokio::test]
async fn user_records_of_library_made_aggregates_are_read_as_the_library_reads_them_and_predicted()
{
    let reference = reference();
    let rows = reference.rows.len();
    let mut next_pred_id = 0;
    let mut feature_record = || {
        let pred_id = next_pred_id;
        next_pred_id += 1;
        payload(
            &reference.columns,
            &reference.rows[pred_id % rows],
            &json!(pred_id),
        )
    };
    // Three user records under two keys, one with an explicit hash key; fifty under seven
    // keys, the eighth not JSON.
    let small: Vec<_> = ["a", "b", "a"]
        .iter()
        .enumerate()
        .map(|(i, key)| {
            let mut record = json!({"partitionKey": key, "data": base64(&feature_record())});
            if i == 1 {
                record["explicitHashKey"] = json!("170141183460469231731687303715884105728");
            }
            record
        })
        .collect();
    let large: Vec<_> = (0..50)
        .map(|i| {
            let data = match i {
                7 => b"not json".to_vec(),
                _ => feature_record(),
            };
            json!({"partitionKey": format!("key-{}", i % 7), "data": base64(&data)})
        })
        .collect();
    let aggregated = aggregated_by_the_library(&json!([small, large]));
    let (small, large) = (unbase64(&aggregated[0].data), unbase64(&aggregated[1].data));
    let mut altered = small.clone();
    let middle = altered.len() / 2;
    altered[middle] ^= 0x40;
    let truncated = small[..12].to_vec();

    // Plain records around the aggregates and the corrupt ones.
    let records = vec![
        feature_record(),
        small.clone(),
        feature_record(),
        large,
        altered.clone(),
        truncated.clone(),
        feature_record(),
    ];
    let event = kinesis_event(&records);

    // Read as the library's deaggregator reads them: the user records of each aggregate, in
    // order, with its keys and sub-sequence numbers, under the aggregate's sequence number.
    let batch = KinesisBatch::from_slice(&event).unwrap();
    let mut read = batch.iter();
    let mut sequence_numbers = Vec::new();
    for (index, data) in records.iter().enumerate() {
        let aggregate = match index {
            1 => Some(&aggregated[0]),
            3 => Some(&aggregated[1]),
            _ => None,
        };
        match aggregate {
            Some(aggregate) => {
                let mut sequence_number = None;
                for expected in &aggregate.user_records {
                    let record = read.next().unwrap();
                    assert_eq!(record.data, Ok(unbase64(&expected.data).as_slice()));
                    assert_eq!(record.partition_key, expected.partition_key);
                    assert_eq!(
                        record.sub_sequence_number,
                        Some(expected.sub_sequence_number)
                    );
                    assert_eq!(record.invalid_aggregate, None);
                    assert_eq!(
                        *sequence_number.get_or_insert(record.sequence_number),
                        record.sequence_number
                    );
                }
                sequence_numbers.push(sequence_number.unwrap().to_owned());
            }
            None => {
                let record = read.next().unwrap();
                assert_eq!(record.data, Ok(data.as_slice()), "record {index}");
                assert_eq!(record.sub_sequence_number, None);
                assert_eq!(record.partition_key, index.to_string());
                assert_eq!(record.invalid_aggregate.is_some(), index == 4 || index == 5);
                sequence_numbers.push(record.sequence_number.to_owned());
            }
        }
    }
    assert!(read.next().is_none());

    // Every feature record predicted as Python onnxruntime predicts its row.
    let model = load_model(&bundled_model("bike-demand")).unwrap();
    let handler = Handler::new(model, "bike-demand", "run-1");
    let response = handler.handle_bytes(&event).await.unwrap().response;
    let response: serde_json::Value = serde_json::from_slice(&response).unwrap();
    let predictions = response["predictions"].as_array().unwrap();
    assert_eq!(predictions.len(), next_pred_id);
    let expected = &reference.models["bike-demand"];
    let mut predicted = Vec::new();
    for event in predictions {
        let pred_id = event["prediction"]["pred_id"].as_u64().unwrap() as usize;
        predicted.push(pred_id);
        let actual = event["prediction"]["cnt"].as_f64().unwrap();
        let wanted = f64::from(expected[pred_id % rows]);
        assert!(
            close(actual, wanted, TOLERANCE),
            "pred_id {pred_id}: service {actual}, python {wanted}"
        );
    }
    predicted.sort_unstable();
    assert_eq!(
        predicted,
        (0..next_pred_id).collect::<Vec<_>>(),
        "each once"
    );

    // The user record that is not JSON, by its aggregate's sequence number and its position;
    // the corrupt aggregates whole.
    let rejected = response["rejected"].as_array().unwrap();
    let not_json = &aggregated[1].user_records[7];
    let summary: Vec<_> = rejected
        .iter()
        .map(|entry| {
            (
                entry["sequenceNumber"].as_str().unwrap(),
                entry.get("subSequenceNumber").and_then(|n| n.as_u64()),
                entry["partitionKey"].as_str().unwrap(),
                entry["code"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (
                sequence_numbers[3].as_str(),
                Some(u64::from(not_json.sub_sequence_number)),
                not_json.partition_key.as_str(),
                "not_json"
            ),
            (sequence_numbers[4].as_str(), None, "4", "invalid_aggregate"),
            (sequence_numbers[5].as_str(), None, "5", "invalid_aggregate"),
        ]
    );
    assert!(
        rejected[1]["reason"]
            .as_str()
            .unwrap()
            .ends_with("its MD5 digest does not match its protobuf message"),
        "{}",
        rejected[1]["reason"]
    );
    assert!(
        rejected[2]["reason"]
            .as_str()
            .unwrap()
            .contains("its 12 bytes are too few"),
        "{}",
        rejected[2]["reason"]
    );
    assert_eq!(response["batchItemFailures"], json!([]));
}

/// The output side's aggregates (`OUTPUT_AGGREGATION=kpl`) are read back by the input side's
/// de-aggregation to the events packed, each with its own partition key, in order per shard.
#[test]
fn packed_output_reads_back_through_the_input_s_de_aggregation() {
    use bike_prediction::pack::{ShardMap, pack};
    use bike_prediction::publish::Outgoing;
    let keys: Vec<String> = (0..5000).map(|i| format!("{}", i % 1700)).collect();
    let data: Vec<Vec<u8>> = (0..5000)
        .map(|i| format!(r#"{{"prediction":{{"cnt":{i}.5,"pred_id":{}}}}}"#, i % 1700).into_bytes())
        .collect();
    let events: Vec<Outgoing<'_>> = keys
        .iter()
        .zip(&data)
        .enumerate()
        .map(|(record, (key, data))| Outgoing {
            record,
            data,
            partition_key: key.as_str().into(),
        })
        .collect();
    let max = u128::MAX.to_string();
    let shards = ShardMap::new([
        (
            "shardId-000000000000",
            "0",
            "170141183460469231731687303715884105727",
        ),
        (
            "shardId-000000000001",
            "170141183460469231731687303715884105728",
            max.as_str(),
        ),
    ])
    .unwrap();
    let packed = pack(&events, &shards, 16 * 1024);
    assert!(packed.plain.is_empty());
    let records: Vec<Vec<u8>> = packed.aggregates.iter().map(|a| a.data.clone()).collect();
    let batch = KinesisBatch::from_slice(&kinesis_event(&records)).unwrap();
    let read: Vec<(String, Vec<u8>, Option<u32>)> = batch
        .iter()
        .map(|record| {
            let data = record.data.unwrap().to_vec();
            (
                record.partition_key.to_owned(),
                data,
                record.sub_sequence_number,
            )
        })
        .collect();
    let expected: Vec<(String, Vec<u8>)> = packed
        .events
        .iter()
        .map(|event| (event.partition_key.to_string(), event.data.to_vec()))
        .collect();
    assert_eq!(read.len(), expected.len());
    for ((key, data, sub), (expected_key, expected_data)) in read.iter().zip(&expected) {
        assert_eq!(key, expected_key);
        assert!(data == expected_data, "the data of {key}");
        assert!(sub.is_some());
    }
    // Every event once.
    let mut records: Vec<usize> = packed.events.iter().map(|event| event.record).collect();
    records.sort_unstable();
    assert_eq!(records, (0..5000).collect::<Vec<_>>());
}
