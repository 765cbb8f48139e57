//! The fuzzer's bytes as one record's payload between two good records of a well-formed event
//! (`bike_prediction_fuzz::check_payload`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|payload: &[u8]| bike_prediction_fuzz::check_payload(payload));
