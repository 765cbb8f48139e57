//! Fetching an MLflow model directory into a local cache at cold start: from S3, or from any
//! other [`Store`] (the MLflow tracking server's artifact proxy, [`crate::registry`]).
//!
//! Only the files the service needs are fetched, one request each (from S3 with `GetObject`,
//! so the function needs no `ListBucket` permission): `MLmodel`, the onnx flavor's data file,
//! and the external-data files the ONNX graph names. Each object is streamed to its file as it arrives, so a model
//! is never held in memory while it downloads, and checked on the way: its size against the
//! function's memory and the free space of the cache before any of it is written, then its
//! length and, where the store gives it (an S3 ETag that is the object's MD5), its digest. The copy is assembled in a
//! temporary directory, with a manifest of what was fetched, and renamed into place, so the
//! cache never holds half a model; a process restarted in the same sandbox finds it there,
//! checks it against the manifest, and fetches nothing.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use aws_sdk_s3::Client;
use aws_sdk_s3::operation::get_object::GetObjectOutput;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::ServerSideEncryption;
use bytes::Bytes;
use http_body_util::BodyExt as _;
use md5::{Digest as _, Md5};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::artifact::{
    self, ArtifactError, MAX_MLMODEL_BYTES, MLMODEL_FILE, MlModel, ModelArtifact,
};

/// Longest wait for one `GetObject` attempt to answer (its body may stream for longer), and
/// for the SDK's attempts together: a model store that never answers stops the cold start
/// with an error naming the object, rather than hanging until Lambda's init timeout.
pub const GET_OBJECT_ATTEMPT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// See [`GET_OBJECT_ATTEMPT_TIMEOUT`].
pub const GET_OBJECT_OPERATION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The file in a cache entry that records which model it holds and the size, ETag and SHA-256
/// of each file, written last, before the entry is renamed into place.
pub const MANIFEST_FILE: &str = ".bike-prediction-download.json";

/// Longest a whole model download may take when nothing else bounds it (`MODEL_DOWNLOAD_TIMEOUT`):
/// a store that sends a file slowly, but never slowly enough for a per-read timeout, stops
/// the cold start with an error naming the file.
pub const DEFAULT_DOWNLOAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

/// Characters of the model's location kept, sanitized, at the start of a cache entry's name,
/// so that an operator can tell the entries apart; a hash of the whole location follows.
const READABLE_KEY_CHARS: usize = 64;

/// The timeouts for the S3 client that fetches models.
pub fn timeouts() -> aws_sdk_s3::config::timeout::TimeoutConfig {
    aws_sdk_s3::config::timeout::TimeoutConfig::builder()
        .operation_attempt_timeout(GET_OBJECT_ATTEMPT_TIMEOUT)
        .operation_timeout(GET_OBJECT_OPERATION_TIMEOUT)
        .build()
}

/// The memory a model must fit in: ONNX Runtime holds the whole model once it is loaded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryLimit {
    /// The function's memory in MB, as Lambda sets `AWS_LAMBDA_FUNCTION_MEMORY_SIZE`;
    /// `None` outside Lambda: the machine's physical memory is the limit.
    pub megabytes: Option<u64>,
    /// Bytes of that memory a model already loaded takes (the one serving while another
    /// version is fetched).
    pub reserved: u64,
}

impl MemoryLimit {
    /// The limit Lambda sets for this function (`AWS_LAMBDA_FUNCTION_MEMORY_SIZE`, in MB).
    pub fn from_lambda_environment() -> Self {
        Self {
            megabytes: std::env::var("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")
                .ok()
                .and_then(|value| value.trim().parse().ok()),
            reserved: 0,
        }
    }

    /// The same limit, with `bytes` of it taken by a model already loaded.
    pub fn reserving(self, bytes: u64) -> Self {
        Self {
            reserved: bytes,
            ..self
        }
    }

    /// The bytes a model may take, and what they are, for messages.
    fn room(self) -> Option<(u64, String)> {
        let (bytes, what) = match self.megabytes {
            Some(megabytes) => (
                megabytes.saturating_mul(1024 * 1024),
                format!("the function's memory (AWS_LAMBDA_FUNCTION_MEMORY_SIZE={megabytes} MB"),
            ),
            None => {
                let bytes = physical_memory()?;
                (bytes, format!("this machine's memory ({} MB", bytes >> 20))
            }
        };
        let reserved = match self.reserved {
            0 => String::new(),
            reserved => format!(", {reserved} bytes of it taken by the model serving"),
        };
        Some((
            bytes.saturating_sub(self.reserved),
            format!("{what}{reserved}"),
        ))
    }
}

/// What one model download may take besides memory and disk: the time until `deadline`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// The memory the model must fit in.
    pub memory: MemoryLimit,
    /// When the whole download must have arrived; `None`: no deadline.
    pub deadline: Option<tokio::time::Instant>,
    /// The time that deadline gives, for messages.
    pub timeout: Option<std::time::Duration>,
}

