//! bike-prediction: an AWS Lambda that predicts bike-sharing demand for every record of a Kinesis
//! batch with one batched ONNX Runtime inference, and publishes one prediction event per record.
//!
//! # Layout
//! One record flows through the modules in this order:
//!
//! - [`config`]: typed settings read once from the environment at cold start.
//! - [`artifact`]: reads an MLflow model directory (`MLmodel` + `model.onnx`) and the feature
//!   columns its signature declares.
//! - [`model`]: loads ONNX Runtime and the model, checks the model's inputs can be filled, and runs
//!   one inference over an `[N, F]` batch.
//! - [`event`]: decodes the raw Kinesis Lambda event straight into that `[N, F]` buffer; records
//!   that cannot be predicted become [`event::Rejection`]s with a reason.
//! - [`output`]: encodes the prediction events and the Lambda response.
//! - [`handler`]: ties one invocation together: decode, predict, encode.
//!
//! [`memory`] tunes the allocator so that batches reuse each other's memory, and [`telemetry`]
//! sets up logs and metrics.
//!
//! `src/main.rs` only wires these together for the Lambda runtime and the local `invoke` command.
#![warn(missing_docs)]
// Input must never crash the function: no panicking shortcuts outside tests.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

pub mod artifact;
pub mod config;
pub mod download;
pub mod event;
pub mod handler;
pub mod kinesis;
pub mod memory;
pub mod model;
pub mod output;
pub mod publish;
pub mod telemetry;
