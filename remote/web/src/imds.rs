//! The EC2 instance metadata service, IMDSv2: a session token (PUT), then the instance id
//! (GET with the token). Bounded: off EC2 nothing answers at 169.254.169.254.

use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::{Method, Request};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// The standard endpoint; `AWS_EC2_METADATA_SERVICE_ENDPOINT` overrides it as in the AWS SDKs.
pub const DEFAULT_ENDPOINT: &str = "http://169.254.169.254";

pub async fn instance_id(endpoint: &str, limit: Duration) -> Result<String, String> {
    tokio::time::timeout(limit, fetch(endpoint.trim_end_matches('/')))
        .await
        .map_err(|_| format!("no answer from {endpoint} within {limit:?}"))?
}

async fn fetch(endpoint: &str) -> Result<String, String> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let send = |req: Request<Empty<Bytes>>| {
        let client = client.clone();
        async move {
            let resp = client.request(req).await.map_err(|e| format!("{endpoint}: {e}"))?;
            let status = resp.status();
            let body = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
            let text = String::from_utf8_lossy(&body).trim().to_owned();
            if !status.is_success() {
                return Err(format!("{endpoint} answered {status}"));
            }
            Ok(text)
        }
    };
    let token = send(
        Request::builder()
            .method(Method::PUT)
            .uri(format!("{endpoint}/latest/api/token"))
            .header("X-aws-ec2-metadata-token-ttl-seconds", "21600")
            .body(Empty::new())
            .map_err(|e| e.to_string())?,
    )
    .await?;
    let id = send(
        Request::builder()
            .uri(format!("{endpoint}/latest/meta-data/instance-id"))
            .header("X-aws-ec2-metadata-token", token)
            .body(Empty::new())
            .map_err(|e| e.to_string())?,
    )
    .await?;
    if id.is_empty() || id.contains(char::is_whitespace) {
        return Err(format!("{endpoint} gave an unusable instance id {id:?}"));
    }
    Ok(id)
}