impl Limits {
    /// `memory`, and `timeout` for the whole download from now.
    pub fn within(memory: MemoryLimit, timeout: std::time::Duration) -> Self {
        Self {
            memory,
            deadline: Some(tokio::time::Instant::now() + timeout),
            timeout: Some(timeout),
        }
    }
}

impl From<MemoryLimit> for Limits {
    fn from(memory: MemoryLimit) -> Self {
        Self {
            memory,
            deadline: None,
            timeout: None,
        }
    }
}

/// Returns the model at `s3://{bucket}/{prefix}`, fetching it into `cache_dir` unless a
/// complete copy is already there; a model larger than the function's memory (Lambda's
/// `AWS_LAMBDA_FUNCTION_MEMORY_SIZE`, else the machine's) is refused, and a download that
/// takes longer than [`DEFAULT_DOWNLOAD_TIMEOUT`] stopped.
pub async fn fetch_model(
    client: &Client,
    bucket: &str,
    prefix: &str,
    cache_dir: &Path,
) -> Result<ModelArtifact, ArtifactError> {
    let limits = Limits::within(
        MemoryLimit::from_lambda_environment(),
        DEFAULT_DOWNLOAD_TIMEOUT,
    );
    fetch_model_within(client, bucket, prefix, cache_dir, limits).await
}

/// [`fetch_model`] within the limits given.
pub async fn fetch_model_within(
    client: &Client,
    bucket: &str,
    prefix: &str,
    cache_dir: &Path,
    limits: impl Into<Limits>,
) -> Result<ModelArtifact, ArtifactError> {
    let store = S3Model {
        client,
        bucket,
        prefix,
        uri: format!("s3://{bucket}/{prefix}"),
    };
    fetch_from(&store, cache_dir, limits.into()).await
}

/// Returns the model directory `store` holds, fetching it into `cache_dir` unless a complete
/// copy is already there, with the checks [`fetch_model`] makes.
pub async fn fetch_from(
    store: &impl Store,
    cache_dir: &Path,
    limits: Limits,
) -> Result<ModelArtifact, ArtifactError> {
    let source = Fetch {
        store,
        limits,
        memory: limits.memory.room(),
    };
    let uri = store.uri();
    let local = cache_dir.join(cache_key(uri));
    // Partial copies of processes no longer running (killed mid-download) go, whether this
    // model is cached or not.
    remove_abandoned_partials(cache_dir);
    match Manifest::read(&local) {
        Some(manifest) if manifest.describes(&local, uri) => {
            tracing::info!(model_uri = %uri, cache = %local.display(), "model found in the local cache");
        }
        _ => {
            // Another model's files, or an entry a process did not finish: fetched again.
            if local.exists() {
                std::fs::remove_dir_all(&local)
                    .map_err(|error| source.cache_error(&local, error))?;
            }
            source.download_to(&local).await?;
        }
    }
    ModelArtifact::read_dir_from(&local, uri.to_owned())
}

/// Where a model directory's files are read from, one request per file.
pub trait Store {
    /// The model directory's location: named in messages, and the key of its cache entry.
    fn uri(&self) -> &str;

    /// Starts reading `file`, a path relative to the model directory; a file that does not
    /// exist is [`ArtifactError::NotFound`].
    fn open(&self, file: &str) -> impl Future<Output = Result<StoredFile, ArtifactError>>;

    /// Refuses a file that arrived whole (`MLmodel`, the ONNX graph; files whose text
    /// messages may quote) if it holds what must not be quoted; says why.
    fn vet(&self, _file: &str, _bytes: &[u8]) -> Result<(), &'static str> {
        Ok(())
    }
}

/// The bytes of the files of the cached copy of the model at `uri` in `cache_dir`, if there
/// is one.
pub fn cached_bytes(cache_dir: &Path, uri: &str) -> Option<u64> {
    let manifest = Manifest::read(&cache_dir.join(cache_key(uri)))?;
    (manifest.uri == uri).then(|| manifest.files.iter().map(|file| file.bytes).sum())
}

/// Removes the cached copy of the model at `uri` from `cache_dir`, if there is one. A model
/// already loaded from it keeps working: ONNX Runtime has read its files, or maps them, and
/// a mapped file stays readable once removed.
pub fn evict(cache_dir: &Path, uri: &str) {
    let entry = cache_dir.join(cache_key(uri));
    if Manifest::read(&entry).is_some_and(|manifest| manifest.uri == uri) {
        match std::fs::remove_dir_all(&entry) {
            Ok(()) => {
                tracing::info!(model_uri = %uri, cache = %entry.display(), "cached model removed")
            }
            Err(error) => {
                tracing::warn!(model_uri = %uri, cache = %entry.display(), %error, "cannot remove a cached model")
            }
        }
    }
}

/// A file of a model directory as its store answers it, its bytes still to come.
pub struct StoredFile {
    /// Its length, when the store says it.
    pub length: Option<u64>,
    /// Its ETag, kept in the cache's manifest.
    pub etag: Option<String>,
    /// Its MD5, when the store gives one the bytes can be checked against.
    pub md5: Option<[u8; 16]>,
    /// Its bytes.
    pub body: FileBody,
}

