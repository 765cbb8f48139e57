use base64::Engine as _;
use proptest::prelude::*;

use super::*;
use crate::inputs::FieldNames;
use crate::ledger::Fate;
use base64::engine::general_purpose::STANDARD as BASE64;

fn columns() -> Vec<String> {
    ["t1", "t2", "hum", "weather_code"]
        .map(String::from)
        .to_vec()
}

fn layout() -> InputLayout {
    InputLayout::float_columns(&columns())
}

/// A decoded record, by its position in the event.
struct Accepted {
    record: usize,
}

/// A rejected record, by its position in the event.
#[derive(Debug)]
struct Rejection {
    record: usize,
    reason: RejectReason,
}

/// What `decode` made of an event for the bike models' float columns, in a form tests read
/// easily: the `[N, 4]` rows, and which records were decoded or rejected.
struct Decoded<'e> {
    ledger: Ledger<'e>,
    features: Vec<f32>,
    accepted: Vec<Accepted>,
    rejected: Vec<Rejection>,
}

impl<'e> Decoded<'e> {
    fn of(records: &'e KinesisBatch) -> Self {
        Self::with(records, &layout())
    }

    fn with(records: &'e KinesisBatch, layout: &InputLayout) -> Self {
        let (ledger, inputs) = decode(records, layout);
        let features = match inputs.buffers.first() {
            Some(crate::inputs::Buffer::Float32(values)) => values.clone(),
            _ => Vec::new(),
        };
        let mut accepted = Vec::new();
        let mut rejected = Vec::new();
        for (record, entry) in ledger.entries().iter().enumerate() {
            match &entry.fate {
                Fate::Decoded { row } => {
                    assert_eq!(*row, accepted.len(), "rows follow event order");
                    accepted.push(Accepted { record });
                }
                Fate::Rejected(reason) => rejected.push(Rejection {
                    record,
                    reason: reason.clone(),
                }),
                Fate::Predicted { .. } => panic!("predicted before encoding"),
            }
        }
        assert_eq!(inputs.rows, accepted.len());
        Self {
            ledger,
            features,
            accepted,
            rejected,
        }
    }

    fn record(&self, index: usize) -> crate::kinesis::KinesisRecord<'e> {
        self.ledger.record(index)
    }

    fn pred_id(&self, accepted: &Accepted) -> &str {
        self.ledger.pred_id(&self.ledger.entries()[accepted.record])
    }

    fn partition_key(&self, accepted: &Accepted) -> std::borrow::Cow<'_, str> {
        self.ledger.partition_key(accepted.record)
    }

    fn is_empty(&self) -> bool {
        self.ledger.is_empty()
    }
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
    let batch = Decoded::of(&records);
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
    let batch = Decoded::of(&records);
    assert_eq!(batch.features, [0.25, -1.0, 81.5, 4.0]);
    assert_eq!(batch.pred_id(&batch.accepted[0]), r#""x-1""#);
}

#[test]
fn escaped_keys_and_string_pred_ids_are_read() {
    let payload =
        br#"{"pred_id": "a\"b", "features": {"t\u0031": 1, "t2": 2, "hum": 3, "weather_code": 4}}"#;
    let event = event_with_payloads(&[payload]);
    let records = KinesisBatch::from_slice(&event).unwrap();
    let batch = Decoded::of(&records);
    assert_eq!(batch.features, [1.0, 2.0, 3.0, 4.0]);
    assert_eq!(batch.pred_id(&batch.accepted[0]), r#""a\"b""#);
}

/// Each bad record sits between two good ones; it alone is rejected, with its reason.
fn assert_rejected_between_good_records(bad_data: &str, expected: RejectReason) {
    let good = BASE64.encode(GOOD);
    let event = event_with_data(&[&good, bad_data, &good]);
    let records = KinesisBatch::from_slice(&event).unwrap();
    let batch = Decoded::of(&records);
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
    let batch = Decoded::of(&records);
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
    assert_eq!(Decoded::of(&records).accepted.len(), 1);
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
    let batch = Decoded::of(&records);
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
        let batch = Decoded::of(&records);
        assert_eq!(batch.accepted.len(), 2);
        match &batch.rejected[0].reason {
            RejectReason::InvalidFeatureJson { name, .. } => assert_eq!(name, "hum", "{value}"),
            other => panic!("{value}: {other:?}"),
        }
    }
    assert_payload_rejected(
        br#"{"features": {"t1": 2, "t2": 3, "hum": 1e308, "weather_code": 2}, "pred_id": 1}"#,
        RejectReason::NonFiniteFeature {
            name: "hum".into(),
            element: ElementType::Float32,
        },
    );
}

#[test]
fn a_repeated_pred_id_is_rejected_as_a_duplicate_key() {
    let payload = br#"{"pred_id": 1, "features": {"t1": 2, "t2": 3, "hum": 50, "weather_code": 2}, "pred_id": "last"}"#;
    assert_payload_rejected(payload, RejectReason::DuplicateKey("pred_id".into()));
}

