//! Where the model comes from, to a model loaded in ONNX Runtime: a local directory, S3, or a
//! version of the MLflow Model Registry ([`crate::registry`]) and wherever its files are.
//!
//! The cold start ([`crate::startup`]) loads the model once with [`ModelSource::load`]; hot
//! promotion ([`crate::promotion`]) loads a new registry version with
//! [`ModelSource::load_version`], through exactly the same download, checks and build.

use std::path::PathBuf;

use thiserror::Error;
use tokio::sync::OnceCell;

use crate::artifact::ModelArtifact;
use crate::config::{Config, ModelLocation};
use crate::download::{self, Limits, MemoryLimit};
use crate::model::{Model, ModelError, OnnxRuntime};
use crate::registry::{Location, ModelVersion, Registry, RegistryError, RegistryUri};

/// Why a model could not be loaded.
#[derive(Debug, Error)]
pub enum SourceError {
    /// The registry could not say which version to serve, or where its files are.
    #[error(transparent)]
    Registry(#[from] Box<RegistryError>),
    /// A registry version's files could not be fetched, or it cannot be served.
    #[error("cannot load {uri} (version {version} of {name})")]
    Version {
        /// The `models:/` URI.
        uri: String,
        /// The registered model.
        name: String,
        /// The version that was resolved.
        version: String,
        /// Why.
        #[source]
        source: Box<ModelError>,
    },
    /// The model could not be fetched, or it cannot be served.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// No HTTPS client for the tracking server: the system's trust roots cannot be read.
    #[error("cannot set up HTTPS to the MLflow tracking server")]
    Client(#[source] std::io::Error),
}

/// A model ready to serve, and the registry version it is, if it is one.
pub struct Loaded {
    /// The model.
    pub model: Model,
    /// The registry version served (`None` for a directory or an S3 location).
    pub registered: Option<ModelVersion>,
}

/// Everything needed to fetch and build the configured model, again if need be.
pub struct ModelSource {
    location: ModelLocation,
    cache_dir: PathBuf,
    download_timeout: std::time::Duration,
    ort_library: PathBuf,
    threads: usize,
    /// Which kernel runs the tree ensembles (`TREE_KERNEL`).
    tree_kernel: crate::trees::TreeKernel,
    /// ONNX Runtime, loaded with the first model: one environment per process.
    runtime: std::sync::Arc<std::sync::OnceLock<OnnxRuntime>>,
    registry: Option<Registry>,
    /// The S3 client, built the first time a model is read from S3.
    s3: OnceCell<aws_sdk_s3::Client>,
    /// The AWS configuration the cold start loaded, if it loaded one.
    aws: Option<aws_config::SdkConfig>,
}

impl ModelSource {
    /// The source of `config`'s model; `aws` is the AWS configuration already loaded, if any
    /// (it is loaded when first needed otherwise).
    pub fn new(config: &Config, aws: Option<aws_config::SdkConfig>) -> Result<Self, SourceError> {
        let registry = match &config.registry {
            Some(settings) => Some(Registry::new(settings).map_err(SourceError::Client)?),
            None => None,
        };
        Ok(Self {
            location: config.model.clone(),
            cache_dir: config.model_cache_dir.clone(),
            download_timeout: config.model_download_timeout,
            ort_library: config.ort_library.clone(),
            threads: config.inference_threads,
            tree_kernel: config.tree_kernel,
            runtime: std::sync::Arc::default(),
            registry,
            s3: OnceCell::new(),
            aws,
        })
    }

    /// The registry model this source names, and its registry.
    pub fn registry(&self) -> Option<(&RegistryUri, &Registry)> {
        match (&self.location, &self.registry) {
            (ModelLocation::Registry(uri), Some(registry)) => Some((uri, registry)),
            _ => None,
        }
    }

    /// Makes one attempt of each registry call from now on: a promotion check is tried again
    /// at its next due time, and should not keep an invocation waiting on retries.
    pub fn single_attempt(&mut self) {
        if let Some(registry) = &mut self.registry {
            registry.single_attempt();
        }
    }

    /// Fetches the model (resolving a registry model to its version first) and loads it.
    pub async fn load(&self) -> Result<Loaded, SourceError> {
        let artifact = match (&self.location, self.registry()) {
            (ModelLocation::Registry(_), Some((uri, registry))) => {
                let version = registry.resolve(uri).await.map_err(Box::new)?;
                let model = self.load_version(&version, 0).await?;
                return Ok(Loaded {
                    model,
                    registered: Some(version),
                });
            }
            (ModelLocation::S3 { bucket, prefix }, _) => {
                let limits = self.limits(MemoryLimit::from_lambda_environment());
                let s3 = self.s3().await;
                download::fetch_model_within(s3, bucket, prefix, &self.cache_dir, limits).await
            }
            (ModelLocation::Directory(dir), _) => ModelArtifact::read_dir(dir),
            (ModelLocation::Registry(uri), None) => {
                // Config always gives a registry model its tracking server.
                return Err(SourceError::Registry(Box::new(RegistryError::Unreadable {
                    uri: uri.to_string(),
                    location: String::new(),
                    reason: "has no tracking server: set MLFLOW_TRACKING_URI",
                })));
            }
        };
        let model = self.build(artifact.map_err(ModelError::from)?).await?;
        Ok(Loaded {
            model,
            registered: None,
        })
    }

    /// Fetches the files of registry `version` and loads them, with the checks of a cold
    /// start, in the memory a model already loaded (`reserved` bytes) leaves. Only for a
    /// registry source.
    pub async fn load_version(
        &self,
        version: &ModelVersion,
        reserved: u64,
    ) -> Result<Model, SourceError> {
        let Some((uri, registry)) = self.registry() else {
            return Err(SourceError::Registry(Box::new(RegistryError::Unreadable {
                uri: self.location.to_string(),
                location: String::new(),
                reason: "is not a registry model",
            })));
        };
        let location = registry.locate(uri, version).await.map_err(Box::new)?;
        let limits = self.limits(MemoryLimit::from_lambda_environment().reserving(reserved));
        let artifact = match &location {
            Location::S3 { bucket, prefix } => {
                let s3 = self.s3().await;
                download::fetch_model_within(s3, bucket, prefix, &self.cache_dir, limits).await
            }
            Location::Proxy { path } => {
                download::fetch_from(&registry.proxy_model(path), &self.cache_dir, limits).await
            }
        };
        let built = match artifact {
            Ok(artifact) => self.build(artifact).await,
            Err(error) => Err(ModelError::from(error)),
        };
        built.map_err(|source| SourceError::Version {
            uri: uri.to_string(),
            name: version.name.clone(),
            version: version.version.clone(),
            source: Box::new(source),
        })
    }

    /// A download's limits: `memory`, and `MODEL_DOWNLOAD_TIMEOUT` from now.
    fn limits(&self, memory: MemoryLimit) -> Limits {
        Limits::within(memory, self.download_timeout)
    }

    /// The bytes the cached copy of the model at `uri` takes, if the cache holds one: what a
    /// model loaded from it takes in memory, about.
    pub fn cached_bytes(&self, uri: &str) -> Option<u64> {
        download::cached_bytes(&self.cache_dir, uri)
    }

    /// Removes the cached copy of the model at `uri`, if the cache holds one: a version no
    /// longer served after a promotion. ONNX Runtime has read its files already.
    pub fn evict(&self, uri: &str) {
        download::evict(&self.cache_dir, uri);
    }

    /// The S3 client for model downloads, with the download timeouts.
    async fn s3(&self) -> &aws_sdk_s3::Client {
        self.s3
            .get_or_init(|| async {
                let loaded;
                let aws = match &self.aws {
                    Some(aws) => aws,
                    None => {
                        loaded = crate::startup::load_aws_config().await;
                        &loaded
                    }
                };
                let s3_config =
                    aws_sdk_s3::config::Builder::from(aws).timeout_config(download::timeouts());
                aws_sdk_s3::Client::from_conf(s3_config.build())
            })
            .await
    }

    /// Loads `artifact` with ONNX Runtime on a blocking thread, so that the rest of the cold
    /// start (or the invocation's runtime) goes on meanwhile.
    async fn build(&self, artifact: ModelArtifact) -> Result<Model, ModelError> {
        let library = self.ort_library.clone();
        let threads = self.threads;
        let tree_kernel = self.tree_kernel;
        let runtime = self.runtime.clone();
        let loaded = tokio::task::spawn_blocking(move || {
            let runtime = match runtime.get() {
                Some(runtime) => runtime,
                None => {
                    let loaded = OnnxRuntime::load(&library)?;
                    runtime.get_or_init(|| loaded)
                }
            };
            runtime.load_model_with(artifact, threads, tree_kernel)
        })
        .await;
        match loaded {
            Ok(model) => model,
            // The loading thread panicked: let the process fail as it would have on this thread.
            Err(error) => std::panic::resume_unwind(error.into_panic()),
        }
    }
}