/// The bytes of a [`StoredFile`] as they arrive.
pub enum FileBody {
    /// An S3 object's body.
    S3(ByteStream),
    /// An HTTP response's body; each piece must arrive within `idle` of the one before.
    Http {
        /// The body.
        body: hyper::body::Incoming,
        /// Longest wait for the next piece.
        idle: std::time::Duration,
    },
}

impl FileBody {
    /// The next piece of the file, `None` at its end.
    async fn next(&mut self) -> Option<Result<Bytes, Box<dyn std::error::Error + Send + Sync>>> {
        match self {
            Self::S3(body) => body.next().await.map(|chunk| chunk.map_err(Into::into)),
            Self::Http { body, idle } => loop {
                let frame = match tokio::time::timeout(*idle, body.frame()).await {
                    Err(_) => {
                        return Some(Err(format!(
                            "no data for {} s in the middle of the file",
                            idle.as_secs_f64()
                        )
                        .into()));
                    }
                    Ok(frame) => frame?,
                };
                match frame.map(hyper::body::Frame::into_data) {
                    Ok(Ok(data)) => return Some(Ok(data)),
                    // Trailers: no data.
                    Ok(Err(_)) => continue,
                    Err(error) => return Some(Err(error.into())),
                }
            },
        }
    }
}

/// A cache entry's name for a model location: the start of the location, sanitized to ASCII
/// letters, digits, `-` and `_` (so no `/`, `.` or `..`), then 128 bits of its SHA-256. It is
/// at most 97 bytes whatever the location, and two locations share it only if their hashes
/// collide; the manifest inside is checked anyway.
fn cache_key(uri: &str) -> String {
    let mut readable = String::with_capacity(READABLE_KEY_CHARS);
    for c in uri.trim_start_matches("s3://").chars() {
        if readable.len() == READABLE_KEY_CHARS {
            break;
        }
        let c = if c.is_ascii_alphanumeric() || c == '-' {
            c
        } else {
            '_'
        };
        if !(c == '_' && readable.ends_with('_')) {
            readable.push(c);
        }
    }
    let digest = Sha256::digest(uri.as_bytes());
    format!("{readable}-{}", hex(digest.iter().take(16)))
}

fn hex<'a>(bytes: impl IntoIterator<Item = &'a u8>) -> String {
    bytes
        .into_iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// What a cache entry holds: the model's location, and each file as S3 gave it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Manifest {
    uri: String,
    files: Vec<CachedFile>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct CachedFile {
    /// Relative to the entry.
    name: String,
    bytes: u64,
    etag: Option<String>,
    /// SHA-256 of the bytes written, lowercase hex: a file changed in place since, even at the
    /// same size, is not the model fetched.
    sha256: String,
}

impl Manifest {
    fn read(dir: &Path) -> Option<Self> {
        serde_json::from_slice(&std::fs::read(dir.join(MANIFEST_FILE)).ok()?).ok()
    }

    /// Whether the entry in `dir` is the model at `uri`, with every file as it was written.
    fn describes(&self, dir: &Path, uri: &str) -> bool {
        self.uri == uri
            && self.files.iter().any(|file| file.name == MLMODEL_FILE)
            && self.files.iter().all(|file| {
                let path = dir.join(&file.name);
                std::fs::metadata(&path)
                    .is_ok_and(|metadata| metadata.is_file() && metadata.len() == file.bytes)
                    && sha256_of(&path).is_ok_and(|sha256| sha256 == file.sha256)
            })
    }
}

/// A model directory in S3, read with `GetObject`.
struct S3Model<'a> {
    client: &'a Client,
    bucket: &'a str,
    prefix: &'a str,
    uri: String,
}

impl Store for S3Model<'_> {
    fn uri(&self) -> &str {
        &self.uri
    }

    async fn open(&self, file: &str) -> Result<StoredFile, ArtifactError> {
        let output = self.get(file).await?;
        Ok(StoredFile {
            length: output
                .content_length()
                .and_then(|length| u64::try_from(length).ok()),
            etag: output.e_tag().map(str::to_owned),
            md5: etag_md5(&output),
            body: FileBody::S3(output.body),
        })
    }
}

/// One download from a store into the cache, within its limits.
struct Fetch<'a, S> {
    store: &'a S,
    limits: Limits,
    /// The bytes the model may take in memory, and what they are (`limits.memory`, worked
    /// out once rather than for every piece of a file).
    memory: Option<(u64, String)>,
}

