//! The fuzzer's bytes as the protobuf message of a KPL aggregated record, framed with the magic
//! and its digest, between two good records (`bike_prediction_fuzz::check_aggregate`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|message: &[u8]| bike_prediction_fuzz::check_aggregate(message));
