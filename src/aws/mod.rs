//! AWS: the provider that launches a deployment's instances and load balancer, and removes
//! them again.
//!
//! - this module: the clients (aws-config's default chain, bounded timeouts) and
//!   [`AwsError`], which always says what AWS said (code and message) and names the fix for
//!   refused credentials.
//! - [`resource`]: the tags every created resource carries, and resources as recorded data.
//! - [`network`]: the deployment's network as pure data: security groups and their rules.
//! - [`launch`]: AMI, key pair, security groups and instances, found by tag or created.
//! - [`balancer`]: the Application Load Balancer of a spec with routes.
//! - [`metrics`]: CloudWatch series of a deployment (which, as data; GetMetricData).
//! - [`teardown`]: `agent terminate` and `agent status`: everything found by tag.

pub mod alb;
pub mod cloud_init;
pub mod cloudwatch;
pub mod launch;
pub mod lookup;
pub mod network;
pub mod resource;
pub mod teardown;

use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use self::resource::{Kind, Resource};
use crate::event::{CloudEvent, ResourceAction};
use crate::record::RecordStore;
use crate::transport::ssh::known_hosts::KnownHosts;

use aws_config::BehaviorVersion;
use aws_config::timeout::TimeoutConfig;
use aws_credential_types::provider::ProvideCredentials;
use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_ec2::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

/// The clients of one region.
#[derive(Clone)]
pub struct Aws {
    pub ec2: aws_sdk_ec2::Client,
    pub elb: aws_sdk_elasticloadbalancingv2::Client,
    pub ssm: aws_sdk_ssm::Client,
    pub cw: aws_sdk_cloudwatch::Client,
    pub region: String,
}

#[derive(Debug, thiserror::Error)]
pub enum AwsError {
    #[error("no AWS region: pass --region (e.g. us-east-1), or set AWS_REGION or region in ~/.aws/config")]
    NoRegion,
    #[error(
        "no AWS credentials: agent looked in AWS_ACCESS_KEY_ID, {files} (profile {profile}) and the instance metadata service{last}; copy the Learner Lab's AWS Details → AWS CLI block (with aws_session_token) into ~/.aws/credentials"
    )]
    NoCredentials {
        /// The credentials and config files the chain read.
        files: String,
        profile: String,
        /// What the last place tried answered, when it answered something (` (…)`).
        last: String,
    },
    #[error("cannot load AWS credentials: {0}")]
    BadCredentials(String),
    #[error(
        "AWS refused the credentials while trying to {action} ({code}: {message}): the lab session may have ended; start it again and copy the new credentials (AWS Details → AWS CLI) into ~/.aws/credentials"
    )]
    Credentials {
        action: String,
        code: String,
        message: String,
    },
    #[error(
        "cannot {action}: AWS denies it explicitly ({code}: {message}): AWS Academy's Learner Lab allows only regions us-east-1 and us-west-2 and instance types up to large (t2/t3 nano to large, m4.large, c4.large…): check --region and the spec's instance_type"
    )]
    Denied {
        action: String,
        code: String,
        message: String,
    },
    #[error("cannot {action}: {code}: {message}")]
    Service {
        action: String,
        code: String,
        message: String,
    },
    #[error("cannot {action}: AWS did not answer ({detail})")]
    Transport { action: String, detail: String },
}

impl AwsError {
    /// The AWS error code, when AWS answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            AwsError::Service { code, .. } | AwsError::Credentials { code, .. } | AwsError::Denied { code, .. } => {
                Some(code)
            }
            _ => None,
        }
    }
}

/// Codes AWS answers when the credentials are wrong or expired.
const CREDENTIAL_CODES: [&str; 9] = [
    "AuthFailure",
    "ExpiredToken",
    "ExpiredTokenException",
    "RequestExpired",
    "InvalidClientTokenId",
    "UnrecognizedClientException",
    "SignatureDoesNotMatch",
    "InvalidAccessKeyId",
    "InvalidToken",
];

/// Codes AWS answers when a policy does not allow the call (an explicit deny says a policy,
/// such as the Learner Lab's, forbids it outright).
const DENIED_CODES: [&str; 3] = ["UnauthorizedOperation", "AccessDenied", "AccessDeniedException"];

/// Turns an SDK result into one that says what went wrong: `SdkError`'s own Display is just
/// "service error".
pub trait Call<T> {
    fn during(self, action: impl FnOnce() -> String) -> Result<T, AwsError>;
}

