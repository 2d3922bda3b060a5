//! The web app of the `clusters` deployment: the course's Flask app, as one small binary.
//!
//! `GET /`, `/cluster1`, `/cluster2` answer `Instance {id} is responding now!`, where `id` is
//! the EC2 instance id read once at start from IMDSv2, or the configured name off EC2.
//! `GET /health` answers `ok`. Shutdown is graceful: in-flight requests finish.

pub mod imds;

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use tokio::net::TcpListener;

/// Serves until `shutdown` completes, then lets in-flight requests finish.
pub async fn run(
    listener: TcpListener,
    instance: String,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app(instance))
        .with_graceful_shutdown(shutdown)
        .await
}

pub fn app(instance: String) -> Router {
    let body: Arc<str> = agent_protocol::responding(&instance).into();
    let answer = move || {
        let body = body.clone();
        async move { body.to_string() }
    };
    Router::new()
        .route("/", get(answer.clone()))
        .route("/cluster1", get(answer.clone()))
        .route("/cluster2", get(answer))
        .route(agent_protocol::HEALTH_PATH, get(|| async { "ok" }))
}
