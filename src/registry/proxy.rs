//! A model directory behind the tracking server's artifact proxy (`mlflow server
//! --serve-artifacts`, the default since MLflow 2): `mlflow-artifacts:/<path>` is read with
//! `GET /api/2.0/mlflow-artifacts/artifacts/<path>/<file>`, one request per file the service
//! needs, as [`crate::download`] reads S3. The server streams the file from wherever it keeps
//! it (its disk, or a bucket only it may read).

use http::StatusCode;

use super::http::{CallError, Http};
use crate::artifact::ArtifactError;
use crate::download::{FileBody, Store, StoredFile};

/// Path of the artifact proxy's download endpoint on the tracking server.
pub const ARTIFACTS_ENDPOINT: &str = "/api/2.0/mlflow-artifacts/artifacts";

/// The model directory at `mlflow-artifacts:/<path>` of one tracking server.
pub struct ProxyModel<'a> {
    http: &'a Http,
    /// The directory's path in the artifact store, without leading or trailing `/`.
    path: String,
    /// `mlflow-artifacts://<server>/<path>`: the cache entry's key and the name in messages.
    uri: String,
}

impl<'a> ProxyModel<'a> {
    /// The directory at `path` (as in `mlflow-artifacts:/<path>`) on `http`'s server.
    pub fn new(http: &'a Http, path: &str) -> Self {
        let path = path.trim_matches('/').to_owned();
        let uri = format!("mlflow-artifacts://{}/{path}", http.server().authority);
        Self { http, path, uri }
    }

    fn file_path(&self, file: &str) -> String {
        // A `.` or `..` segment is sent escaped, as a name: neither the server nor anything
        // between may take it as a step up the path. Empty segments are left out.
        let encode = |segment: &str| match segment {
            "." | ".." => segment.replace('.', "%2E"),
            _ => percent_encoding::utf8_percent_encode(segment, PATH_SEGMENT).to_string(),
        };
        let segments: Vec<String> = self
            .path
            .split('/')
            .chain(file.split('/'))
            .filter(|segment| !segment.is_empty())
            .map(encode)
            .collect();
        format!("{ARTIFACTS_ENDPOINT}/{}", segments.join("/"))
    }
}

/// What is escaped in one segment of an artifact's path: everything but the characters a
/// path segment may hold as they are.
const PATH_SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

impl Store for ProxyModel<'_> {
    fn uri(&self) -> &str {
        &self.uri
    }

    fn vet(&self, _file: &str, bytes: &[u8]) -> Result<(), &'static str> {
        // Their parse errors quote them: a file that holds the credentials would have them
        // logged.
        match self.http.quotes_credentials(bytes) {
            true => Err(super::http::QUOTES_CREDENTIALS),
            false => Ok(()),
        }
    }

    async fn open(&self, file: &str) -> Result<StoredFile, ArtifactError> {
        let object = format!("{}/{file}", self.uri);
        let response =
            self.http
                .get_file(&self.file_path(file))
                .await
                .map_err(|error| match error {
                    CallError::Status { status, .. }
                        if status == StatusCode::NOT_FOUND.as_u16() =>
                    {
                        ArtifactError::NotFound {
                            uri: self.uri.clone(),
                            object: object.clone(),
                        }
                    }
                    error => ArtifactError::Store {
                        uri: self.uri.clone(),
                        object: object.clone(),
                        source: Box::new(error),
                    },
                })?;
        let length = response
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok()?.parse().ok());
        let etag = response
            .headers()
            .get(http::header::ETAG)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        Ok(StoredFile {
            length,
            etag,
            // The proxy's ETag is not the file's MD5 (Starlette's, from its time and size).
            md5: None,
            body: FileBody::Http {
                body: response.into_body(),
                idle: self.http.timeout(),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::registry::http::{Credentials, TrackingServer};

    #[test]
    fn files_are_read_under_the_proxy_endpoint_each_segment_escaped() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let _guard = runtime.enter();
        let server = TrackingServer::parse("http://127.0.0.1:5000").unwrap();
        let http = Http::new(server, &Credentials::None, Duration::from_secs(1)).unwrap();
        let model = ProxyModel::new(&http, "/1/models/m-07ab/artifacts/");
        assert_eq!(
            model.uri(),
            "mlflow-artifacts://127.0.0.1:5000/1/models/m-07ab/artifacts"
        );
        assert_eq!(
            model.file_path("MLmodel"),
            "/api/2.0/mlflow-artifacts/artifacts/1/models/m-07ab/artifacts/MLmodel"
        );
        assert_eq!(
            model.file_path("data/weights file?.bin"),
            "/api/2.0/mlflow-artifacts/artifacts/1/models/m-07ab/artifacts/data/weights%20file%3F.bin"
        );
        // No step up the path, whatever the names.
        assert_eq!(
            ProxyModel::new(&http, "1/../2//./m").file_path("./../x..y"),
            "/api/2.0/mlflow-artifacts/artifacts/1/%2E%2E/2/%2E/m/%2E/%2E%2E/x..y"
        );
    }
}