impl<T, E> Call<T> for Result<T, SdkError<E, aws_sdk_ec2::config::http::HttpResponse>>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    fn during(self, action: impl FnOnce() -> String) -> Result<T, AwsError> {
        self.map_err(|e| {
            let action = action();
            match &e {
                SdkError::ServiceError(ctx) => {
                    // An error body the SDK could not parse still names its code in XML.
                    let raw = ctx.raw();
                    let body = raw.body().bytes().map(String::from_utf8_lossy).unwrap_or_default();
                    let status = raw.status().as_u16();
                    let code = e
                        .code()
                        .map(str::to_owned)
                        .or_else(|| xml_field(&body, "Code"))
                        .unwrap_or_else(|| format!("HTTP {status}"));
                    let message = e
                        .message()
                        .map(str::to_owned)
                        .or_else(|| xml_field(&body, "Message"))
                        .unwrap_or_else(|| "(no message)".into());
                    if DENIED_CODES.contains(&code.as_str()) && message.contains("explicit deny") {
                        // The encoded authorization message that follows is kilobytes of base64.
                        let message = match message.find(" Encoded authorization failure message") {
                            Some(end) => message[..end].to_owned(),
                            None => message,
                        };
                        AwsError::Denied { action, code, message }
                    } else if CREDENTIAL_CODES.contains(&code.as_str())
                        || (status == 401 || status == 403) && code.starts_with("HTTP")
                    {
                        AwsError::Credentials { action, code, message }
                    } else {
                        AwsError::Service { action, code, message }
                    }
                }
                _ => AwsError::Transport {
                    action,
                    detail: one_line(&DisplayErrorContext(&e).to_string()),
                },
            }
        })
    }
}

fn xml_field(body: &str, name: &str) -> Option<String> {
    let start = body.find(&format!("<{name}>"))? + name.len() + 2;
    let len = body[start..].find(&format!("</{name}>"))?;
    Some(body[start..start + len].trim().to_owned())
}

impl AwsError {
    /// [`AwsError::NoCredentials`], naming the files and profile the default chain read,
    /// and the innermost cause of the last attempt's failure.
    fn no_credentials(last: Option<&(dyn std::error::Error + 'static)>) -> AwsError {
        let last = last.map(|e| {
            let mut inner = e;
            while let Some(s) = inner.source() {
                inner = s;
            }
            let text: String = one_line(&inner.to_string()).chars().take(120).collect();
            format!(" (it said: {})", text.trim_end_matches('.'))
        });
        let home = || std::env::var("HOME").unwrap_or_else(|_| "~".into());
        let file = |var: &str, name: &str| std::env::var(var).unwrap_or_else(|_| format!("{}/.aws/{name}", home()));
        AwsError::NoCredentials {
            files: format!(
                "{} and {}",
                file("AWS_SHARED_CREDENTIALS_FILE", "credentials"),
                file("AWS_CONFIG_FILE", "config")
            ),
            profile: std::env::var("AWS_PROFILE").unwrap_or_else(|_| "default".into()),
            last: last.unwrap_or_default(),
        }
    }
}

/// An error and its sources on one line, at most 300 characters: enough to name a bad
/// profile or file, never the SDK's dump of every attempt.
fn short_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        parts.push(s.to_string());
        source = s.source();
    }
    let line = one_line(&parts.join(": "));
    match line.char_indices().nth(300) {
        Some((at, _)) => format!("{}…", &line[..at]),
        None => line,
    }
}

/// Error chains from the HTTP stack span lines; keep the message to one.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

impl Aws {
    /// Clients from the default chain (environment, profiles, the credentials file with its
    /// session token, `AWS_ENDPOINT_URL`), with `region` overriding the chain's. The
    /// credentials are resolved here so that missing ones fail before anything is planned.
    pub async fn connect(region: Option<&str>) -> Result<Aws, AwsError> {
        let mut loader = aws_config::defaults(BehaviorVersion::latest()).timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(10))
                .operation_attempt_timeout(Duration::from_secs(30))
                .operation_timeout(Duration::from_secs(90))
                .build(),
        );
        if let Some(r) = region {
            loader = loader.region(aws_config::Region::new(r.to_owned()));
        }
        let config = loader.load().await;
        let region = config.region().ok_or(AwsError::NoRegion)?.to_string();
        let provider = config
            .credentials_provider()
            .ok_or_else(|| AwsError::no_credentials(None))?;
        let credentials = provider.provide_credentials().await.map_err(|e| match e {
            // A config file agent cannot use: that file is the fix.
            CredentialsError::InvalidConfiguration(_) => AwsError::BadCredentials(short_chain(&e)),
            // Nothing found, the last place tried (the metadata service) refusing or silent:
            // where agent looked is what helps, not the SDK's kilobyte of response headers.
            CredentialsError::CredentialsNotLoaded(_) => AwsError::no_credentials(None),
            other => AwsError::no_credentials(Some(&other)),
        })?;
        if credentials.expiry().is_some_and(|t| t <= std::time::SystemTime::now()) {
            return Err(AwsError::Credentials {
                action: "load credentials".into(),
                code: "ExpiredToken".into(),
                message: "the credentials' expiry time has passed".into(),
            });
        }
        Ok(Aws {
            ec2: aws_sdk_ec2::Client::new(&config),
            elb: aws_sdk_elasticloadbalancingv2::Client::new(&config),
            ssm: aws_sdk_ssm::Client::new(&config),
            cw: aws_sdk_cloudwatch::Client::new(&config),
            region,
        })
    }
}

/// How long a resource just created may stay invisible before agent gives up on it.
const SETTLE: Duration = Duration::from_secs(30);

