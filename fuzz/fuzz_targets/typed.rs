//! The fuzzer's bytes as one record's payload between two good records of a well-formed event,
//! decoded with layouts of every element type (one input per column, and tensor signatures),
//! the predictions a fake classifier's (`bike_prediction_fuzz::check_typed`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|payload: &[u8]| bike_prediction_fuzz::check_typed(payload));
