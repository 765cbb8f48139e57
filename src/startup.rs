//! Cold start: configuration to a ready [`Handler`], with its model and AWS clients, built once
//! per process.

use std::time::Instant;

use thiserror::Error;

use crate::artifact::ModelArtifact;
use crate::config::{Config, ConfigError, ModelLocation};
use crate::download;
use crate::handler::Handler;
use crate::model::{ModelError, OnnxRuntime};
use crate::publish::{self, Publisher, RetryPolicy};

/// Why the function could not start.
#[derive(Debug, Error)]
pub enum StartupError {
    /// The configuration is invalid.
    #[error("invalid configuration")]
    Config(#[from] ConfigError),
    /// ONNX Runtime or the model could not be loaded.
    #[error("cannot load the model")]
    Model(#[from] ModelError),
}

/// The standard AWS configuration chain: environment, profile files, container or instance
/// credentials. `AWS_ENDPOINT_URL` (or `AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL_KINESIS`)
/// points the clients at local servers.
async fn load_aws_config() -> aws_config::SdkConfig {
    aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await
}

/// Loads ONNX Runtime and the model, and builds the AWS clients `config` needs, from the
/// standard AWS configuration chain (so `AWS_ENDPOINT_URL` points them at local servers).
/// With `publish` false nothing is ever published (the `invoke` command). Call once per
/// process.
pub async fn start(config: &Config, publish: bool) -> Result<Handler, StartupError> {
    let started = Instant::now();
    let (stream, dead_letter_stream) = match publish {
        true => (config.publish_stream()?, config.dead_letter_stream()),
        false => (None, None),
    };
    // AWS configuration is loaded only when AWS is used: outside AWS, with no region set, the
    // SDK would go looking for one on the instance metadata service.
    let mut aws = None;
    let runtime = OnnxRuntime::load(&config.ort_library)?;
    let artifact = match &config.model {
        ModelLocation::Directory(dir) => ModelArtifact::read_dir(dir),
        ModelLocation::S3 { bucket, prefix } => {
            let aws = aws.insert(load_aws_config().await);
            let s3_config =
                aws_sdk_s3::config::Builder::from(&*aws).timeout_config(download::timeouts());
            let client = aws_sdk_s3::Client::from_conf(s3_config.build());
            download::fetch_model(&client, bucket, prefix, &config.model_cache_dir).await
        }
    };
    let model = runtime.load_model(artifact.map_err(ModelError::from)?)?;
    let mut handler = Handler::new(model, &config.model_name, &config.version)
        .with_prediction_field(&config.prediction_field);
    if stream.is_some() || dead_letter_stream.is_some() {
        let aws = match aws {
            Some(aws) => aws,
            None => load_aws_config().await,
        };
        let kinesis_config =
            aws_sdk_kinesis::config::Builder::from(&aws).timeout_config(publish::timeouts());
        let kinesis = aws_sdk_kinesis::Client::from_conf(kinesis_config.build());
        let publisher = |stream| Publisher::new(kinesis.clone(), stream, RetryPolicy::default());
        if let Some(stream) = stream {
            handler = handler.publishing_to(publisher(stream));
        }
        if let Some(stream) = dead_letter_stream {
            handler = handler.dead_lettering_to(publisher(stream));
        }
    }
    let model = handler.model();
    tracing::info!(
        model_uri = model.uri(),
        columns = ?model.columns(),
        inputs = ?model.layout().inputs.iter().map(|input| &input.name).collect::<Vec<_>>(),
        outputs = %model.outputs(),
        output_stream = handler.publisher().map(Publisher::stream),
        dead_letter_stream = handler.dead_letter_publisher().map(Publisher::stream),
        startup_ms = started.elapsed().as_secs_f64() * 1e3,
        "ready"
    );
    Ok(handler)
}
