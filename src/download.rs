//! Fetching an MLflow model directory from S3 into a local cache at cold start.
//!
//! Only the files the service needs are fetched, each with `GetObject` (so the function needs
//! no `ListBucket` permission): `MLmodel`, the onnx flavor's data file, and the external-data
//! files the ONNX graph names. The copy is assembled in a temporary directory and renamed into
//! place, so the cache never holds half a model; a process restarted in the same sandbox finds
//! it there and fetches nothing.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};

use aws_sdk_s3::Client;

use crate::artifact::{self, ArtifactError, MLMODEL_FILE, MlModel, ModelArtifact};

/// Longest wait for one `GetObject` attempt to answer (its body may stream for longer), and
/// for the SDK's attempts together: a model store that never answers stops the cold start
/// with an error naming the object, rather than hanging until Lambda's init timeout.
pub const GET_OBJECT_ATTEMPT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// See [`GET_OBJECT_ATTEMPT_TIMEOUT`].
pub const GET_OBJECT_OPERATION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The timeouts for the S3 client that fetches models.
pub fn timeouts() -> aws_sdk_s3::config::timeout::TimeoutConfig {
    aws_sdk_s3::config::timeout::TimeoutConfig::builder()
        .operation_attempt_timeout(GET_OBJECT_ATTEMPT_TIMEOUT)
        .operation_timeout(GET_OBJECT_OPERATION_TIMEOUT)
        .build()
}

/// Returns the model at `s3://{bucket}/{prefix}`, fetching it into `cache_dir` unless a
/// complete copy is already there.
pub async fn fetch_model(
    client: &Client,
    bucket: &str,
    prefix: &str,
    cache_dir: &Path,
) -> Result<ModelArtifact, ArtifactError> {
    let source = S3Model {
        client,
        bucket,
        prefix,
        uri: format!("s3://{bucket}/{prefix}"),
    };
    let local = cache_dir.join(cache_key(&source.uri));
    if local.join(MLMODEL_FILE).is_file() {
        tracing::info!(model_uri = %source.uri, cache = %local.display(), "model found in the local cache");
    } else {
        source.download_to(&local).await?;
    }
    ModelArtifact::read_dir_from(&local, source.uri)
}

/// A readable, collision-resistant directory name for a model URI.
fn cache_key(uri: &str) -> String {
    let readable: String = uri
        .trim_start_matches("s3://")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut hasher = DefaultHasher::new();
    uri.hash(&mut hasher);
    format!("{readable}-{:016x}", hasher.finish())
}

struct S3Model<'a> {
    client: &'a Client,
    bucket: &'a str,
    prefix: &'a str,
    uri: String,
}

impl S3Model<'_> {
    async fn download_to(&self, local: &Path) -> Result<(), ArtifactError> {
        let started = std::time::Instant::now();
        let partial = partial_dir(local);
        // A leftover from a process that died mid-download is incomplete by construction.
        if partial.exists() {
            std::fs::remove_dir_all(&partial).map_err(|error| self.cache_error(&partial, error))?;
        }
        let bytes = match self.download_files(&partial).await {
            Ok(bytes) => bytes,
            Err(error) => {
                let _ = std::fs::remove_dir_all(&partial);
                return Err(error);
            }
        };
        if let Err(error) = std::fs::rename(&partial, local) {
            let _ = std::fs::remove_dir_all(&partial);
            // Another process may have finished the same download first; its copy is complete.
            if !local.join(MLMODEL_FILE).is_file() {
                return Err(self.cache_error(local, error));
            }
        }
        tracing::info!(
            model_uri = %self.uri,
            bytes,
            download_ms = started.elapsed().as_secs_f64() * 1e3,
            "model downloaded"
        );
        Ok(())
    }

    /// Downloads `MLmodel`, the ONNX file and its external data into `dir`; returns the bytes.
    async fn download_files(&self, dir: &Path) -> Result<usize, ArtifactError> {
        let mlmodel_bytes = self.get(MLMODEL_FILE).await?;
        let mlmodel = MlModel::parse(&String::from_utf8_lossy(&mlmodel_bytes), &self.uri)?;
        let onnx = self.get(&mlmodel.onnx_data).await?;
        let external = artifact::external_data_files(&onnx, &self.object_uri(&mlmodel.onnx_data))?;
        self.write(dir, MLMODEL_FILE, &mlmodel_bytes)?;
        self.write(dir, &mlmodel.onnx_data, &onnx)?;
        let mut bytes = mlmodel_bytes.len() + onnx.len();
        for file in &external {
            let data = self.get(file).await?;
            self.write(dir, file, &data)?;
            bytes += data.len();
        }
        Ok(bytes)
    }

    fn write(&self, dir: &Path, relative: &str, data: &[u8]) -> Result<(), ArtifactError> {
        let path = dir.join(relative);
        let written = match path.parent() {
            Some(parent) => {
                std::fs::create_dir_all(parent).and_then(|()| std::fs::write(&path, data))
            }
            None => std::fs::write(&path, data),
        };
        written.map_err(|error| self.cache_error(&path, error))
    }

    fn cache_error(&self, path: &Path, source: std::io::Error) -> ArtifactError {
        ArtifactError::Cache {
            uri: self.uri.clone(),
            path: path.display().to_string(),
            source,
        }
    }

    fn object_uri(&self, file: &str) -> String {
        format!("{}/{file}", self.uri)
    }

    async fn get(&self, file: &str) -> Result<Vec<u8>, ArtifactError> {
        let key = format!("{}/{file}", self.prefix);
        let object_uri = self.object_uri(file);
        let response = self
            .client
            .get_object()
            .bucket(self.bucket)
            .key(&key)
            .send()
            .await;
        let output = match response {
            Ok(output) => output,
            Err(error) => {
                let missing = error.as_service_error().is_some_and(|e| e.is_no_such_key())
                    || error
                        .raw_response()
                        .is_some_and(|r| r.status().as_u16() == 404);
                return Err(if missing {
                    ArtifactError::NotFound {
                        uri: self.uri.clone(),
                        object: object_uri,
                    }
                } else {
                    ArtifactError::S3 {
                        uri: self.uri.clone(),
                        object: object_uri,
                        // The SDK's own `Display` is terse; this report includes the cause.
                        source: aws_sdk_s3::error::DisplayErrorContext(error)
                            .to_string()
                            .into(),
                    }
                });
            }
        };
        let body = output
            .body
            .collect()
            .await
            .map_err(|error| ArtifactError::S3 {
                uri: self.uri.clone(),
                object: object_uri,
                source: Box::new(error),
            })?;
        Ok(body.into_bytes().to_vec())
    }
}

/// Where a download is assembled before it is renamed to `local`.
fn partial_dir(local: &Path) -> PathBuf {
    let mut name = local.file_name().unwrap_or_default().to_owned();
    name.push(format!(".partial-{}", std::process::id()));
    local.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_keys_are_readable_and_distinct() {
        let a = cache_key("s3://bucket/1/abc/artifacts/model");
        let b = cache_key("s3://bucket/1/abc/artifacts/model2");
        assert!(a.starts_with("bucket_1_abc_artifacts_model-"), "{a}");
        assert_ne!(a, b);
        assert_eq!(a, cache_key("s3://bucket/1/abc/artifacts/model"));
    }

    #[test]
    fn partial_download_sits_beside_the_final_directory() {
        let partial = partial_dir(Path::new("/tmp/cache/model-1"));
        assert_eq!(partial.parent(), Some(Path::new("/tmp/cache")));
        assert!(
            partial
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("model-1.partial-")
        );
    }
}
