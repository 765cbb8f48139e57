//! bike-prediction: an AWS Lambda that predicts bike-sharing demand for every record of a Kinesis
//! batch with one batched ONNX Runtime inference, and publishes one prediction event per record.
//!
//! # Layout
//! One record flows through the modules in this order:
//!
//! At cold start, [`startup`] reads the [`config`], fetches the model ([`source`]: from a
//! directory, from S3 with [`download`], or as a version of the MLflow Model Registry with
//! [`registry`]), reads its `MLmodel` ([`artifact`]), loads it into ONNX Runtime with its tree
//! ensembles on the service's own kernel ([`trees`]) and binds its inputs to the signature
//! ([`model`], [`inputs`]), and builds the publishers ([`publish`]).
//! With `MODEL_REFRESH_SECONDS`, [`promotion`] follows a registry alias at the start of
//! invocations and swaps in the version it moves to. Then one record flows
//! through the modules in this order:
//!
//! - [`kinesis`]: the Lambda Kinesis event, read in one pass into the records' decoded data;
//!   a record the Kinesis Producer Library aggregated is split into its user records
//!   ([`aggregate`]), each one record for every later stage.
//! - [`event`]: each payload decoded straight into the model's typed input buffers
//!   ([`inputs::Inputs`]); each record entered in the invocation's [`ledger`] as decoded or
//!   rejected with a reason.
//! - [`model`]: one inference over the batch; a regressor's values or a classifier's labels and
//!   probabilities.
//! - [`output`]: the prediction events (into the ledger) and the Lambda response (from it).
//! - [`pack`]: with `OUTPUT_AGGREGATION=kpl`, the prediction events packed into KPL aggregated
//!   records, by the shard of their partition key.
//! - [`publish`]: `PutRecords` to the output and dead-letter streams, calls concurrently and
//!   within the invocation's deadline; records not accepted are marked in the ledger for
//!   re-delivery.
//! - [`handler`]: ties one invocation together: decode, predict, encode, publish, respond.
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

pub mod aggregate;
pub mod artifact;
pub mod config;
pub mod download;
pub mod event;
pub mod handler;
pub mod inputs;
pub mod kinesis;
pub mod ledger;
pub mod memory;
pub mod model;
pub mod output;
pub mod pack;
pub mod promotion;
pub mod publish;
pub mod registry;
pub mod source;
pub mod startup;
pub mod telemetry;
pub mod trees;