/// The NotFound codes AWS answers, for a few seconds, about a resource it has just created
/// (eventual consistency: EC2's API guide, ELB's too).
const NOT_YET_VISIBLE: [&str; 4] = [
    "InvalidInstanceID.NotFound",
    "InvalidGroup.NotFound",
    "TargetGroupNotFound",
    "LoadBalancerNotFound",
];

/// Sends a request that names a resource this run may have just created: while AWS answers
/// that it does not exist, asks again (0.5 s, doubling to 5 s, for at most [`SETTLE`]). The
/// SDK's own retries do not cover these codes; its instance waiter does, the same way.
pub async fn settled<T, E, F, Fut>(mut send: F) -> Result<T, SdkError<E, aws_sdk_ec2::config::http::HttpResponse>>
where
    E: ProvideErrorMetadata,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, SdkError<E, aws_sdk_ec2::config::http::HttpResponse>>>,
{
    let give_up = tokio::time::Instant::now() + SETTLE;
    let mut wait = Duration::from_millis(500);
    loop {
        match send().await {
            Err(e)
                if e.code().is_some_and(|c| NOT_YET_VISIBLE.contains(&c))
                    && tokio::time::Instant::now() + wait <= give_up =>
            {
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
            done => return done,
        }
    }
}

/// Polls `check` every `every` until it returns `Some`, `deadline` passes, or `cancel`
/// fires. Every wait on AWS goes through here, so none is unbounded.
pub async fn poll<T, F, Fut>(
    every: Duration,
    deadline: tokio::time::Instant,
    cancel: &tokio_util::sync::CancellationToken,
    mut check: F,
) -> Result<Option<T>, AwsError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>, AwsError>>,
{
    loop {
        if let Some(t) = check().await? {
            return Ok(Some(t));
        }
        if tokio::time::Instant::now() + every > deadline {
            return Ok(None);
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = cancel.cancelled() => return Ok(None),
        }
    }
}

/// Sends progress and records what was created (`terminate` records nothing).
pub struct Progress<'a> {
    pub tx: &'a mpsc::Sender<CloudEvent>,
    pub record: Option<&'a RecordStore>,
    /// Where a launched instance's host key is pinned, under its id, the moment it exists.
    pub known_hosts: Option<&'a KnownHosts>,
}

impl Progress<'_> {
    pub async fn resource(&self, action: ResourceAction, kind: Kind, id: &str, name: &str) -> anyhow::Result<()> {
        let resource = Resource {
            kind,
            id: id.to_owned(),
            name: name.to_owned(),
        };
        if action == ResourceAction::Created
            && let Some(record) = self.record
        {
            record
                .commit_resource(resource.clone())
                .await
                .with_context(|| format!("cannot write deployment record {}", record.path().display()))?;
        }
        self.event(CloudEvent::Resource {
            action,
            kind,
            id: resource.id,
            name: resource.name,
        })
        .await;
        Ok(())
    }

    /// Pins the host key agent generated for instance `id` (its address is not known yet:
    /// the id stands in until the deploy pins it under the address it dials).
    pub fn host_key(&self, id: &str, key: &russh::keys::PublicKey) -> anyhow::Result<()> {
        if let Some(k) = self.known_hosts {
            k.pin(&[(id.to_owned(), vec![key.clone()], id.to_owned())])?;
        }
        Ok(())
    }

    pub async fn event(&self, e: CloudEvent) {
        let _ = self.tx.send(e).await;
    }

    pub async fn notice(&self, message: String) {
        self.event(CloudEvent::Notice { message }).await;
    }
}

/// Every resource agent makes goes through here: what the lookup `found` is reported as
/// found; otherwise `create` makes it (tagged at creation) and it is recorded before the
/// next one is made, so a crash between two creates leaves nothing untracked.
pub async fn find_or_create<T, Fut>(
    progress: &Progress<'_>,
    kind: Kind,
    name: &str,
    found: Option<T>,
    id: impl Fn(&T) -> String,
    create: impl FnOnce() -> Fut,
) -> anyhow::Result<T>
where
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let (value, action) = match found {
        Some(v) => (v, ResourceAction::Found),
        None => (create().await?, ResourceAction::Created),
    };
    progress.resource(action, kind, &id(&value), name).await?;
    Ok(value)
}

/// Between two creates: stop here if Ctrl-C came (an in-flight create is always finished
/// and recorded first).
pub fn interrupted(cancel: &CancellationToken) -> anyhow::Result<()> {
    if cancel.is_cancelled() {
        bail!(Interrupted);
    }
    Ok(())
}

/// Ctrl-C stopped the launch between two steps.
#[derive(Debug, thiserror::Error)]
#[error("interrupted")]
pub struct Interrupted;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_fields_from_a_body_the_sdk_did_not_parse() {
        let body = "<?xml version=\"1.0\"?><ErrorResponse><Errors><Error><Code>InvalidClientTokenId</Code><Message>The security token included in the request is invalid.</Message></Error></Errors></ErrorResponse>";
        assert_eq!(xml_field(body, "Code").as_deref(), Some("InvalidClientTokenId"));
        assert_eq!(
            xml_field(body, "Message").as_deref(),
            Some("The security token included in the request is invalid.")
        );
        assert_eq!(xml_field("<html>busy</html>", "Code"), None);
    }
}
