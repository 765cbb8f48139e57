use base64::Engine as _;

use super::*;
use base64::engine::general_purpose::STANDARD as BASE64;

fn columns() -> Vec<String> {
    ["t1", "t2", "hum", "weather_code"]
        .map(String::from)
        .to_vec()
}

/// A Kinesis event whose records carry `data` exactly as given (already base64).
fn event_with_data(data: &[&str]) -> Vec<u8> {
    let records: Vec<String> = data
        .iter()
        .enumerate()
        .map(|(i, data)| {
            format!(
                r#"{{"kinesis":{{"kinesisSchemaVersion":"1.0","partitionKey":"pk{i}","sequenceNumber":"{i}","data":"{data}","approximateArrivalTimestamp":1665200574.31}},"eventSource":"aws:kinesis","eventID":"shardId-000000000000:{i}"}}"#
            )
        })
        .collect();
    format!(r#"{{"Records":[{}]}}"#, records.join(",")).into_bytes()
}

fn event_with_payloads(payloads: &[&[u8]]) -> Vec<u8> {
    let data: Vec<String> = payloads.iter().map(|p| BASE64.encode(p)).collect();
    event_with_data(&data.iter().map(String::as_str).collect::<Vec<_>>())
}

const GOOD: &[u8] =
    br#"{"features": {"t1": 2, "t2": 3.5, "hum": 50, "weather_code": 2}, "pred_id": 123}"#;

#[test]
fn seed_event_decodes_into_one_row() {
    let records = KinesisBatch::from_slice(include_bytes!("../../events/sample.json")).unwrap();
    let batch = decode(&records, &columns());
    assert!(batch.rejected.is_empty(), "{:?}", batch.rejected);
    assert_eq!(batch.features, [2.0, 3.0, 50.0, 2.0]);
    assert_eq!(
        batch.record(batch.accepted[0].record).sequence_number,
        "123456789123456789123456789"
    );
    assert_eq!(batch.pred_id(&batch.accepted[0]), "123");
}

#[test]
fn features_are_placed_in_model_column_order_whatever_the_key_order() {
    let payload = br#"{"pred_id": "x-1", "features": {"weather_code": 4, "hum": 81.5, "t2": -1, "t1": 0.25, "windspeed": 9}}"#;
    let event = event_with_payloads(&[payload]);
    let records = KinesisBatch::from_slice(&event).unwrap();
    let batch = decode(&records, &columns());
    assert_eq!(batch.features, [0.25, -1.0, 81.5, 4.0]);
    assert_eq!(batch.pred_id(&batch.accepted[0]), r#""x-1""#);
}

#[test]
fn escaped_keys_and_string_pred_ids_are_read() {
    let payload =
        br#"{"pred_id": "a\"b", "features": {"t\u0031": 1, "t2": 2, "hum": 3, "weather_code": 4}}"#;
    let event = event_with_payloads(&[payload]);
    let records = KinesisBatch::from_slice(&event).unwrap();
    let batch = decode(&records, &columns());
    assert_eq!(batch.features, [1.0, 2.0, 3.0, 4.0]);
    assert_eq!(batch.pred_id(&batch.accepted[0]), r#""a\"b""#);
}

/// Each bad record sits between two good ones; it alone is rejected, with its reason.
fn assert_rejected_between_good_records(bad_data: &str, expected: RejectReason) {
    let good = BASE64.encode(GOOD);
    let event = event_with_data(&[&good, bad_data, &good]);
    let records = KinesisBatch::from_slice(&event).unwrap();
    let batch = decode(&records, &columns());
    assert_eq!(batch.rejected.len(), 1, "{bad_data}: {:?}", batch.rejected);
    let rejection = &batch.rejected[0];
    assert_eq!(batch.record(rejection.record).sequence_number, "1");
    assert_eq!(batch.record(rejection.record).partition_key, "pk1");
    assert_eq!(rejection.reason, expected, "{bad_data}");
    let accepted: Vec<&str> = batch
        .accepted
        .iter()
        .map(|r| batch.record(r.record).sequence_number)
        .collect();
    assert_eq!(accepted, ["0", "2"]);
    assert_eq!(batch.features, [2.0, 3.5, 50.0, 2.0, 2.0, 3.5, 50.0, 2.0]);
    assert_eq!(batch.pred_id(&batch.accepted[1]), "123");
}

fn assert_payload_rejected(payload: &[u8], expected: RejectReason) {
    assert_rejected_between_good_records(&BASE64.encode(payload), expected);
}

#[test]
fn bad_base64_record_is_reported_not_fatal() {
    assert_rejected_between_good_records("not base64!", RejectReason::InvalidBase64);
}

#[test]
fn non_utf8_record_is_rejected() {
    assert_payload_rejected(b"{\"features\": \xff}", RejectReason::NotUtf8);
}

#[test]
fn non_json_record_is_rejected() {
    let good = BASE64.encode(GOOD);
    let event = event_with_data(&[&good, &BASE64.encode("hello")]);
    let records = KinesisBatch::from_slice(&event).unwrap();
    let batch = decode(&records, &columns());
    assert!(matches!(batch.rejected[0].reason, RejectReason::NotJson(_)));
    assert_payload_rejected(
        b"{\"features\": {",
        RejectReason::NotJson("EOF while parsing an object at line 1 column 14".into()),
    );
    assert_payload_rejected(
        &[GOOD, b" trailing"].concat(),
        RejectReason::NotJson("trailing characters at line 1 column 82".into()),
    );
}

#[test]
fn json_that_is_not_an_object_is_rejected() {
    for payload in ["[1, 2]", "42", "\"text\"", "null", " true"] {
        assert_payload_rejected(payload.as_bytes(), RejectReason::NotAnObject);
    }
}

#[test]
fn missing_features_or_pred_id_is_rejected() {
    assert_payload_rejected(br#"{"pred_id": 1}"#, RejectReason::MissingFeatures);
    assert_payload_rejected(
        br#"{"features": {"t1": 2, "t2": 3, "hum": 50, "weather_code": 2}}"#,
        RejectReason::MissingPredId,
    );
}

#[test]
fn features_that_are_not_an_object_are_rejected() {
    for features in ["null", "[1, 2, 3, 4]", "\"t1\"", "3", "true"] {
        let payload = format!(r#"{{"features": {features}, "pred_id": 1}}"#);
        assert_payload_rejected(payload.as_bytes(), RejectReason::FeaturesNotAnObject);
    }
}

#[test]
fn pred_id_that_is_not_a_number_or_string_is_rejected() {
    for pred_id in ["null", "{}", "[1]", "true", "1e400", "-1e400"] {
        let payload = format!(
            r#"{{"features": {{"t1": 2, "t2": 3, "hum": 50, "weather_code": 2}}, "pred_id": {pred_id}}}"#
        );
        assert_payload_rejected(payload.as_bytes(), RejectReason::InvalidPredId);
    }
}

#[test]
fn pred_id_beyond_f64_range_is_rejected_but_long_ordinary_numbers_are_kept() {
    let huge = format!("1{}", "0".repeat(400));
    let payload = format!(
        r#"{{"features": {{"t1": 2, "t2": 3, "hum": 50, "weather_code": 2}}, "pred_id": {huge}}}"#
    );
    assert_payload_rejected(payload.as_bytes(), RejectReason::InvalidPredId);
    let event = event_with_payloads(&[br#"{"features": {"t1": 2, "t2": 3, "hum": 50, "weather_code": 2}, "pred_id": 12345678901234567890123}"#]);
    let records = KinesisBatch::from_slice(&event).unwrap();
    assert_eq!(decode(&records, &columns()).accepted.len(), 1);
}

#[test]
fn pred_id_that_cannot_be_a_partition_key_is_rejected() {
    let long = "x".repeat(MAX_PARTITION_KEY_CHARS + 1);
    for pred_id in ["\"\"".to_owned(), format!("\"{long}\"")] {
        let payload = format!(
            r#"{{"features": {{"t1": 2, "t2": 3, "hum": 50, "weather_code": 2}}, "pred_id": {pred_id}}}"#
        );
        assert_payload_rejected(payload.as_bytes(), RejectReason::InvalidPredId);
    }
}

#[test]
fn partition_key_is_the_pred_id_as_text() {
    let payloads: [&[u8]; 3] = [
        br#"{"features": {"t1": 2, "t2": 3, "hum": 50, "weather_code": 2}, "pred_id": 123}"#,
        br#"{"features": {"t1": 2, "t2": 3, "hum": 50, "weather_code": 2}, "pred_id": "ride-7"}"#,
        br#"{"features": {"t1": 2, "t2": 3, "hum": 50, "weather_code": 2}, "pred_id": "caf\u00e9 \"b\""}"#,
    ];
    let event = event_with_payloads(&payloads);
    let records = KinesisBatch::from_slice(&event).unwrap();
    let batch = decode(&records, &columns());
    let keys: Vec<_> = batch
        .accepted
        .iter()
        .map(|r| batch.partition_key(r))
        .collect();
    assert_eq!(keys, ["123", "ride-7", "café \"b\""]);
}

#[test]
fn missing_feature_is_named() {
    assert_payload_rejected(
        br#"{"features": {"t1": 2, "t2": 3, "weather_code": 2}, "pred_id": 1}"#,
        RejectReason::MissingFeature("hum".into()),
    );
}

#[test]
fn non_numeric_feature_is_named() {
    for value in ["\"2\"", "true", "null", "[2]", "{}"] {
        let payload = format!(
            r#"{{"features": {{"t1": 2, "t2": {value}, "hum": 50, "weather_code": 2}}, "pred_id": 1}}"#
        );
        assert_payload_rejected(
            payload.as_bytes(),
            RejectReason::NonNumericFeature("t2".into()),
        );
    }
}

#[test]
fn nan_and_infinite_features_are_rejected() {
    for value in ["NaN", "Infinity", "-Infinity", "1e400"] {
        let payload = format!(
            r#"{{"features": {{"t1": 2, "t2": 3, "hum": {value}, "weather_code": 2}}, "pred_id": 1}}"#
        );
        let good = BASE64.encode(GOOD);
        let event = event_with_data(&[&good, &BASE64.encode(&payload), &good]);
        let records = KinesisBatch::from_slice(&event).unwrap();
        let batch = decode(&records, &columns());
        assert_eq!(batch.accepted.len(), 2);
        match &batch.rejected[0].reason {
            RejectReason::InvalidFeatureJson { name, .. } => assert_eq!(name, "hum", "{value}"),
            other => panic!("{value}: {other:?}"),
        }
    }
    assert_payload_rejected(
        br#"{"features": {"t1": 2, "t2": 3, "hum": 1e308, "weather_code": 2}, "pred_id": 1}"#,
        RejectReason::NonFiniteFeature("hum".into()),
    );
}

#[test]
fn repeated_pred_id_keeps_the_last_value() {
    let payload = br#"{"pred_id": 1, "features": {"t1": 2, "t2": 3, "hum": 50, "weather_code": 2}, "pred_id": "last"}"#;
    let event = event_with_payloads(&[payload]);
    let records = KinesisBatch::from_slice(&event).unwrap();
    let batch = decode(&records, &columns());
    assert_eq!(batch.pred_id(&batch.accepted[0]), r#""last""#);
}

#[test]
fn empty_record_list_gives_an_empty_batch() {
    let records = KinesisBatch::from_slice(br#"{"Records": []}"#).unwrap();
    let batch = decode(&records, &columns());
    assert!(batch.is_empty());
    assert!(batch.features.is_empty());
}

/// A payload of exactly `size` bytes: a good record padded with an unknown field.
fn padded_payload(size: usize) -> Vec<u8> {
    let head = br#"{"features": {"t1": 2, "t2": 3.5, "hum": 50, "weather_code": 2}, "pred_id": 123, "padding": ""#;
    let mut payload = head.to_vec();
    payload.resize(size - 2, b'x');
    payload.extend_from_slice(b"\"}");
    payload
}

#[test]
fn record_at_the_kinesis_size_limit_is_predicted() {
    let event = event_with_payloads(&[&padded_payload(MAX_RECORD_BYTES)]);
    let records = KinesisBatch::from_slice(&event).unwrap();
    let batch = decode(&records, &columns());
    assert!(batch.rejected.is_empty(), "{:?}", batch.rejected);
    assert_eq!(batch.features, [2.0, 3.5, 50.0, 2.0]);
}

#[test]
fn record_over_the_kinesis_size_limit_is_rejected() {
    let payload = padded_payload(MAX_RECORD_BYTES + 1);
    assert_payload_rejected(&payload, RejectReason::TooLarge(MAX_RECORD_BYTES + 1));
}

#[test]
fn duplicate_pred_ids_are_both_predicted() {
    let event = event_with_payloads(&[GOOD, GOOD]);
    let records = KinesisBatch::from_slice(&event).unwrap();
    let batch = decode(&records, &columns());
    assert_eq!(batch.accepted.len(), 2);
    assert_eq!(
        batch.pred_id(&batch.accepted[0]),
        batch.pred_id(&batch.accepted[1])
    );
}