#[test]
fn empty_record_list_gives_an_empty_batch() {
    let records = KinesisBatch::from_slice(br#"{"Records": []}"#).unwrap();
    let batch = Decoded::of(&records);
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
    let batch = Decoded::of(&records);
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
    let batch = Decoded::of(&records);
    assert_eq!(batch.accepted.len(), 2);
    assert_eq!(
        batch.pred_id(&batch.accepted[0]),
        batch.pred_id(&batch.accepted[1])
    );
}

/// Parses one payload into a fresh row, by `decode`'s way (`fast` true) or the general parser
/// alone; returns the outcome and the row.
fn parse_with(
    payload: &[u8],
    pred_ids: &mut String,
    fast: bool,
) -> (Result<(), RejectReason>, [f32; 4]) {
    let layout = layout();
    let mut inputs = layout.buffers(1);
    inputs.push_row(&layout);
    let mut parser = PayloadParser {
        layout: &layout,
        plain: fast,
        seen: vec![false; 4],
        keys: Keys::default(),
    };
    let outcome = parser.parse(payload, &mut inputs, pred_ids);
    let mut row = [f32::NAN; 4];
    if let Some(crate::inputs::Buffer::Float32(values)) = inputs.buffers.first() {
        row.copy_from_slice(values);
    }
    (outcome, row)
}

fn parse_general(payload: &[u8], pred_ids: &mut String) -> (Result<(), RejectReason>, [f32; 4]) {
    parse_with(payload, pred_ids, false)
}

/// Parses `payload` by the fast path and, when it accepts, checks that the general parser
/// accepts it too with the same row, bit for bit, and the same `pred_id` text. Returns whether
/// the fast path accepted.
fn fast_path_agrees_with_general(payload: &[u8]) -> bool {
    let columns = columns();
    let mut fast_row = [f32::NAN; 4];
    let (mut fast_ids, mut general_ids) = (String::new(), String::new());
    if !fast::parse(
        payload,
        &FieldNames::new(columns),
        &mut fast_row,
        &mut fast_ids,
    ) {
        return false;
    }
    let (general, general_row) = parse_general(payload, &mut general_ids);
    let text = String::from_utf8_lossy(payload);
    assert_eq!(general, Ok(()), "fast path accepted {text}");
    assert_eq!(
        fast_row.map(f32::to_bits),
        general_row.map(f32::to_bits),
        "{text}: {fast_row:?} != {general_row:?}"
    );
    assert_eq!(fast_ids, general_ids, "{text}");
    true
}

#[test]
fn plain_payloads_take_the_fast_path() {
    for payload in [
        GOOD,
        br#"{"pred_id":"ride-7","features":{"weather_code":2,"hum":50,"t2":3,"t1":-2.5e-1}}"#,
        br#"{"features": {"w": 1, "t1": 0, "ww": 2, "t2": 1, "w2": 9, "hum": 2, "weather_code": 3, "2": 0}, "pred_id": 1}"#,
        b" {\n\t\"features\" : { \"t1\": 0, \"t2\": 1E2, \"hum\": 9.84000015258789, \"weather_code\": 14.395000457763672, \"wind\": 3 } ,\r\n \"pred_id\" : -0 } ",
    ] {
        assert!(
            fast_path_agrees_with_general(payload),
            "{}",
            String::from_utf8_lossy(payload)
        );
    }
}

#[test]
fn payloads_outside_the_plain_form_go_to_the_general_parser() {
    for payload in [
        &br#"{"features": {"t1": 2, "t2": 3, "hum": 50}, "pred_id": 1}"#[..],
        br#"{"features": {"t1": 2, "t2": 3, "hum": 50, "weather_code": "2"}, "pred_id": 1}"#,
        br#"{"features": {"t\u0031": 2, "t2": 3, "hum": 50, "weather_code": 2}, "pred_id": 1}"#,
        br#"{"features": {"t1": 2, "t2": 3, "hum": 50, "weather_code": 2}, "pred_id": "caf\u00e9"}"#,
        br#"{"features": {"t1": 2, "t2": 3, "hum": 50, "weather_code": 2}, "pred_id": 1, "x": 0}"#,
        br#"{"features": {"t1": 2, "t2": 3, "hum": 50, "weather_code": 2}, "pred_id": ""}"#,
        br#"{"features": {"t1": 2, "t2": 3, "hum": 50, "weather_code": 2}, "pred_id": 1e400}"#,
        br#"{"features": {"t1": 1e39, "t2": 3, "hum": 50, "weather_code": 2}, "pred_id": 1}"#,
        br#"{"features": {"t1": 01, "t2": 3, "hum": 50, "weather_code": 2}, "pred_id": 1}"#,
        br#"{"features": {"t1": 1., "t2": 3, "hum": 50, "weather_code": 2}, "pred_id": 1}"#,
        br#"{"features": {"t1": 2, "t2": 3, "hum": 50, "weather_code": 2}, "pred_id": 1} x"#,
        br#"{"features": {"t1": 2, "t2": 3, "hum": 50, "weather_code": 2}, "pred_id": 1, "pred_id": 2}"#,
        b"{\"features\": {\"t1\": 2, \"t2\": 3, \"hum\": 50, \"weather_code\": 2}, \"pred_id\": \"caf\xc3\xa9\"}",
    ] {
        assert!(
            !fast_path_agrees_with_general(payload),
            "{}",
            String::from_utf8_lossy(payload)
        );
    }
}

/// Payloads around the plain form: numbers of every kind, keys in any order, repeated or
/// unknown, values of other types, string `pred_id`s of any length and odd whitespace.
fn payload_text() -> impl Strategy<Value = String> {
    let key = proptest::sample::select(vec!["t1", "t2", "hum", "weather_code", "wind", "t1"]);
    let value = prop_oneof![
        8 => fast::tests::number_text(),
        1 => proptest::sample::select(vec!["\"2\"", "null", "true", "[]", "{}", "NaN"]).prop_map(String::from),
    ];
    let space = proptest::sample::select(vec!["", " ", "\n", "\t ", "\r\n"]);
    let features =
        proptest::collection::vec((key, space.clone(), value), 0..7).prop_map(|members| {
            let members: Vec<String> = members
                .into_iter()
                .map(|(key, space, value)| format!("{space}\"{key}\"{space}:{space}{value}{space}"))
                .collect();
            format!("{{{}}}", members.join(","))
        });
    let pred_id = prop_oneof![
        fast::tests::number_text(),
        "\"[ -~]{0,300}\"",
        "\"[a-z\u{e9}]{1,4}\"",
    ];
    (features, pred_id, space, any::<bool>()).prop_map(|(features, pred_id, space, swap)| {
        let members = [
            format!("{space}\"features\"{space}:{space}{features}"),
            format!("\"pred_id\":{space}{pred_id}{space}"),
        ];
        let [first, second] = if swap {
            [&members[1], &members[0]]
        } else {
            [&members[0], &members[1]]
        };
        format!("{space}{{{first},{second}}}{space}")
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

    #[test]
    fn fast_path_accepts_only_what_the_general_parser_reads_the_same(payload in payload_text()) {
        fast_path_agrees_with_general(payload.as_bytes());
    }

    #[test]
    fn fast_path_reads_features_as_serde_json_does(number in fast::tests::number_text()) {
        let payload = format!(
            r#"{{"features": {{"t1": {number}, "t2": 0, "hum": 0, "weather_code": 0}}, "pred_id": {number}}}"#
        );
        let in_range = number.parse::<f64>().is_ok_and(|value| (value as f32).is_finite());
        // Every number that fits a float32 is read by the fast path, and read the same.
        prop_assert_eq!(fast_path_agrees_with_general(payload.as_bytes()), in_range, "{}", payload);
    }
}

/// Decodes `payload` as `decode` does (fast path, then the general parser) and by the general
/// parser alone, and checks both give the same outcome: the same row bit for bit and `pred_id`
/// text, or the same rejection reason.
fn assert_same_outcome_as_general(payload: &[u8]) {
    let (mut ids, mut general_ids) = (String::new(), String::new());
    let (outcome, row) = parse_with(payload, &mut ids, true);
    let (general, general_row) = parse_general(payload, &mut general_ids);
    let text = String::from_utf8_lossy(payload);
    assert_eq!(outcome, general, "{text}");
    if outcome.is_ok() {
        assert_eq!(
            row.map(f32::to_bits),
            general_row.map(f32::to_bits),
            "{text}"
        );
        assert_eq!(ids, general_ids, "{text}");
    }
}

#[test]
fn reference_rows_and_bad_records_decode_as_with_the_general_parser_alone() {
    #[derive(serde::Deserialize)]
    struct Reference {
        columns: Vec<String>,
        rows: Vec<Vec<serde_json::Value>>,
    }
    let reference: Reference =
        serde_json::from_str(include_str!("../../tests/fixtures/reference.json")).unwrap();
    for (index, row) in reference.rows.iter().enumerate() {
        let features: serde_json::Map<String, serde_json::Value> = reference
            .columns
            .iter()
            .cloned()
            .zip(row.iter().cloned())
            .collect();
        let payload = serde_json::json!({"features": features, "pred_id": index}).to_string();
        assert!(
            fast_path_agrees_with_general(payload.as_bytes()),
            "{payload}"
        );
    }
    // The fuzz seeds: good, bad and odd payloads, and inputs that once crashed the fuzzer.
    let seeds = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/payload");
    let mut count = 0;
    for seed in std::fs::read_dir(seeds).unwrap() {
        assert_same_outcome_as_general(&std::fs::read(seed.unwrap().path()).unwrap());
        count += 1;
    }
    assert!(count >= 30, "{count} payload seeds");
}

/// A layout with one input per column of every element type, as skl2onnx converts a
/// DataFrame pipeline: `t1` float32, `t2` float64 (optional), `hum` int64, `code` int32,
/// `flag` bool, `weather` string, and `level` int64 but optional.
fn typed_layout() -> InputLayout {
    use crate::artifact::SignatureType as S;
    InputLayout::per_column(&[
        ("t1", S::Float, ElementType::Float32, true),
        ("t2", S::Double, ElementType::Float64, false),
        ("hum", S::Long, ElementType::Int64, true),
        ("code", S::Integer, ElementType::Int32, true),
        ("flag", S::Boolean, ElementType::Bool, true),
        ("weather", S::String, ElementType::String, true),
        ("level", S::Long, ElementType::Int64, false),
    ])
    .unwrap()
}

const TYPED: &str = r#"{"features": {"t1": 2.5, "t2": 0.1, "hum": 50, "code": -3, "flag": true, "weather": "cloudy/misty", "level": 2.0, "other": [1]}, "pred_id": 9}"#;

/// Decodes `payloads` with `layout` and returns the inputs and each record's fate.
fn decode_with(layout: &InputLayout, payloads: &[&str]) -> (Inputs, Vec<Result<(), RejectReason>>) {
    let data: Vec<&[u8]> = payloads.iter().map(|p| p.as_bytes()).collect();
    let event = event_with_payloads(&data);
    let records = KinesisBatch::from_slice(&event).unwrap();
    let (ledger, inputs) = decode(&records, layout);
    let fates = ledger
        .entries()
        .iter()
        .map(|entry| match &entry.fate {
            Fate::Rejected(reason) => Err(reason.clone()),
            _ => Ok(()),
        })
        .collect();
    (inputs, fates)
}

#[test]
fn typed_columns_are_decoded_into_their_own_inputs() {
    use crate::inputs::Buffer;
    let layout = typed_layout();
    let (inputs, fates) = decode_with(&layout, &[TYPED, TYPED]);
    assert_eq!(fates, [Ok(()), Ok(())]);
    assert_eq!(inputs.buffers[0], Buffer::Float32(vec![2.5, 2.5]));
    assert_eq!(inputs.buffers[1], Buffer::Float64(vec![0.1, 0.1]));
    assert_eq!(inputs.buffers[2], Buffer::Int64(vec![50, 50]));
    assert_eq!(inputs.buffers[3], Buffer::Int32(vec![-3, -3]));
    assert_eq!(inputs.buffers[4], Buffer::Bool(vec![true, true]));
    assert_eq!(inputs.strings(5), ["cloudy/misty", "cloudy/misty"]);
    assert_eq!(inputs.buffers[6], Buffer::Int64(vec![2, 2]));
}

/// `TYPED` with the member `"name": value` of `features` replaced (or removed, for `None`).
fn typed_with(name: &str, value: Option<&str>) -> String {
    let mut features: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str::<serde_json::Value>(TYPED).unwrap()["features"]
            .as_object()
            .unwrap()
            .clone();
    features.remove(name);
    let mut body: Vec<String> = features
        .iter()
        .map(|(key, value)| format!("{key:?}: {value}"))
        .collect();
    if let Some(value) = value {
        body.push(format!("{name:?}: {value}"));
    }
    format!(r#"{{"features": {{{}}}, "pred_id": 1}}"#, body.join(", "))
}

#[test]
fn every_value_that_does_not_fit_its_input_is_rejected_with_its_own_reason() {
    let layout = typed_layout();
    let name = |name: &str| name.to_owned();
    let cases = [
        ("hum", Some("2.5"), RejectReason::NotAnInteger(name("hum"))),
        (
            "t1",
            Some("\"2\""),
            RejectReason::NonNumericFeature(name("t1")),
        ),
        (
            "hum",
            Some("true"),
            RejectReason::NonNumericFeature(name("hum")),
        ),
        (
            "weather",
            Some("3"),
            RejectReason::NotAString(name("weather")),
        ),
        (
            "weather",
            Some("null"),
            RejectReason::NotAString(name("weather")),
        ),
        (
            "weather",
            Some(r#""a\u0000b""#),
            RejectReason::StringWithNul(name("weather")),
        ),
        ("flag", Some("1"), RejectReason::NotABoolean(name("flag"))),
        (
            "flag",
            Some("\"true\""),
            RejectReason::NotABoolean(name("flag")),
        ),
        (
            "hum",
            Some("9223372036854775808"),
            RejectReason::IntegerOutOfRange {
                name: name("hum"),
                element: ElementType::Int64,
            },
        ),
        (
            "hum",
            Some("-1e19"),
            RejectReason::IntegerOutOfRange {
                name: name("hum"),
                element: ElementType::Int64,
            },
        ),
        (
            "code",
            Some("2147483648"),
            RejectReason::IntegerOutOfRange {
                name: name("code"),
                element: ElementType::Int32,
            },
        ),
        (
            "t1",
            Some("1e39"),
            RejectReason::NonFiniteFeature {
                name: name("t1"),
                element: ElementType::Float32,
            },
        ),
        (
            "weather",
            None,
            RejectReason::MissingFeature(name("weather")),
        ),
        ("flag", None, RejectReason::MissingFeature(name("flag"))),
        (
            "t1",
            Some("null"),
            RejectReason::NonNumericFeature(name("t1")),
        ),
        // Optional, but an int64 input has no missing value.
        ("level", None, RejectReason::MissingFeature(name("level"))),
        (
            "level",
            Some("0.5"),
            RejectReason::NotAnInteger(name("level")),
        ),
    ];
    for (field, value, reason) in cases {
        let bad = typed_with(field, value);
        let (inputs, fates) = decode_with(&layout, &[TYPED, &bad, TYPED]);
        assert_eq!(fates, [Ok(()), Err(reason), Ok(())], "{bad}");
        assert_eq!(inputs.rows, 2);
        assert_eq!(
            inputs.strings(5).len(),
            2,
            "the rejected row's string is dropped"
        );
    }
}

#[test]
fn an_optional_float_column_left_out_or_null_is_missing() {
    use crate::inputs::Buffer;
    let layout = typed_layout();
    let (inputs, fates) = decode_with(
        &layout,
        &[
            &typed_with("t2", None),
            &typed_with("t2", Some("null")),
            TYPED,
        ],
    );
    assert_eq!(fates, [Ok(()), Ok(()), Ok(())]);
    let Buffer::Float64(t2) = &inputs.buffers[1] else {
        panic!("{:?}", inputs.buffers[1]);
    };
    assert!(t2[0].is_nan() && t2[1].is_nan());
    assert_eq!(t2[2], 0.1);
}

#[test]
fn a_repeated_key_is_rejected_with_per_column_and_tensor_inputs() {
    use crate::artifact::SignatureType as S;
    let features = |payload: &str| -> String {
        let value: serde_json::Value = serde_json::from_str(payload).unwrap();
        value["features"].to_string()
    };
    let good = features(TYPED);
    let without_t2 = features(&typed_with("t2", None));
    let repeated_features =
        format!(r#"{{"features": {good}, "features": {without_t2}, "pred_id": 1}}"#);
    let repeated_column = TYPED.replace(r#""t2": 0.1"#, r#""weather": "sunny", "t2": 0.1"#);
    let repeated_unknown = TYPED.replace(r#""t2": 0.1"#, r#""other": {}, "t2": 0.1"#);
    let (_, fates) = decode_with(
        &typed_layout(),
        &[
            TYPED,
            &repeated_features,
            &repeated_column,
            &repeated_unknown,
        ],
    );
    let duplicate = |key: &str| Err(RejectReason::DuplicateKey(key.into()));
    assert_eq!(
        fates,
        [
            Ok(()),
            duplicate("features"),
            duplicate("weather"),
            duplicate("other")
        ]
    );
    let tensor = tensor_layout(ElementType::Int64, S::Long);
    let (_, fates) = decode_with(
        &tensor,
        &[
            r#"{"features": [1, 2, 3], "pred_id": 1}"#,
            r#"{"features": [1, 2, 3], "features": [1, 2, 3], "pred_id": 1}"#,
            r#"{"features": [1, 2, 3], "pred_id": 1, "pred_id": 1}"#,
            r#"{"features": [1, 2, 3], "pred_id": 1, "x": [{"a": 1, "a": 2}]}"#,
        ],
    );
    assert_eq!(
        fates,
        [
            Ok(()),
            duplicate("features"),
            duplicate("pred_id"),
            duplicate("a")
        ]
    );
}

fn tensor_layout(element: ElementType, kind: crate::artifact::SignatureType) -> InputLayout {
    use crate::artifact::InputSignature;
    use crate::inputs::GraphInput;
    let signature = InputSignature::Tensor {
        dtype: kind,
        width: Some(3),
    };
    let graph = [GraphInput {
        name: "input".into(),
        element: Ok(element),
        shape: vec![-1, 3],
    }];
    InputLayout::bind(&signature, &graph).unwrap()
}

#[test]
fn tensor_signature_reads_features_as_an_array_in_column_order() {
    use crate::artifact::SignatureType as S;
    use crate::inputs::Buffer;
    let layout = tensor_layout(ElementType::Float32, S::Float);
    let good = r#"{"features": [2, 3.5, -1e3], "pred_id": 1}"#;
    let (inputs, fates) = decode_with(&layout, &[good, r#"{"pred_id": 2, "features": [0,0,0]}"#]);
    assert_eq!(fates, [Ok(()), Ok(())]);
    assert_eq!(
        inputs.buffers[0],
        Buffer::Float32(vec![2.0, 3.5, -1000.0, 0.0, 0.0, 0.0])
    );
    let element = |position: usize| format!("features[{position}]");
    let cases = [
        (
            r#"[1, 2]"#,
            RejectReason::WrongFeatureCount {
                expected: 3,
                got: 2,
            },
        ),
        (
            r#"[1, 2, 3, 4]"#,
            RejectReason::WrongFeatureCount {
                expected: 3,
                got: 4,
            },
        ),
        (
            r#"[]"#,
            RejectReason::WrongFeatureCount {
                expected: 3,
                got: 0,
            },
        ),
        (
            r#"{"a": 1, "b": 2, "c": 3}"#,
            RejectReason::FeaturesNotAnArray,
        ),
        (r#""1,2,3""#, RejectReason::FeaturesNotAnArray),
        ("null", RejectReason::FeaturesNotAnArray),
        (
            r#"[1, "2", 3]"#,
            RejectReason::NonNumericFeature(element(1)),
        ),
        (
            r#"[1, 2, [3]]"#,
            RejectReason::NonNumericFeature(element(2)),
        ),
        (
            r#"[1, 2, 1e39]"#,
            RejectReason::NonFiniteFeature {
                name: element(2),
                element: ElementType::Float32,
            },
        ),
    ];
    for (features, reason) in cases {
        let bad = format!(r#"{{"features": {features}, "pred_id": 1}}"#);
        let (inputs, fates) = decode_with(&layout, &[good, &bad, good]);
        assert_eq!(fates, [Ok(()), Err(reason), Ok(())], "{bad}");
        assert_eq!(inputs.rows, 2);
    }
    let (_, fates) = decode_with(&layout, &[r#"{"features": [1, NaN, 3], "pred_id": 1}"#]);
    assert!(
        matches!(&fates[0], Err(RejectReason::InvalidFeatureJson { name, .. }) if name == "features[1]"),
        "{fates:?}"
    );
    // A column-based model given an array says it wants an object.
    let (_, fates) = decode_with(
        &typed_layout(),
        &[r#"{"features": [1, 2, 3], "pred_id": 1}"#],
    );
    assert_eq!(fates, [Err(RejectReason::FeaturesNotAnObject)]);
    // An integer tensor takes only integers.
    let layout = tensor_layout(ElementType::Int64, S::Long);
    let (inputs, fates) = decode_with(
        &layout,
        &[
            r#"{"features": [1, 2.0, -3], "pred_id": 1}"#,
            r#"{"features": [1, 2.5, 3], "pred_id": 1}"#,
        ],
    );
    assert_eq!(fates, [Ok(()), Err(RejectReason::NotAnInteger(element(1)))]);
    assert_eq!(inputs.buffers[0], Buffer::Int64(vec![1, 2, -3]));
}

#[test]
fn every_reason_has_its_own_code() {
    let reasons = [
        RejectReason::TooLarge(1),
        RejectReason::InvalidBase64,
        RejectReason::NotUtf8,
        RejectReason::NotJson(String::new()),
        RejectReason::NotAnObject,
        RejectReason::DuplicateKey(String::new()),
        RejectReason::MissingFeatures,
        RejectReason::FeaturesNotAnObject,
        RejectReason::FeaturesNotAnArray,
        RejectReason::WrongFeatureCount {
            expected: 1,
            got: 2,
        },
        RejectReason::MissingPredId,
        RejectReason::InvalidPredId,
        RejectReason::MissingFeature(String::new()),
        RejectReason::NonNumericFeature(String::new()),
        RejectReason::NonFiniteFeature {
            name: String::new(),
            element: ElementType::Float32,
        },
        RejectReason::NotAnInteger(String::new()),
        RejectReason::IntegerOutOfRange {
            name: String::new(),
            element: ElementType::Int64,
        },
        RejectReason::NotABoolean(String::new()),
        RejectReason::NotAString(String::new()),
        RejectReason::StringWithNul(String::new()),
        RejectReason::InvalidFeatureJson {
            name: String::new(),
            detail: String::new(),
        },
        RejectReason::NonFinitePrediction,
    ];
    let codes: std::collections::BTreeSet<&str> = reasons.iter().map(RejectReason::code).collect();
    assert_eq!(codes.len(), reasons.len());
}

/// A JSON value for a typed column, or `None` to leave the column out: numbers of every kind
/// (integers within and beyond i64 and i32, fractions, integral floats, beyond float32),
/// strings (with escapes and NUL), booleans, null and composites.
fn typed_value() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        1 => Just(None),
        3 => any::<i64>().prop_map(|value| Some(value.to_string())),
        1 => any::<i32>().prop_map(|value| Some(value.to_string())),
        1 => (i64::MAX as u64..=u64::MAX).prop_map(|value| Some(value.to_string())),
        2 => any::<f64>()
            .prop_filter("JSON numbers are finite", |value| value.is_finite())
            .prop_map(|value| Some(format!("{value:?}"))),
        1 => (-1e6..1e6f64).prop_map(|value| Some(format!("{:?}", value.trunc()))),
        2 => "[a-z\u{e9}\"\\\\/\u{0}]{0,6}".prop_map(|text| Some(serde_json::to_string(&text).unwrap())),
        1 => any::<bool>().prop_map(|value| Some(value.to_string())),
        1 => proptest::sample::select(vec!["null", "[]", "{}", "[1]"]).prop_map(|text| Some(text.to_owned())),
    ]
}

/// What the service must make of `value` for a field, written from the documented rules with
/// `serde_json::Value` (not the service's parser): the value it becomes, or the reason code.
fn expected_value(
    field: &crate::inputs::Field,
    value: Option<&serde_json::Value>,
) -> Result<Option<serde_json::Value>, &'static str> {
    use serde_json::Value as J;
    let Some(value) = value else {
        return match (field.required, field.element) {
            (false, ElementType::Float32 | ElementType::Float64) => Ok(None),
            _ => Err("missing_feature"),
        };
    };
    let number = value.as_f64();
    let integer = || -> Result<i64, &'static str> {
        if let Some(value) = value.as_i64() {
            return Ok(value);
        }
        if value.is_u64() {
            return Err("integer_out_of_range");
        }
        let value = number.ok_or("non_numeric_feature")?;
        if value.fract() != 0.0 {
            return Err("not_an_integer");
        }
        if value.abs() >= 9_223_372_036_854_775_808.0 {
            return Err("integer_out_of_range");
        }
        Ok(value as i64)
    };
    match field.element {
        ElementType::Float32 | ElementType::Float64 => {
            if value.is_null() && !field.required {
                return Ok(None);
            }
            if !value.is_number() {
                return Err("non_numeric_feature");
            }
            if field.integral {
                integer()?;
            }
            let number = number.ok_or("non_numeric_feature")?;
            if field.element == ElementType::Float32 {
                let rounded = number as f32;
                if !rounded.is_finite() {
                    return Err("non_finite_feature");
                }
                return Ok(Some(J::from(rounded)));
            }
            Ok(Some(J::from(number)))
        }
        ElementType::Int64 => integer().map(|value| Some(J::from(value))),
        ElementType::Int32 => {
            let value = integer()?;
            i32::try_from(value)
                .map(|value| Some(J::from(value)))
                .map_err(|_| "integer_out_of_range")
        }
        ElementType::Bool => value
            .as_bool()
            .map(|value| Some(J::from(value)))
            .ok_or("not_a_boolean"),
        ElementType::String => match value.as_str() {
            Some(text) if text.contains('\0') => Err("string_with_nul"),
            Some(text) => Ok(Some(J::from(text))),
            None => Err("not_a_string"),
        },
    }
}

/// Row `row` of input `input`, as JSON values (NaN as `None`).
fn decoded_value(inputs: &Inputs, input: usize, row: usize) -> Option<serde_json::Value> {
    use crate::inputs::Buffer;
    use serde_json::Value as J;
    match &inputs.buffers[input] {
        Buffer::Float32(values) => Some(values[row]).filter(|v| !v.is_nan()).map(J::from),
        Buffer::Float64(values) => Some(values[row]).filter(|v| !v.is_nan()).map(J::from),
        Buffer::Int64(values) => Some(J::from(values[row])),
        Buffer::Int32(values) => Some(J::from(values[row])),
        Buffer::Bool(values) => Some(J::from(values[row])),
        Buffer::String(_) => Some(J::from(inputs.strings(input)[row])),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3_000, ..ProptestConfig::default() })]

    /// Any mix of values for the typed columns: the record is accepted exactly when every
    /// value fits its input by the documented rules, with exactly the values those rules give;
    /// otherwise it is rejected for one of the values that do not fit.
    #[test]
    fn typed_values_are_accepted_or_rejected_as_the_rules_say(
        values in proptest::collection::vec(typed_value(), 7),
    ) {
        let layout = typed_layout();
        let members: Vec<String> = layout
            .fields
            .iter()
            .zip(&values)
            .filter_map(|(field, value)| Some(format!("{:?}: {}", field.name, value.as_ref()?)))
            .collect();
        let payload = format!(r#"{{"features": {{{}}}, "pred_id": 1}}"#, members.join(", "));
        let (inputs, fates) = decode_with(&layout, &[&payload]);
        let parsed: Vec<Option<serde_json::Value>> = values
            .iter()
            .map(|value| value.as_ref().map(|text| serde_json::from_str(text).unwrap()))
            .collect();
        let expected: Vec<_> = layout
            .fields
            .iter()
            .zip(&parsed)
            .map(|(field, value)| expected_value(field, value.as_ref()))
            .collect();
        let failing: Vec<&str> = expected.iter().filter_map(|e| e.as_ref().err().copied()).collect();
        match &fates[0] {
            Ok(()) => {
                prop_assert!(failing.is_empty(), "{} accepted, expected {:?}", payload, failing);
                for (field, expected) in layout.fields.iter().zip(&expected) {
                    let decoded = decoded_value(&inputs, field.input, 0);
                    prop_assert_eq!(&decoded, expected.as_ref().unwrap(), "{} in {}", field.name, payload);
                }
            }
            Err(reason) => prop_assert!(
                failing.contains(&reason.code()),
                "{} rejected as {:?}, expected one of {:?}", payload, reason, failing
            ),
        }
    }
}

#[test]
fn wide_models_find_each_column_whatever_the_key_order() {
    use crate::inputs::Buffer;
    let names: Vec<String> = (0..200).map(|i| format!("c{i}")).collect();
    let layout = InputLayout::float_columns(&names);
    let members: Vec<String> = (0..200).rev().map(|i| format!(r#""c{i}": {i}"#)).collect();
    let plain = format!(
        r#"{{"features": {{{}}}, "pred_id": 1}}"#,
        members.join(", ")
    );
    // The same with an escaped key, which only the general parser reads.
    let escaped = plain.replace(r#""c7":"#, r#""c\u0037":"#);
    let (inputs, fates) = decode_with(&layout, &[&plain, &escaped]);
    assert_eq!(fates, [Ok(()), Ok(())]);
    let expected: Vec<f32> = (0..200).chain(0..200).map(|i| i as f32).collect();
    assert_eq!(inputs.buffers[0], Buffer::Float32(expected));
}

/// The bundled model's four features, each once.
const FULL: &str = r#"{"t1": 2, "t2": 3.5, "hum": 50, "weather_code": 2}"#;

/// Payloads, each with one key twice in one object: `features`, `pred_id`, a feature (also
/// spelled with an escape), a feature and a top-level key the model does not use, and keys in
/// ignored nested values.
fn payloads_with_a_duplicated_key() -> Vec<String> {
    vec![
        format!(r#"{{"features": {FULL}, "features": {{"t1": 5}}, "pred_id": 1}}"#),
        format!(r#"{{"features": {FULL}, "features": {{}}, "pred_id": 1}}"#),
        format!(r#"{{"features": {FULL}, "features": {FULL}, "pred_id": 1}}"#),
        format!(r#"{{"features": {FULL}, "pred_id": 1, "pred_id": 2}}"#),
        format!(r#"{{"pred_id": "a", "features": {FULL}, "pred_id": "a"}}"#),
        r#"{"features": {"t1": 1, "t1": 2, "t2": 3.5, "hum": 50, "weather_code": 2}, "pred_id": 1}"#.into(),
        r#"{"features": {"t1": 2, "t2": 3.5, "hum": 50, "weather_code": 2, "t1": 2}, "pred_id": 1}"#.into(),
        r#"{"features": {"t1": 1, "t\u0031": 1, "t2": 3.5, "hum": 50, "weather_code": 2}, "pred_id": 1}"#.into(),
        r#"{"features": {"t1": 2, "t2": 3.5, "wind": 1, "hum": 50, "weather_code": 2, "wind": 2}, "pred_id": 1}"#.into(),
        format!(r#"{{"features": {FULL}, "pred_id": 1, "x": 1, "x": 1}}"#),
        format!(r#"{{"x": 1, "features": {FULL}, "pred_id": 1, "\u0078": "y"}}"#),
        format!(r#"{{"features": {FULL}, "pred_id": 1, "x": {{"a": 1, "b": {{}}, "a": 2}}}}"#),
        format!(r#"{{"features": {FULL}, "pred_id": 1, "x": [1, {{"a": [{{"b": 1, "b": 1}}]}}]}}"#),
        r#"{"features": {"t1": 2, "t2": 3.5, "hum": 50, "weather_code": 2, "w": {"a": 1, "a": 1}}, "pred_id": 1}"#.into(),
    ]
}

#[test]
fn the_general_parser_rejects_a_duplicated_key() {
    for payload in payloads_with_a_duplicated_key() {
        let (outcome, _) = parse_general(payload.as_bytes(), &mut String::new());
        assert_eq!(
            outcome.map_err(|reason| reason.code()),
            Err("duplicate_key"),
            "{payload}"
        );
    }
}

/// Whether the fast path alone accepts `payload` for the bundled model's columns.
fn fast_path_accepts(payload: &[u8]) -> bool {
    let mut row = [f32::NAN; 4];
    fast::parse(
        payload,
        &FieldNames::new(columns()),
        &mut row,
        &mut String::new(),
    )
}

#[test]
fn the_fast_path_never_accepts_a_duplicated_key() {
    for payload in payloads_with_a_duplicated_key() {
        assert!(!fast_path_accepts(payload.as_bytes()), "{payload}");
    }
}

/// Good payloads for the bundled model with bytes that are not UTF-8 in an ignored string, an
/// ignored key, a nested ignored value, or a feature key the model does not use.
fn payloads_not_utf8() -> Vec<Vec<u8>> {
    let head = br#"{"features": {"t1": 2, "t2": 3.5, "hum": 50, "weather_code": 2}, "pred_id": 1"#;
    let tails: [&[u8]; 7] = [
        b", \"x\": \"\xff\"}",
        b", \"\xff\": 1}",
        b", \"x\": {\"a\": [\"caf\xc3\"]}}",
        b", \"x\": [{\"\xed\xa0\x80\": 1}]}",
        b", \"x\": \"\xc0\xaf\"}",
        b", \"x\": [1, \"\x80\"]}",
        b"} \xff",
    ];
    let mut payloads: Vec<Vec<u8>> = tails
        .iter()
        .map(|tail| [&head[..], tail].concat())
        .collect();
    payloads.push(
        b"{\"features\": {\"t1\": 2, \"t2\": 3.5, \"w\xfe\": 1, \"hum\": 50, \"weather_code\": 2}, \"pred_id\": 1}"
            .to_vec(),
    );
    payloads.push(
        b"{\"features\": {\"t1\": 2, \"t2\": 3.5, \"hum\": 50, \"weather_code\": 2, \"w\": \"\xe2\x82\"}, \"pred_id\": 1}"
            .to_vec(),
    );
    payloads
}

#[test]
fn a_payload_that_is_not_utf8_anywhere_is_rejected_by_both_paths() {
    for payload in payloads_not_utf8() {
        let text = String::from_utf8_lossy(&payload).into_owned();
        assert!(!fast_path_accepts(&payload), "{text}");
        let (outcome, _) = parse_general(&payload, &mut String::new());
        assert_eq!(outcome, Err(RejectReason::NotUtf8), "{text}");
        assert_payload_rejected(&payload, RejectReason::NotUtf8);
    }
}

#[test]
fn a_typed_or_tensor_payload_that_is_not_utf8_anywhere_is_rejected() {
    use crate::artifact::SignatureType as S;
    let typed = TYPED.as_bytes().to_vec();
    let bad = TYPED
        .replace(r#""other": [1]"#, r#""other": ["~"]"#)
        .bytes()
        .map(|byte| if byte == b'~' { 0xff } else { byte })
        .collect();
    let tensor = b"{\"features\": [1, 2, 3], \"pred_id\": 1, \"note\": {\"\xff\": 0}}".to_vec();
    for (layout, good, bad) in [
        (typed_layout(), typed, bad),
        (
            tensor_layout(ElementType::Float32, S::Float),
            br#"{"features": [1, 2, 3], "pred_id": 1}"#.to_vec(),
            tensor,
        ),
    ] {
        let records_data: Vec<&[u8]> = vec![&good, &bad];
        let event = event_with_payloads(&records_data);
        let records = KinesisBatch::from_slice(&event).unwrap();
        let (ledger, _) = decode(&records, &layout);
        let fates: Vec<Result<(), &str>> = ledger
            .entries()
            .iter()
            .map(|entry| match &entry.fate {
                Fate::Rejected(reason) => Err(reason.code()),
                _ => Ok(()),
            })
            .collect();
        assert_eq!(fates, [Ok(()), Err("not_utf8")]);
    }
}

/// What becomes of one payload for `layout`: by `decode`'s way (the fast path first, when the
/// layout has one) or by the general parser alone.
fn outcome(layout: &InputLayout, payload: &[u8], fast: bool) -> Result<(), RejectReason> {
    let mut inputs = layout.buffers(1);
    inputs.push_row(layout);
    let mut parser = PayloadParser {
        layout,
        plain: fast && layout.is_plain_float_row(),
        seen: vec![false; layout.fields.len()],
        keys: Keys::default(),
    };
    parser.parse(payload, &mut inputs, &mut String::new())
}

/// `{` members `}`.
fn object(members: &[String]) -> String {
    format!("{{{}}}", members.join(", "))
}

/// A key as written: plain, or with its first character escaped.
fn spelled(key: &str, escaped: bool) -> String {
    let mut chars = key.chars();
    match chars.next() {
        Some(first) if escaped => format!("\"\\u{:04x}{}\"", first as u32, chars.as_str()),
        _ => format!("{key:?}"),
    }
}

/// Where a key is repeated: the key, the values it is given, and the payload with the two
/// members given (either may be left out) at the start and the end of their object.
struct Level {
    key: String,
    values: Vec<String>,
    payload: Box<dyn Fn(Option<String>, Option<String>) -> String>,
}

/// Every level at which a key can be repeated in a payload for a layout whose good `features`
/// is `good` (its members `members`, for an object form).
fn levels(good: &str, members: &[(String, String)], fields: &[&str]) -> Vec<Level> {
    let values: Vec<String> = [
        "1",
        "-2.5",
        "1e400",
        "\"s\"",
        "\"caf\\u00e9\"",
        "true",
        "null",
        "[1]",
        "{}",
        "{\"k\": [1e400]}",
    ]
    .map(String::from)
    .to_vec();
    let around = |first: Option<String>, middle: Vec<String>, last: Option<String>| {
        let mut all: Vec<String> = first.into_iter().collect();
        all.extend(middle);
        all.extend(last);
        object(&all)
    };
    let good = good.to_owned();
    let mut levels = Vec::new();
    let feature_values = vec![
        good.clone(),
        "{}".into(),
        "5".into(),
        "null".into(),
        "[1, 2, 3]".into(),
        "{\"t1\": \"x\", \"c0\": \"x\"}".into(),
    ];
    levels.push(Level {
        key: "features".into(),
        values: feature_values,
        payload: Box::new(move |first, last| around(first, vec![r#""pred_id": 1"#.into()], last)),
    });
    let features = format!(r#""features": {good}"#);
    let top = features.clone();
    levels.push(Level {
        key: "pred_id".into(),
        values: ["1", "\"a\"", "null", "\"\"", "[1]", "1e400"]
            .map(String::from)
            .to_vec(),
        payload: Box::new(move |first, last| around(first, vec![top.clone()], last)),
    });
    let top = vec![features.clone(), r#""pred_id": 1"#.into()];
    levels.push(Level {
        key: "x".into(),
        values: values.clone(),
        payload: Box::new(move |first, last| around(first, top.clone(), last)),
    });
    levels.push(Level {
        key: "a".into(),
        values: values.clone(),
        payload: Box::new(move |first, last| {
            let nested = format!(r#""x": [1, {{"b": {}}}]"#, around(first, vec![], last));
            object(&[features.clone(), r#""pred_id": 1"#.into(), nested])
        }),
    });
    if members.is_empty() {
        return levels;
    }
    let members: Vec<(String, String)> = members.to_vec();
    for field in fields {
        let others: Vec<String> = members
            .iter()
            .filter(|(key, _)| key != field)
            .map(|(key, value)| format!("{key:?}: {value}"))
            .collect();
        let mut field_values = values.clone();
        field_values.extend(
            members
                .iter()
                .filter(|(key, _)| key == field)
                .map(|(_, value)| value.clone()),
        );
        levels.push(Level {
            key: (*field).into(),
            values: field_values,
            payload: Box::new(move |first, last| {
                let features = around(first, others.clone(), last);
                format!(r#"{{"features": {features}, "pred_id": 1}}"#)
            }),
        });
    }
    let all: Vec<String> = members
        .iter()
        .map(|(key, value)| format!("{key:?}: {value}"))
        .collect();
    let inner = all.clone();
    levels.push(Level {
        key: "extra".into(),
        values: values.clone(),
        payload: Box::new(move |first, last| {
            let features = around(first, inner.clone(), last);
            format!(r#"{{"features": {features}, "pred_id": 1}}"#)
        }),
    });
    levels.push(Level {
        key: "a".into(),
        values,
        payload: Box::new(move |first, last| {
            let mut members = all.clone();
            members.push(format!(
                r#""extra": {{"b": {}}}"#,
                around(first, vec![], last)
            ));
            format!(r#"{{"features": {}, "pred_id": 1}}"#, object(&members))
        }),
    });
    levels
}

/// A key repeated at any level (`features`, `pred_id`, a feature, another key, keys inside
/// ignored values), given any two values (good or bad, for its input's type), spelled the same
/// or with an escape, with the bundled, a wide (hashed lookup), a per-column and a tensor
/// layout: never predicted, by either path; rejected as `duplicate_key` when each value alone
/// would be predicted; the fast path never accepts it and `decode` rejects it for the same
/// reason as the general parser.
#[test]
fn a_repeated_key_is_never_predicted_at_any_level_with_any_values() {
    use crate::artifact::SignatureType as S;
    let wide: Vec<String> = (0..20).map(|i| format!("c{i}")).collect();
    let numbers = |names: &[String]| -> Vec<(String, String)> {
        names
            .iter()
            .enumerate()
            .map(|(i, name)| (name.clone(), format!("{i}.5")))
            .collect()
    };
    let typed: serde_json::Value = serde_json::from_str(TYPED).unwrap();
    let typed_members: Vec<(String, String)> = typed["features"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(key, value)| (key.clone(), value.to_string()))
        .collect();
    let cases = [
        (layout(), numbers(&columns()), vec!["t1", "weather_code"]),
        (
            InputLayout::float_columns(&wide),
            numbers(&wide),
            vec!["c0", "c19"],
        ),
        (typed_layout(), typed_members, vec!["t1", "weather", "flag"]),
        (
            tensor_layout(ElementType::Float32, S::Float),
            vec![],
            vec![],
        ),
    ];
    let mut checked = 0;
    for (layout, members, fields) in cases {
        let good = if members.is_empty() {
            "[1, 2, 3]".to_owned()
        } else {
            let members: Vec<String> = members
                .iter()
                .map(|(key, value)| format!("{key:?}: {value}"))
                .collect();
            object(&members)
        };
        for level in levels(&good, &members, &fields) {
            for first in &level.values {
                for last in &level.values {
                    for escaped in [false, true] {
                        let member = |value: &str, escaped| {
                            Some(format!("{}: {value}", spelled(&level.key, escaped)))
                        };
                        let payload = (level.payload)(member(first, false), member(last, escaped));
                        let alone = [
                            (level.payload)(member(first, false), None),
                            (level.payload)(None, member(last, escaped)),
                        ];
                        let general = outcome(&layout, payload.as_bytes(), false);
                        assert!(general.is_err(), "{payload} predicted");
                        if alone
                            .iter()
                            .all(|p| outcome(&layout, p.as_bytes(), false).is_ok())
                        {
                            assert_eq!(
                                general,
                                Err(RejectReason::DuplicateKey(level.key.clone())),
                                "{payload}"
                            );
                        }
                        assert_eq!(
                            outcome(&layout, payload.as_bytes(), true),
                            general,
                            "{payload}"
                        );
                        if layout.is_plain_float_row() {
                            let mut row = vec![f32::NAN; layout.fields.len()];
                            let fast = fast::parse(
                                payload.as_bytes(),
                                layout.field_names(),
                                &mut row,
                                &mut String::new(),
                            );
                            assert!(!fast, "fast path accepted {payload}");
                        }
                        checked += 1;
                    }
                }
            }
        }
    }
    assert!(checked > 3_000, "{checked} payloads");
}

/// Whether JSON text repeats a key in one of its objects, by serde_json's own reading of the
/// keys; `None` for text serde_json does not read as a `Value`.
fn repeats_a_key(payload: &[u8]) -> Option<bool> {
    struct Unique(bool);
    impl<'de> serde::Deserialize<'de> for Unique {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            deserializer.deserialize_any(UniqueVisitor)
        }
    }
    struct UniqueVisitor;
    impl<'de> Visitor<'de> for UniqueVisitor {
        type Value = Unique;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("JSON")
        }
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Unique, E> {
            Ok(Unique(false))
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Unique, E> {
            Ok(Unique(false))
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Unique, E> {
            Ok(Unique(false))
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Unique, E> {
            Ok(Unique(false))
        }
        fn visit_str<E: de::Error>(self, _: &str) -> Result<Unique, E> {
            Ok(Unique(false))
        }
        fn visit_unit<E: de::Error>(self) -> Result<Unique, E> {
            Ok(Unique(false))
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Unique, A::Error> {
            let mut repeats = false;
            while let Some(Unique(inner)) = seq.next_element()? {
                repeats |= inner;
            }
            Ok(Unique(repeats))
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Unique, A::Error> {
            let mut keys = std::collections::HashSet::new();
            let mut repeats = false;
            while let Some((key, Unique(inner))) = map.next_entry::<String, Unique>()? {
                repeats |= inner | !keys.insert(key);
            }
            Ok(Unique(repeats))
        }
    }
    serde_json::from_slice::<Unique>(payload)
        .ok()
        .map(|Unique(repeats)| repeats)
}

/// Payloads around the plain form (as [`payload_text`]), with top-level members that may
/// repeat a key (`features`, `pred_id`, an ignored key, keys inside an ignored value) and bytes
/// that are not UTF-8 inserted anywhere.
fn payload_with_duplicates_and_bad_bytes() -> impl Strategy<Value = Vec<u8>> {
    let extra = proptest::sample::select(vec![
        r#""x": 1"#,
        r#""x": [1, 2e400]"#,
        r#""x": {"a": 1, "a": 2}"#,
        r#""x": [{"a": {"b": 1, "\u0062": 1}}]"#,
        r#""x": {"a": 1, "b": "\u00e9"}"#,
        r#""pred_id": 7"#,
        r#""features": {"t1": 1, "t2": 2, "hum": 3, "weather_code": 4}"#,
    ]);
    let bad_byte = (any::<proptest::sample::Index>(), 0x80u8..=0xff);
    (
        payload_text(),
        proptest::collection::vec(extra, 0..3),
        proptest::collection::vec(bad_byte, 0..3),
    )
        .prop_map(|(payload, extras, bad_bytes)| {
            let mut payload = payload.into_bytes();
            if let Some(end) = payload.iter().rposition(|&byte| byte == b'}') {
                let extras: String = extras.iter().map(|extra| format!(", {extra}")).collect();
                payload.splice(end..end, extras.into_bytes());
            }
            for (index, byte) in bad_bytes {
                let at = index.index(payload.len() + 1);
                payload.insert(at, byte);
            }
            payload
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3_000, ..ProptestConfig::default() })]

    /// Both paths give every such payload the same fate: the same row and `pred_id`, or the
    /// same reason; one that is not UTF-8 is `not_utf8`, and one that repeats a key is never
    /// predicted.
    #[test]
    fn both_paths_agree_on_payloads_with_duplicates_and_bytes_that_are_not_utf8(
        payload in payload_with_duplicates_and_bad_bytes(),
    ) {
        fast_path_agrees_with_general(&payload);
        assert_same_outcome_as_general(&payload);
        let (general, _) = parse_general(&payload, &mut String::new());
        let text = String::from_utf8_lossy(&payload);
        if std::str::from_utf8(&payload).is_err() {
            prop_assert_eq!(general, Err(RejectReason::NotUtf8), "{}", text);
        } else if repeats_a_key(&payload) == Some(true) {
            prop_assert!(general.is_err(), "{} predicted", text);
        }
    }
}

#[test]
fn a_long_repeated_key_is_named_by_its_start_only() {
    let key = "k".repeat(100_000);
    let short = format!("{}...", "k".repeat(MAX_KEY_IN_REASON));
    // An unknown key, a key inside an ignored value, and a wide model's hashed feature name.
    for payload in [
        format!(
            r#"{{"features": {{"t1": 1, "t2": 2, "hum": 3, "weather_code": 1}}, "pred_id": 1, "{key}": 1, "{key}": 2}}"#
        ),
        format!(
            r#"{{"features": {{"t1": 1, "t2": 2, "hum": 3, "weather_code": 1}}, "pred_id": 1, "x": {{"{key}": 1, "{key}": 2}}}}"#
        ),
        format!(
            r#"{{"features": {{"t1": 1, "t2": 2, "hum": 3, "weather_code": 1, "{key}": 1, "{key}": 2}}, "pred_id": 1}}"#
        ),
    ] {
        assert_payload_rejected(
            payload.as_bytes(),
            RejectReason::DuplicateKey(short.clone()),
        );
    }
    assert_eq!(
        RejectReason::duplicate_key(&"é".repeat(MAX_KEY_IN_REASON)),
        RejectReason::DuplicateKey("é".repeat(MAX_KEY_IN_REASON))
    );
}