impl<S: Store> Fetch<'_, S> {
    fn uri(&self) -> &str {
        self.store.uri()
    }

    async fn download_to(&self, local: &Path) -> Result<(), ArtifactError> {
        let started = std::time::Instant::now();
        let partial = Partial(partial_dir(local));
        // A leftover of this process's is incomplete by construction (other processes' went
        // in `fetch_from`).
        if partial.0.exists() {
            std::fs::remove_dir_all(&partial.0)
                .map_err(|error| self.cache_error(&partial.0, error))?;
        }
        // Whether the download fails, or its future is dropped (a promotion out of time), the
        // partial directory goes with `partial`.
        let manifest = self.download_files(&partial.0).await?;
        if let Err(error) = std::fs::rename(&partial.0, local) {
            // Another process may have finished the same download first; its copy is complete.
            if !Manifest::read(local).is_some_and(|theirs| theirs.describes(local, self.uri())) {
                return Err(self.cache_error(local, error));
            }
        }
        tracing::info!(
            model_uri = %self.uri(),
            bytes = manifest.files.iter().map(|file| file.bytes).sum::<u64>(),
            download_ms = started.elapsed().as_secs_f64() * 1e3,
            "model downloaded"
        );
        Ok(())
    }

    /// Downloads `MLmodel`, the ONNX file and its external data into `dir`, then the
    /// manifest; returns the manifest.
    async fn download_files(&self, dir: &Path) -> Result<Manifest, ArtifactError> {
        std::fs::create_dir_all(dir).map_err(|error| self.cache_error(dir, error))?;
        let mut manifest = Manifest {
            uri: self.uri().to_owned(),
            files: Vec::new(),
        };
        self.download(dir, MLMODEL_FILE, &mut manifest).await?;
        let mlmodel = self.read(dir, MLMODEL_FILE)?;
        self.vet(MLMODEL_FILE, &mlmodel)?;
        let mlmodel = MlModel::parse(&String::from_utf8_lossy(&mlmodel), self.uri())?;
        // YAML can spell a name with escapes: the file name is checked as read, too.
        self.vet(MLMODEL_FILE, mlmodel.onnx_data.as_bytes())?;
        self.download(dir, &mlmodel.onnx_data, &mut manifest)
            .await?;
        // Read back to find the external data files, and freed before the model is loaded.
        let onnx = self.read(dir, &mlmodel.onnx_data)?;
        self.vet(&mlmodel.onnx_data, &onnx)?;
        let object = self.object_uri(&mlmodel.onnx_data);
        let external = artifact::external_data_files(&onnx, &object)?;
        drop(onnx);
        // A location naming a file already fetched would fetch it again over the one checked.
        if let Some(own) = external
            .iter()
            .find(|file| same_path(file, &mlmodel.onnx_data) || same_path(file, MLMODEL_FILE))
        {
            return Err(ArtifactError::NotOnnx {
                object,
                detail: format!("external data location {own:?} is a file of the model itself"),
            });
        }
        for file in &external {
            self.download(dir, file, &mut manifest).await?;
        }
        let path = dir.join(MANIFEST_FILE);
        let json = serde_json::to_vec(&manifest).unwrap_or_default();
        std::fs::write(&path, json).map_err(|error| self.cache_error(&path, error))?;
        Ok(manifest)
    }

    fn vet(&self, relative: &str, bytes: &[u8]) -> Result<(), ArtifactError> {
        self.store
            .vet(relative, bytes)
            .map_err(|reason| ArtifactError::Store {
                uri: self.uri().to_owned(),
                object: self.object_uri(relative),
                source: reason.into(),
            })
    }

    fn read(&self, dir: &Path, relative: &str) -> Result<Vec<u8>, ArtifactError> {
        let path = dir.join(relative);
        std::fs::read(&path).map_err(|error| self.cache_error(&path, error))
    }

    /// Streams one file to `dir/relative`, after checking that it fits, and checks what
    /// arrived against what the store said it is.
    async fn download(
        &self,
        dir: &Path,
        relative: &str,
        manifest: &mut Manifest,
    ) -> Result<(), ArtifactError> {
        let object = self.object_uri(relative);
        let mut stored = self.in_time(&object, self.store.open(relative)).await??;
        let expected = stored.length;
        let fetched: u64 = manifest.files.iter().map(|file| file.bytes).sum();
        // `MLmodel` is read whole, as text: a larger file is not one.
        let most = (relative == MLMODEL_FILE).then_some(MAX_MLMODEL_BYTES);
        if let Some(bytes) = expected {
            self.check_size(&object, bytes, most)?;
            self.check_room(dir, &object, bytes, bytes, fetched)?;
        }
        let path = dir.join(relative);
        let mut file = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::File::create(&path))
            .map_err(|error| self.cache_error(&path, error))?;
        let mut md5 = Md5::new();
        let mut sha256 = Sha256::new();
        let mut written: u64 = 0;
        while let Some(chunk) = self.in_time(&object, stored.body.next()).await? {
            let chunk = chunk.map_err(|error| self.store_error(&object, error))?;
            written += chunk.len() as u64;
            if expected.is_some_and(|bytes| written > bytes) {
                break;
            }
            if expected.is_none() {
                // The disk has room for what came before already: only this piece is new.
                self.check_size(&object, written, most)?;
                self.check_room(dir, &object, written, chunk.len() as u64, fetched)?;
            }
            md5.update(&chunk);
            sha256.update(&chunk);
            file.write_all(&chunk)
                .map_err(|error| self.cache_error(&path, error))?;
        }
        file.sync_all()
            .map_err(|error| self.cache_error(&path, error))?;
        let damaged = |detail: String| ArtifactError::Damaged {
            uri: self.uri().to_owned(),
            object: object.clone(),
            detail,
        };
        if let Some(bytes) = expected.filter(|bytes| *bytes != written) {
            return Err(damaged(format!(
                "{written} bytes{} where the store said {bytes}",
                if written > bytes { " or more" } else { "" }
            )));
        }
        let etag = stored.etag;
        if let Some(expected) = stored.md5 {
            let actual: [u8; 16] = md5.finalize().into();
            if actual != expected {
                return Err(damaged(format!(
                    "MD5 {} where the ETag says {}",
                    hex(&actual),
                    hex(&expected)
                )));
            }
        }
        manifest.files.push(CachedFile {
            name: relative.to_owned(),
            bytes: written,
            etag,
            sha256: hex(&sha256.finalize()),
        });
        Ok(())
    }

    /// `step`, unless the download's deadline passes first.
    async fn in_time<T>(
        &self,
        object: &str,
        step: impl Future<Output = T>,
    ) -> Result<T, ArtifactError> {
        let Some(deadline) = self.limits.deadline else {
            return Ok(step.await);
        };
        tokio::time::timeout_at(deadline, step)
            .await
            .map_err(|_| ArtifactError::TimedOut {
                uri: self.uri().to_owned(),
                object: object.to_owned(),
                seconds: self.limits.timeout.unwrap_or_default().as_secs_f64(),
            })
    }

    /// Refuses an object of `bytes` when it may be at most `most` bytes.
    fn check_size(&self, object: &str, bytes: u64, most: Option<u64>) -> Result<(), ArtifactError> {
        match most {
            Some(most) if bytes > most => Err(ArtifactError::Oversized {
                uri: self.uri().to_owned(),
                object: object.to_owned(),
                most,
            }),
            _ => Ok(()),
        }
    }

    /// Refuses an object of `bytes` that would take the model (`fetched` bytes so far) over
    /// the function's memory, or whose `unwritten` bytes do not fit in the cache's free space.
    fn check_room(
        &self,
        dir: &Path,
        object: &str,
        bytes: u64,
        unwritten: u64,
        fetched: u64,
    ) -> Result<(), ArtifactError> {
        let too_large = |room: String, available: u64, remedy| ArtifactError::TooLarge {
            uri: self.uri().to_owned(),
            object: object.to_owned(),
            bytes,
            room,
            available,
            remedy,
        };
        if let Some((memory, what)) = &self.memory
            && fetched.saturating_add(bytes) > *memory
        {
            return Err(too_large(
                format!("{what}, {fetched} bytes of the model fetched before it)"),
                *memory,
                "memory (MemorySize)",
            ));
        }
        match free_space(dir) {
            Ok(free) if unwritten > free => Err(too_large(
                format!("the free space in {}", dir.display()),
                free,
                "ephemeral storage (EphemeralStorage) or point MODEL_CACHE_DIR elsewhere",
            )),
            Ok(_) => Ok(()),
            Err(error) => Err(self.cache_error(dir, error)),
        }
    }

    fn cache_error(&self, path: &Path, source: std::io::Error) -> ArtifactError {
        ArtifactError::Cache {
            uri: self.uri().to_owned(),
            path: path.display().to_string(),
            source,
        }
    }

    fn store_error(
        &self,
        object: &str,
        source: Box<dyn std::error::Error + Send + Sync>,
    ) -> ArtifactError {
        ArtifactError::Store {
            uri: self.uri().to_owned(),
            object: object.to_owned(),
            source,
        }
    }

    fn object_uri(&self, file: &str) -> String {
        format!("{}/{file}", self.uri())
    }
}

