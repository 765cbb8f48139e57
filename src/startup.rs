//! Cold start: configuration to a ready [`Handler`], with its model and AWS clients, built once
//! per process.

use std::time::Instant;

use thiserror::Error;

use crate::config::{Config, ConfigError, ModelLocation};
use crate::handler::Handler;
use crate::model::ModelError;
use crate::pack::ShardMap;
use crate::promotion::Promotion;
use crate::publish::{self, Publisher, RetryPolicy};
use crate::source::{ModelSource, SourceError};

/// Why the function could not start.
#[derive(Debug, Error)]
pub enum StartupError {
    /// The configuration is invalid.
    #[error("invalid configuration")]
    Config(#[from] ConfigError),
    /// ONNX Runtime or the model could not be loaded.
    #[error("cannot load the model")]
    Model(#[from] ModelError),
    /// The model could not be resolved, fetched or loaded.
    #[error("cannot load the model")]
    Source(#[from] SourceError),
    /// Publishing is on, but no AWS region is set.
    #[error(
        "no AWS region is set: set AWS_REGION (Lambda sets it) to the region of the Kinesis streams"
    )]
    NoRegion,
    /// A stream to publish to cannot be used.
    #[error("Kinesis stream `{stream}` in {region} cannot be used: {cause}")]
    Stream {
        /// The stream's name.
        stream: String,
        /// The region it was looked for in.
        region: String,
        /// What `DescribeStreamSummary` answered.
        cause: String,
    },
}

/// The standard AWS configuration chain: environment, profile files, container or instance
/// credentials. `AWS_ENDPOINT_URL` (or `AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL_KINESIS`)
/// points the clients at local servers.
pub async fn load_aws_config() -> aws_config::SdkConfig {
    aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await
}

/// Loads ONNX Runtime and the model, and builds the AWS clients `config` needs, from the
/// standard AWS configuration chain (so `AWS_ENDPOINT_URL` points them at local servers).
/// The streams to publish to are checked with `DescribeStreamSummary` while the model loads,
/// so that a stream that does not exist, or a missing region, fails the cold start instead of
/// every batch. With `publish` false nothing is ever published (the `invoke` command). Call
/// once per process.
pub async fn start(config: &Config, publish: bool) -> Result<Handler, StartupError> {
    let started = Instant::now();
    let (stream, dead_letter_stream) = match publish {
        true => (config.publish_stream()?, config.dead_letter_stream()),
        false => (None, None),
    };
    let publishing = stream.is_some() || dead_letter_stream.is_some();
    // AWS configuration is loaded only when AWS is used: outside AWS, with no region set, the
    // SDK would go looking for one on the instance metadata service.
    let aws = match publishing || matches!(config.model, ModelLocation::S3 { .. }) {
        true => Some(load_aws_config().await),
        false => None,
    };
    let kinesis = match (&aws, publishing) {
        (Some(aws), true) => {
            let region = aws.region().ok_or(StartupError::NoRegion)?;
            let kinesis_config =
                aws_sdk_kinesis::config::Builder::from(aws).timeout_config(publish::timeouts());
            Some((
                aws_sdk_kinesis::Client::from_conf(kinesis_config.build()),
                region.to_string(),
            ))
        }
        _ => None,
    };
    let source = ModelSource::new(config, aws.clone())?;
    let (model, output, dead_letters) = tokio::join!(
        source.load(),
        publisher(kinesis.as_ref(), stream),
        publisher(kinesis.as_ref(), dead_letter_stream),
    );
    let loaded = model?;
    let mut handler = Handler::new(loaded.model, &config.model_name, &config.version)
        .with_prediction_field(&config.prediction_field)
        .with_publish_budget(config.publish_budget);
    if let Some(registered) = loaded.registered {
        handler = handler.registered(registered, config.run_id.as_deref());
        if let Some(every) = config.model_refresh {
            let mut source = source;
            source.single_attempt();
            handler = handler.promoting(Promotion::new(source, every));
        }
    }
    if let Some(publisher) = output.transpose()? {
        if config.output_aggregation {
            let shards = ShardMap::list(publisher.client(), publisher.stream())
                .await
                .map_err(|cause| StartupError::Stream {
                    stream: publisher.stream().into(),
                    region: kinesis
                        .as_ref()
                        .map(|(_, region)| region.clone())
                        .unwrap_or_default(),
                    cause: format!(
                        "its shards cannot be listed for OUTPUT_AGGREGATION=kpl: {cause}"
                    ),
                })?;
            handler = handler.aggregating(shards);
        }
        handler = handler.publishing_to(publisher.with_concurrency(config.publish_concurrency));
    }
    if let Some(publisher) = dead_letters.transpose()? {
        // Dead letters keep no order: a batch's rejected records often share a partition key.
        let publisher = publisher
            .with_concurrency(config.publish_concurrency)
            .unordered();
        handler = handler.dead_lettering_to(publisher);
    }
    let serving = handler.serving();
    let model = serving.model();
    let registered = serving.registered();
    tracing::info!(
        model_uri = %config.model,
        location = model.uri(),
        version = serving.version(),
        registered_model = registered.map(|version| version.name.as_str()),
        model_version = registered.map(|version| version.version.as_str()),
        run_id = registered.and_then(|version| version.run_id.as_deref()),
        tracking_uri = config.registry.as_ref().map(|registry| registry.server.to_string()),
        model_refresh_s = config.model_refresh.map(|every| every.as_secs_f64()),
        columns = ?model.columns(),
        inputs = ?model.layout().inputs.iter().map(|input| &input.name).collect::<Vec<_>>(),
        outputs = %model.outputs(),
        output_stream = handler.publisher().map(Publisher::stream),
        dead_letter_stream = handler.dead_letter_publisher().map(Publisher::stream),
        publish_concurrency = config.publish_concurrency,
        inference_threads = config.inference_threads,
        native_tree_ensembles = model.native_tree_ensembles(),
        output_aggregation = if config.output_aggregation { "kpl" } else { "none" },
        startup_ms = started.elapsed().as_secs_f64() * 1e3,
        "ready"
    );
    Ok(handler)
}

/// A publisher to `stream`, once checked, if there is a stream and a Kinesis client (and the
/// region it is for).
async fn publisher(
    kinesis: Option<&(aws_sdk_kinesis::Client, String)>,
    stream: Option<&str>,
) -> Option<Result<Publisher, StartupError>> {
    let ((client, region), stream) = kinesis.zip(stream)?;
    let publisher = describe_stream(client, stream, region).await.map(|limit| {
        Publisher::new(client.clone(), stream, RetryPolicy::default()).with_max_record_bytes(limit)
    });
    Some(publisher)
}

/// Checks that `stream` exists in `region` and returns its largest record size in bytes.
async fn describe_stream(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
    region: &str,
) -> Result<usize, StartupError> {
    publish::read_record_size(client, stream)
        .await
        .map_err(|error| StartupError::Stream {
            stream: stream.into(),
            region: region.into(),
            cause: aws_sdk_kinesis::error::DisplayErrorContext(error).to_string(),
        })
}
