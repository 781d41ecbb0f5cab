//! The router behind API Gateway: an HTTP API (payload v2) event, parsed by lambda_http the way
//! the deployed functions receive it, runs through the same router.

use http_body_util::BodyExt;
use oven::adapters::local::{LocalDbOptions, LocalStorage};
use oven::http::{router, ApiConfig, App};
use oven::job::JobState;
use oven::ports::JobStore;
use tower::ServiceExt;

#[tokio::test]
async fn api_gateway_v2_event_runs_through_the_router() {
    let dir = tempfile::tempdir().unwrap();
    let storage = LocalStorage::open_with(
        dir.path(),
        LocalDbOptions {
            fsync_every_commit: false,
            ..Default::default()
        },
    )
    .unwrap();
    let app = App::local(
        &storage,
        ApiConfig::new("https://api.example", "https://kb.example"),
    );
    let event = include_str!("fixtures/apigw-v2-post-compile.json");
    let req = lambda_http::request::from_str(event).unwrap();
    let res = router(app).oneshot(req).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["access-control-allow-origin"],
        "https://config.qmk.fm"
    );
    let body = res.into_body().collect().await.unwrap().to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let id = v["job_id"].as_str().unwrap().parse().unwrap();
    let job = storage.db.get(id).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Queued);
    assert_eq!(job.request["keymap"], "from_lambda");
}
