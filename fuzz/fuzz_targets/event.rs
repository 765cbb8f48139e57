//! The fuzzer's bytes as a raw Lambda event, through decode, encode and the response
//! (`bike_prediction_fuzz::check_event`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|event: &[u8]| bike_prediction_fuzz::check_event(event));
