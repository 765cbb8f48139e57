//! The fuzzer's bytes as a tree ensemble's attributes and rows, through the service's kernel and
//! ONNX Runtime's (`bike_prediction_fuzz::check_trees`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| bike_prediction_fuzz::check_trees(bytes));
