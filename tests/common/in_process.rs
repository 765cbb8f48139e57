//! A Kinesis client whose calls are answered in process, through the SDK's HTTP layer, so
//! that a `PutRecords` call goes through the SDK's whole pipeline (serialization, signing, the
//! publisher's own body, deserialization) with no server. Included by `tests/common` and by
//! the publisher's unit tests (`src/publish/tests.rs`).

use std::sync::Arc;

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::config::RuntimeComponents;
use aws_sdk_kinesis::config::http::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::result::ConnectorError;

/// One entry of a `PutRecords` request, as it came in the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub partition_key: String,
    /// Decoded from base64.
    pub data: Vec<u8>,
}

/// An HTTP client answering every request in process with `answer`, so that a `PutRecords`
/// call goes through the SDK's whole pipeline (serialization, signing, the publisher's own
/// body, deserialization) with no server.
#[derive(Clone)]
struct InProcess(Arc<Respond>);

/// How an [`InProcess`] client answers a request.
type Respond = dyn Fn(&HttpRequest) -> Result<HttpResponse, ConnectorError> + Send + Sync;

impl std::fmt::Debug for InProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InProcess")
    }
}

impl HttpConnector for InProcess {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        HttpConnectorFuture::ready((self.0)(&request))
    }
}

impl HttpClient for InProcess {
    fn http_connector(
        &self,
        _settings: &HttpConnectorSettings,
        _components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(self.clone())
    }
}

/// A Kinesis client whose `PutRecords` calls `answer` answers, given each call's entries, read
/// from the request's body.
pub fn kinesis(answer: impl Fn(Vec<Entry>) -> HttpResponse + Send + Sync + 'static) -> Client {
    let respond = move |request: &HttpRequest| {
        let body: serde_json::Value =
            serde_json::from_slice(request.body().bytes().unwrap()).expect("the body is JSON");
        assert!(body["StreamName"].is_string(), "{body}");
        let keys = body["Records"]
            .as_array()
            .expect("a list of records")
            .iter()
            .map(|entry| {
                let data = entry["Data"].as_str().expect("data");
                Entry {
                    partition_key: entry["PartitionKey"].as_str().expect("a key").to_owned(),
                    data: base64_simd::STANDARD.decode_to_vec(data).expect("base64"),
                }
            })
            .collect();
        Ok(answer(keys))
    };
    answering(respond)
}

/// A Kinesis client whose every request `respond` answers: with an HTTP response, or with
/// the error of a connection that failed.
pub fn answering(
    respond: impl Fn(&HttpRequest) -> Result<HttpResponse, ConnectorError> + Send + Sync + 'static,
) -> Client {
    let config = aws_sdk_kinesis::Config::builder()
        .behavior_version(aws_sdk_kinesis::config::BehaviorVersion::latest())
        .region(aws_sdk_kinesis::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_kinesis::config::Credentials::new(
            "AKID", "SECRET", None, None, "tests",
        ))
        .http_client(InProcess(Arc::new(respond)))
        .build();
    Client::from_conf(config)
}

/// A successful answer, with one result per entry: `None` for one accepted, else the error
/// code it failed with.
pub fn answer(results: &[Option<&str>]) -> HttpResponse {
    let records: Vec<serde_json::Value> = results
        .iter()
        .enumerate()
        .map(|(i, result)| match result {
            None => serde_json::json!({
                "SequenceNumber": i.to_string(),
                "ShardId": "shardId-000000000000",
            }),
            Some(code) => serde_json::json!({"ErrorCode": code, "ErrorMessage": "injected"}),
        })
        .collect();
    let failed = results.iter().filter(|result| result.is_some()).count();
    let body = serde_json::json!({"FailedRecordCount": failed, "Records": records});
    HttpResponse::new(200u16.try_into().unwrap(), body.to_string().into())
}

/// The error of a connection the peer reset before it answered.
pub fn connection_reset() -> ConnectorError {
    ConnectorError::io(Box::new(std::io::Error::from(
        std::io::ErrorKind::ConnectionReset,
    )))
}

/// An error answer of `type_` with `status`.
pub fn error_answer(status: u16, type_: &str) -> HttpResponse {
    let body = serde_json::json!({"__type": type_, "message": "1 validation error detected"});
    let mut response = HttpResponse::new(status.try_into().unwrap(), body.to_string().into());
    response
        .headers_mut()
        .insert("x-amzn-errortype", type_.to_owned());
    response
}