impl S3Model<'_> {
    async fn get(&self, file: &str) -> Result<GetObjectOutput, ArtifactError> {
        let key = format!("{}/{file}", self.prefix);
        let object_uri = format!("{}/{file}", self.uri);
        let response = self
            .client
            .get_object()
            .bucket(self.bucket)
            .key(&key)
            .send()
            .await;
        response.map_err(|error| {
            let missing = error.as_service_error().is_some_and(|e| e.is_no_such_key())
                || error
                    .raw_response()
                    .is_some_and(|r| r.status().as_u16() == 404);
            if missing {
                ArtifactError::NotFound {
                    uri: self.uri.clone(),
                    object: object_uri.clone(),
                }
            } else {
                // The SDK's own `Display` is terse; this report includes the cause.
                let report = aws_sdk_s3::error::DisplayErrorContext(error).to_string();
                ArtifactError::Store {
                    uri: self.uri.clone(),
                    object: object_uri.clone(),
                    source: report.into(),
                }
            }
        })
    }
}

/// The SHA-256 of the file at `path`, lowercase hex, read in pieces.
fn sha256_of(path: &Path) -> std::io::Result<String> {
    use std::io::Read as _;
    let mut file = std::fs::File::open(path)?;
    let mut sha256 = Sha256::new();
    let mut buffer = vec![0; 1 << 16];
    loop {
        match file.read(&mut buffer)? {
            0 => return Ok(hex(&sha256.finalize())),
            read => sha256.update(buffer.get(..read).unwrap_or_default()),
        }
    }
}

