//! The keyboards list read from a keyboards bucket through the real AWS SDK, against moto
//! server (`scripts/test.sh` starts it and sets `AWS_ENDPOINT_URL`).

use std::sync::Arc;

use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use oven::adapters::local::{LocalDbOptions, LocalStorage};
use oven::http::{
    router, ApiConfig, App, KeyboardIndex, KeyboardIndexError, S3KeyboardIndex, POINTER_KEY,
};
use tower::ServiceExt;

/// An S3 client for moto, or `None` (skip) when moto is not configured and not required.
async fn s3() -> Option<aws_sdk_s3::Client> {
    if std::env::var("AWS_ENDPOINT_URL").is_err() {
        assert!(
            std::env::var("OVEN_TEST_MOTO").is_err(),
            "OVEN_TEST_MOTO is set but AWS_ENDPOINT_URL is not"
        );
        eprintln!("skipped: no AWS_ENDPOINT_URL (run scripts/test.sh for moto)");
        return None;
    }
    let conf = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await;
    let s3 = aws_sdk_s3::config::Builder::from(&conf)
        .force_path_style(true)
        .build();
    Some(aws_sdk_s3::Client::from_conf(s3))
}

async fn put(client: &aws_sdk_s3::Client, bucket: &str, key: &str, body: &str) {
    client
        .put_object()
        .bucket(bucket)
        .key(key)
        .body(body.as_bytes().to_vec().into())
        .send()
        .await
        .unwrap();
}

#[tokio::test]
async fn keyboard_list_follows_the_published_pointer() {
    let Some(client) = s3().await else { return };
    let bucket = format!("oven-kb-{}", uuid::Uuid::new_v4().simple());
    client.create_bucket().bucket(&bucket).send().await.unwrap();

    // Nothing published yet.
    let index = S3KeyboardIndex::new(client.clone(), &bucket);
    assert!(matches!(
        index.keyboard_list().await,
        Err(KeyboardIndexError::NotPublished)
    ));

    put(
        &client,
        &bucket,
        "releases/r1/v1/keyboard_list.json",
        r#"{"last_updated":"x","keyboards":["a","b/c"]}"#,
    )
    .await;
    put(
        &client,
        &bucket,
        "releases/r2/v1/keyboard_list.json",
        r#"{"last_updated":"y","keyboards":["z"]}"#,
    )
    .await;
    put(&client, &bucket, POINTER_KEY, r#"{"prefix":"releases/r1"}"#).await;

    let dir = tempfile::tempdir().unwrap();
    let storage = LocalStorage::open_with(
        dir.path(),
        LocalDbOptions {
            fsync_every_commit: false,
            ..Default::default()
        },
    )
    .unwrap();
    let mut app = App::local(
        &storage,
        ApiConfig::new("https://api.example", "https://kb.example"),
    );
    app.keyboards = Some(Arc::new(S3KeyboardIndex::new(client.clone(), &bucket)));
    let res = router(app)
        .oneshot(Request::get("/v1/keyboards").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], br#"["a","b/c"]"#);

    // A fresh reader sees the swapped pointer.
    put(&client, &bucket, POINTER_KEY, r#"{"prefix":"releases/r2"}"#).await;
    let fresh = S3KeyboardIndex::new(client.clone(), &bucket);
    let list = fresh.keyboard_list().await.unwrap();
    assert!(std::str::from_utf8(&list).unwrap().contains("\"z\""));

    // A pointer that escapes its prefix is refused.
    put(&client, &bucket, POINTER_KEY, r#"{"prefix":"../r1"}"#).await;
    let bad = S3KeyboardIndex::new(client, &bucket);
    assert!(matches!(
        bad.keyboard_list().await,
        Err(KeyboardIndexError::Backend(_))
    ));
}