/// The MD5 of an object's bytes, when its ETag is one: an object uploaded in one part and
/// stored unencrypted or with SSE-S3. A multipart upload's ETag (`"...-N"`) and an SSE-KMS or
/// SSE-C object's are not its MD5; then only the length is checked.
fn etag_md5(output: &GetObjectOutput) -> Option<[u8; 16]> {
    let encrypted = match output.server_side_encryption() {
        None | Some(ServerSideEncryption::Aes256) => output.sse_customer_algorithm().is_some(),
        Some(_) => true,
    };
    if encrypted {
        return None;
    }
    md5_of_etag(output.e_tag()?)
}

/// The 16 bytes of an ETag that is 32 hexadecimal digits, quoted or not.
fn md5_of_etag(etag: &str) -> Option<[u8; 16]> {
    let digits = etag.trim_matches('"');
    if digits.len() != 32 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut md5 = [0; 16];
    for (byte, pair) in md5.iter_mut().zip(digits.as_bytes().chunks(2)) {
        *byte = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(md5)
}

/// Bytes an unprivileged process may still write on the file system holding `dir`.
fn free_space(dir: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt as _;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes())?;
    let mut stats = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is a NUL-terminated string and `stats` is writable memory of the size
    // `statvfs` fills; it is read only when the call succeeds.
    let stats = unsafe {
        if libc::statvfs(path.as_ptr(), stats.as_mut_ptr()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        stats.assume_init()
    };
    #[allow(clippy::unnecessary_cast)] // the fields' types differ between targets
    Ok(stats.f_bavail as u64 * stats.f_frsize as u64)
}

/// Whether two relative paths inside a model directory name the same file (`./a` is `a`).
fn same_path(a: &str, b: &str) -> bool {
    let parts = |path: &str| -> Vec<String> {
        Path::new(path)
            .components()
            .filter(|part| !matches!(part, std::path::Component::CurDir))
            .map(|part| part.as_os_str().to_string_lossy().into_owned())
            .collect()
    };
    parts(a) == parts(b)
}

/// Bytes of physical memory, `None` if the system does not say.
fn physical_memory() -> Option<u64> {
    // SAFETY: `sysconf` only reads the system's configuration.
    let (pages, page_size) = unsafe {
        (
            libc::sysconf(libc::_SC_PHYS_PAGES),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    let pages = u64::try_from(pages).ok().filter(|pages| *pages > 0)?;
    pages.checked_mul(u64::try_from(page_size).ok()?)
}

/// A download's partial directory, removed when dropped unless it was renamed into place.
struct Partial(PathBuf);

impl Drop for Partial {
    fn drop(&mut self) {
        if self.0.exists() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// Removes the partial downloads in `cache_dir` of processes that are no longer running (a
/// function killed at its timeout mid-download, then started again in the same sandbox).
fn remove_abandoned_partials(cache_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(cache_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some((_, pid)) = name.to_str().and_then(|name| name.rsplit_once(".partial-")) else {
            continue;
        };
        let Ok(pid) = pid.parse::<libc::pid_t>() else {
            continue;
        };
        // SAFETY: signal 0 sends nothing; it only asks whether the process exists.
        let gone = pid > 0
            && unsafe { libc::kill(pid, 0) } != 0
            && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
        if gone {
            let _ = std::fs::remove_dir_all(entry.path());
        }
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
    fn cache_keys_are_one_short_safe_path_component_whatever_the_location() {
        let long = "r".repeat(1000);
        let shared = "x".repeat(240);
        let locations = [
            format!("s3://b/1/{}/artifacts/model", "a".repeat(240)),
            format!("s3://b/1/{long}/artifacts/model"),
            format!("s3://b/{shared}/one"),
            format!("s3://b/{shared}/two"),
            "s3://b/1/runé/ünïcödé/日本語/artifacts/model".to_owned(),
            "s3://b/../../etc/passwd".to_owned(),
            "s3://b/a/./b".to_owned(),
            "s3://b/a//////b".to_owned(),
            "s3://b/a/b".to_owned(),
            format!("s3://b/{}", "é".repeat(300)),
        ];
        let keys: Vec<String> = locations.iter().map(|uri| cache_key(uri)).collect();
        for (uri, key) in locations.iter().zip(&keys) {
            assert!(key.len() <= 97, "{uri}: {key}");
            assert!(
                key.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                "{uri}: {key}"
            );
            assert!(!key.contains("__"), "{uri}: {key}");
            assert_eq!(Path::new(key).components().count(), 1, "{uri}: {key}");
        }
        let distinct: std::collections::HashSet<_> = keys.iter().collect();
        assert_eq!(distinct.len(), keys.len(), "{keys:?}");
    }

    #[test]
    fn cache_key_hash_is_stable_across_builds() {
        // SHA-256 of "s3://bucket/1/abc/artifacts/model", from `sha256sum`, first 128 bits.
        assert_eq!(
            cache_key("s3://bucket/1/abc/artifacts/model"),
            "bucket_1_abc_artifacts_model-41505582de2171258851852fbaaeb9e3"
        );
    }

    #[test]
    fn only_a_plain_hexadecimal_etag_is_an_md5() {
        let md5 = md5_of_etag("\"9e107d9d372bb6826bd81d3542a419d6\"").unwrap();
        assert_eq!(hex(&md5), "9e107d9d372bb6826bd81d3542a419d6");
        assert!(md5_of_etag("9E107D9D372BB6826BD81D3542A419D6").is_some());
        for etag in [
            "\"9e107d9d372bb6826bd81d3542a419d6-3\"",
            "\"9e107d9d372bb6826bd81d3542a419\"",
            "\"zz107d9d372bb6826bd81d3542a419d6\"",
            "",
        ] {
            assert_eq!(md5_of_etag(etag), None, "{etag}");
        }
    }

    #[test]
    fn etag_of_an_encrypted_object_is_not_its_md5() {
        let etag = "\"9e107d9d372bb6826bd81d3542a419d6\"";
        let output = |sse: Option<ServerSideEncryption>, customer: Option<&str>| {
            GetObjectOutput::builder()
                .e_tag(etag)
                .set_server_side_encryption(sse)
                .set_sse_customer_algorithm(customer.map(str::to_owned))
                .build()
        };
        assert!(etag_md5(&output(None, None)).is_some());
        assert!(etag_md5(&output(Some(ServerSideEncryption::Aes256), None)).is_some());
        assert!(etag_md5(&output(Some(ServerSideEncryption::AwsKms), None)).is_none());
        assert!(etag_md5(&output(Some(ServerSideEncryption::AwsKmsDsse), None)).is_none());
        assert!(etag_md5(&output(Some(ServerSideEncryption::Aes256), Some("AES256"))).is_none());
    }

    #[test]
    fn free_space_is_that_of_the_file_system() {
        let free = free_space(Path::new("/tmp")).unwrap();
        assert!(free > 0);
        assert!(free_space(Path::new("/nonexistent/dir")).is_err());
    }

    #[test]
    fn memory_limit_is_lambdas_in_megabytes_else_the_machines_less_what_is_reserved() {
        let limit = MemoryLimit {
            megabytes: Some(256),
            reserved: 0,
        };
        assert_eq!(limit.room().unwrap().0, 256 * 1024 * 1024);
        let (bytes, what) = limit.reserving(1 << 20).room().unwrap();
        assert_eq!(bytes, 255 * 1024 * 1024);
        assert!(what.contains("1048576 bytes of it taken"), "{what}");
        let machine = physical_memory().unwrap();
        assert!(machine > 64 << 20, "{machine}");
        let (bytes, what) = MemoryLimit::default().room().unwrap();
        assert_eq!(bytes, machine);
        assert!(what.starts_with("this machine's memory"), "{what}");
        // A reservation larger than the memory leaves no room rather than wrapping.
        assert_eq!(limit.reserving(u64::MAX).room().unwrap().0, 0);
    }

    #[test]
    fn paths_naming_the_same_file_of_a_model_are_recognised() {
        assert!(same_path("model.onnx", "./model.onnx"));
        assert!(same_path("data/./w.bin", "data/w.bin"));
        assert!(same_path("./MLmodel", MLMODEL_FILE));
        assert!(!same_path("data/model.onnx", "model.onnx"));
        assert!(!same_path("model.onnx.data", "model.onnx"));
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

/// A download's limits against a store whose files never end, or come one byte at a time.
#[cfg(test)]
mod limits {
    use std::pin::Pin;
    use std::task::{Context, Poll};
    use std::time::Duration;

    use super::*;

    /// A body of `chunk` repeated without end, the next one `every` after the last.
    struct Endless {
        chunk: Bytes,
        every: Duration,
        sleep: Pin<Box<tokio::time::Sleep>>,
    }

    impl http_body::Body for Endless {
        type Data = Bytes;
        type Error = std::io::Error;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            context: &mut Context<'_>,
        ) -> Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
            if self.sleep.as_mut().poll(context).is_pending() {
                return Poll::Pending;
            }
            let next = tokio::time::Instant::now() + self.every;
            self.sleep.as_mut().reset(next);
            Poll::Ready(Some(Ok(http_body::Frame::data(self.chunk.clone()))))
        }
    }

    /// A store whose file `endless` says it is `length` bytes (`None`: says nothing) and
    /// sends `chunk` every `every`, without end; its `MLmodel`, unless that is the endless
    /// one, is the bundled model's.
    struct EndlessStore {
        endless: &'static str,
        length: Option<u64>,
        chunk: usize,
        every: Duration,
    }

    impl Store for EndlessStore {
        fn uri(&self) -> &str {
            "endless://store/model"
        }

        async fn open(&self, file: &str) -> Result<StoredFile, ArtifactError> {
            if file != self.endless {
                let mlmodel = include_bytes!("../models/bike-demand/MLmodel");
                return Ok(StoredFile {
                    length: Some(mlmodel.len() as u64),
                    etag: None,
                    md5: None,
                    body: FileBody::S3(ByteStream::from_static(mlmodel)),
                });
            }
            let body = Endless {
                chunk: Bytes::from(vec![b'a'; self.chunk]),
                every: self.every,
                sleep: Box::pin(tokio::time::sleep(Duration::ZERO)),
            };
            Ok(StoredFile {
                length: self.length,
                etag: None,
                md5: None,
                body: FileBody::S3(ByteStream::from_body_1_x(body)),
            })
        }
    }

    fn fetch(store: &EndlessStore, limits: Limits) -> (ArtifactError, Vec<String>) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let cache = tempfile::tempdir().unwrap();
        let error = runtime
            .block_on(fetch_from(store, cache.path(), limits))
            .expect_err("an endless file is never a model");
        let left = std::fs::read_dir(cache.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        (error, left)
    }

    #[test]
    fn a_file_that_comes_too_slowly_stops_at_the_deadline_and_leaves_nothing() {
        for (endless, length) in [
            ("MLmodel", None),
            ("model.onnx", None),
            ("model.onnx", Some(1 << 30)),
        ] {
            let store = EndlessStore {
                endless,
                length,
                chunk: 1,
                every: Duration::from_millis(50),
            };
            let started = std::time::Instant::now();
            let limits = Limits::within(MemoryLimit::default(), Duration::from_millis(400));
            let (error, left) = fetch(&store, limits);
            assert!(started.elapsed() < Duration::from_secs(5));
            assert!(matches!(error, ArtifactError::TimedOut { .. }), "{error}");
            let message = error.to_string();
            assert!(
                message.contains(&format!(
                    "endless://store/model/{endless} did not arrive within 0.4 s"
                )),
                "{message}"
            );
            assert_eq!(left, Vec::<String>::new());
        }
    }

    #[test]
    fn a_file_larger_than_memory_is_refused_before_or_as_it_arrives() {
        let machine = physical_memory().unwrap();
        // Said too large: refused before any of it is written, at the machine's memory
        // outside Lambda; an MLmodel file at its own limit.
        for (endless, length, expected) in [
            ("model.onnx", Some(machine + 1), "this machine's memory"),
            ("MLmodel", Some(2 << 30), "the most such a file can be"),
            ("MLmodel", None, "the most such a file can be"),
        ] {
            let store = EndlessStore {
                endless,
                length,
                chunk: 1 << 20,
                every: Duration::ZERO,
            };
            let (error, left) = fetch(&store, MemoryLimit::default().into());
            assert!(error.to_string().contains(expected), "{error}");
            assert_eq!(left, Vec::<String>::new());
        }
        // Sending more than the function's memory, without saying its length.
        let mut limit = MemoryLimit {
            megabytes: Some(1),
            reserved: 0,
        };
        for _ in 0..2 {
            let store = EndlessStore {
                endless: "model.onnx",
                length: None,
                chunk: 64 << 10,
                every: Duration::ZERO,
            };
            let (error, left) = fetch(&store, limit.into());
            assert!(matches!(error, ArtifactError::TooLarge { .. }), "{error}");
            assert!(
                error
                    .to_string()
                    .contains("AWS_LAMBDA_FUNCTION_MEMORY_SIZE=1 MB"),
                "{error}"
            );
            assert_eq!(left, Vec::<String>::new());
            limit = limit.reserving(512 << 10);
        }
    }

    #[test]
    fn a_download_dropped_midway_leaves_nothing_in_the_cache() {
        let store = EndlessStore {
            endless: "model.onnx",
            length: None,
            chunk: 1024,
            every: Duration::from_millis(10),
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let cache = tempfile::tempdir().unwrap();
        runtime.block_on(async {
            let download = fetch_from(&store, cache.path(), MemoryLimit::default().into());
            let dropped = tokio::time::timeout(Duration::from_millis(300), download).await;
            assert!(dropped.is_err());
        });
        assert_eq!(std::fs::read_dir(cache.path()).unwrap().count(), 0);
    }

    #[test]
    fn partial_downloads_of_processes_no_longer_running_are_removed() {
        let cache = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let abandoned = cache.path().join(format!("other-model.partial-{dead}"));
        let running = cache
            .path()
            .join(format!("other-model.partial-{}", std::process::id()));
        let unrelated = cache.path().join("notes.partial-x");
        for dir in [&abandoned, &running, &unrelated] {
            std::fs::create_dir_all(dir.join("data")).unwrap();
        }
        remove_abandoned_partials(cache.path());
        assert!(!abandoned.exists());
        assert!(running.exists() && unrelated.exists());
    }
}
