//! The AWS path end to end, against moto server (`scripts/test.sh` starts it): the submit, status
//! and download routers on the DynamoDB/SQS/S3 adapters, and the compile function's handler
//! (`oven_compile::Handler`, the one its Lambda main serves) with the real worker and the
//! fakeqmk firmware fixture, on the events built from what SQS delivers. Between the queue and
//! the handler this file plays the SQS event source mapping: it receives, hands the batch over,
//! deletes the records the handler did not report as failures and leaves the others to come
//! back (`ReportBatchItemFailures`).

use oven::adapters::conformance::curl;
use oven_tests::check_intel_hex;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::event::sqs::SqsEvent;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use http_body_util::BodyExt;
use oven::adapters::aws::{provision, AwsClients, AwsConfig, AwsStorage};
use oven::config;
use oven::http::ApiConfig;
use oven::ports::{JobQueue, QueueMessage};
use oven::worker::{Worker, WorkerConfig};
use oven_compile::Handler;
use serde_json::{json, Value};
use tower::ServiceExt;

const PUBLIC_URL: &str = "https://oven.example";
/// The queues' own visibility timeout; the receives below set theirs per call.
const VISIBILITY: Duration = Duration::from_secs(30);
/// As template.yaml's redrive policy, shortened: the third receive moves a message to the DLQ.
const MAX_RECEIVES: u32 = 2;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/fakeqmk")
}

struct Env {
    clients: AwsClients,
    names: AwsConfig,
    queue_arn: String,
    dlq_url: String,
    dlq_arn: String,
    router: axum::Router,
    handler: Handler,
    _work: tempfile::TempDir,
}

/// Fresh resources on moto, or `None` (with a note) when no emulator is configured outside CI.
async fn setup(test: &str) -> Option<Env> {
    if std::env::var_os(config::AWS_ENDPOINT_URL).is_none() {
        assert!(
            std::env::var_os(config::TEST_MOTO).is_none(),
            "{} is set but {} is not: start moto (scripts/test.sh does)",
            config::TEST_MOTO,
            config::AWS_ENDPOINT_URL
        );
        eprintln!("skipping {test}: no {}", config::AWS_ENDPOINT_URL);
        return None;
    }
    let clients = AwsClients::from_env().await;
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..12];
    let prefix = format!("e2e-{}-{suffix}", test.replace('_', "-"));
    let prefix = prefix[prefix.len().saturating_sub(40)..]
        .trim_start_matches('-')
        .to_string();
    let names = provision::ensure_all(&clients, &prefix, VISIBILITY, MAX_RECEIVES)
        .await
        .unwrap();
    let queues = provision::ensure_queue(
        &clients.sqs,
        &format!("{prefix}-compile"),
        VISIBILITY,
        MAX_RECEIVES,
    )
    .await
    .unwrap();
    let queue_arn = queue_arn(&clients, &names.queue_url).await;

    let router = oven::http::router(oven::http::aws::app(
        &clients,
        &names,
        ApiConfig::new(PUBLIC_URL, "https://keyboards.example"),
        1,
    ));
    let work = tempfile::tempdir().unwrap();
    let cfg = WorkerConfig {
        qmk_home: Some(fixture().join("qmk_firmware")),
        qmk: fixture().join("bin/qmk"),
        path: std::env::var("PATH").unwrap(),
        work_root: work.path().join("work"),
        public_url: PUBLIC_URL.into(),
        compile_timeout: Duration::from_secs(120),
        lease: Duration::from_secs(30),
        heartbeat: Duration::from_secs(5),
        retry_after: oven::worker::RETRY_AFTER,
        jobs: 2,
        log_cap: 1 << 20,
        max_attempts: 3,
        source_archives: true,
        qmk_client: None,
    };
    let storage = AwsStorage::new(&clients, &names);
    let worker = Worker::new(
        Arc::new(storage.jobs),
        Arc::new(storage.queue),
        Arc::new(storage.artifacts),
        cfg,
    );
    let handler = Handler::new(Arc::new(worker), Some(queues.dlq_arn.clone()));
    Some(Env {
        clients,
        names,
        queue_arn,
        dlq_url: queues.dlq_url,
        dlq_arn: queues.dlq_arn,
        router,
        handler,
        _work: work,
    })
}

async fn queue_arn(clients: &AwsClients, url: &str) -> String {
    clients
        .sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap()
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
        .unwrap()
}

/// One request through the router: (status, headers, body).
async fn call(env: &Env, method: &str, uri: &str, body: &str) -> (u16, http::HeaderMap, Vec<u8>) {
    let req = http::Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(body.to_string())
        .unwrap();
    let res = env.router.clone().oneshot(req).await.unwrap();
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let bytes = res.into_body().collect().await.unwrap().to_bytes().to_vec();
    (status, headers, bytes)
}

async fn submit(env: &Env, keymap: &Value) -> String {
    let (status, _, body) = call(env, "POST", "/v1/compile", &keymap.to_string()).await;
    let doc: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(status, 200, "{doc}");
    assert_eq!(doc["enqueued"], true, "{doc}");
    doc["job_id"].as_str().unwrap().to_string()
}

async fn status_doc(env: &Env, id: &str) -> Value {
    let (status, _, body) = call(env, "GET", &format!("/v1/compile/{id}"), "").await;
    assert_eq!(status, 200);
    serde_json::from_slice(&body).unwrap()
}

fn good_keymap() -> Value {
    json!({"version": 1, "keyboard": "fakekb", "keymap": "mine", "layout": "LAYOUT_ortho_2x2",
           "layers": [["KC_A", "KC_B", "MO(1)", "ANY(LCTL(KC_C))"],
                      ["KC_1", "_______", "KC_TRNS", "KC_NO"]]})
}

/// A received message, as the event source mapping puts it in the event.
struct Received {
    id: String,
    receipt: String,
    body: String,
    receive_count: u32,
}

/// Receives until `want` messages arrived or `patience` ran out. `visibility` is the receive's
/// own visibility timeout (the batch stays in flight while the handler works).
async fn receive(
    env: &Env,
    url: &str,
    want: usize,
    visibility: i32,
    patience: Duration,
) -> Vec<Received> {
    let deadline = tokio::time::Instant::now() + patience;
    let mut got = Vec::new();
    while got.len() < want && tokio::time::Instant::now() < deadline {
        let out = env
            .clients
            .sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .visibility_timeout(visibility)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await
            .unwrap();
        for m in out.messages() {
            got.push(Received {
                id: m.message_id().unwrap().to_string(),
                receipt: m.receipt_handle().unwrap().to_string(),
                body: m.body().unwrap().to_string(),
                receive_count: m
                    .attributes()
                    .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                    .and_then(|v| v.parse().ok())
                    .unwrap(),
            });
        }
    }
    got
}

/// The event Lambda hands the function for `batch` from the queue `arn` (field names and
/// shape of the SQS event record).
fn sqs_event(batch: &[Received], arn: &str) -> SqsEvent {
    let records: Vec<Value> = batch
        .iter()
        .map(|m| {
            json!({
                "messageId": m.id,
                "receiptHandle": m.receipt,
                "body": m.body,
                "attributes": {"ApproximateReceiveCount": m.receive_count.to_string()},
                "messageAttributes": {},
                "md5OfBody": "",
                "eventSource": "aws:sqs",
                "eventSourceARN": arn,
                "awsRegion": "us-east-1"
            })
        })
        .collect();
    serde_json::from_value(json!({ "Records": records })).unwrap()
}

/// One invocation as the event source mapping runs it: the handler gets the batch; records it
/// reports failed stay on the queue (made visible at once here, where Lambda waits out the
/// visibility timeout), the others are deleted. Returns the failed message ids.
async fn invoke(env: &Env, url: &str, arn: &str, batch: &[Received]) -> Vec<String> {
    let resp = env.handler.handle(sqs_event(batch, arn)).await;
    let failed: Vec<String> = resp
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone())
        .collect();
    for m in batch {
        let sqs = &env.clients.sqs;
        if failed.contains(&m.id) {
            sqs.change_message_visibility()
                .queue_url(url)
                .receipt_handle(&m.receipt)
                .visibility_timeout(0)
                .send()
                .await
                .unwrap();
        } else {
            sqs.delete_message()
                .queue_url(url)
                .receipt_handle(&m.receipt)
                .send()
                .await
                .unwrap();
        }
    }
    failed
}

/// Follows a download route's redirect to S3: (status, headers, body) of the presigned GET.
async fn download(env: &Env, id: &str, route: &str) -> (u16, HashMap<String, String>, Vec<u8>) {
    let (status, headers, _) = call(env, "GET", &format!("/v1/compile/{id}/{route}"), "").await;
    assert!(
        (300..400).contains(&status),
        "{route}: expected a redirect to S3, got {status}"
    );
    let location = headers["location"].to_str().unwrap().to_string();
    let endpoint = std::env::var(config::AWS_ENDPOINT_URL).unwrap();
    assert!(
        location.starts_with(&endpoint) && location.contains("X-Amz-Signature="),
        "{location}"
    );
    tokio::task::spawn_blocking(move || curl(&location))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_goes_submit_queue_compile_status_download() {
    let Some(env) = setup("submit_compile_download").await else {
        return;
    };
    let id = submit(&env, &good_keymap()).await;

    // Queued: no result yet, its place in the queue.
    let doc = status_doc(&env, &id).await;
    assert_eq!(doc["status"], "queued", "{doc}");
    assert_eq!(doc["id"], id.as_str());
    assert_eq!(doc["result"], Value::Null, "{doc}");
    assert_eq!(doc["is_failed"], Value::Null, "{doc}");
    assert!(doc["jobs_ahead"].is_u64(), "{doc}");

    // The queue delivers exactly this job; the handler builds it and reports no failure.
    let batch = receive(&env, &env.names.queue_url, 1, 60, Duration::from_secs(10)).await;
    assert_eq!(batch.len(), 1);
    let message: QueueMessage = serde_json::from_str(&batch[0].body).unwrap();
    assert_eq!(message.job_id.to_string(), id);
    let failed = invoke(&env, &env.names.queue_url, &env.queue_arn, &batch).await;
    assert!(failed.is_empty(), "{failed:?}");
    assert!(
        receive(&env, &env.names.queue_url, 1, 0, Duration::from_secs(1))
            .await
            .is_empty()
    );

    // Finished: the contract's result with Oven's URLs.
    let doc = status_doc(&env, &id).await;
    assert_eq!(doc["status"], "finished", "{doc}");
    assert_eq!(doc["is_failed"], false, "{doc}");
    let r = &doc["result"];
    assert_eq!(r["returncode"], 0, "{doc}");
    assert_eq!(r["firmware_filename"], "fakekb_mine.hex");
    assert_eq!(r["keymap_archive"], "fakekb-mine.json");
    assert_eq!(r["source_archive"], "qmk_firmware-fakekb-mine.zip");
    assert_eq!(
        r["firmware_binary_url"],
        json!([format!("{PUBLIC_URL}/v1/compile/{id}/download")])
    );
    assert_eq!(
        r["firmware_source_url"],
        json!([format!("{PUBLIC_URL}/v1/compile/{id}/source")])
    );
    assert!(r["output"].as_str().unwrap().contains("fakekb:mine"), "{r}");

    // Downloads: presigned S3 URLs that moto serves with the browser's file name.
    let (status, headers, body) = download(&env, &id, "download").await;
    assert_eq!(status, 200);
    assert_eq!(
        headers["content-disposition"],
        "attachment; filename=\"fakekb_mine.hex\""
    );
    assert_eq!(r["firmware_size"], body.len() as u64, "{r}");
    let data = check_intel_hex(std::str::from_utf8(&body).unwrap());
    assert!(!data.is_empty());

    let (status, headers, body) = download(&env, &id, "keymap").await;
    assert_eq!(status, 200);
    assert_eq!(
        headers["content-disposition"],
        "attachment; filename=\"fakekb-mine.json\""
    );
    let keymap: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(keymap["layers"], good_keymap()["layers"]);

    let (status, headers, body) = download(&env, &id, "source").await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "application/zip");
    let zip = zip::ZipArchive::new(std::io::Cursor::new(body)).unwrap();
    assert!(zip.len() > 1, "source archive has {} entries", zip.len());

    // The same request again is served from the first result without a build.
    let again = submit(&env, &good_keymap()).await;
    let batch = receive(&env, &env.names.queue_url, 1, 60, Duration::from_secs(10)).await;
    assert!(invoke(&env, &env.names.queue_url, &env.queue_arn, &batch)
        .await
        .is_empty());
    let doc = status_doc(&env, &again).await;
    assert_eq!(doc["status"], "finished", "{doc}");
    assert_eq!(doc["result"]["cached"], true, "{doc}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_record_alone_comes_back() {
    let Some(env) = setup("partial_batch").await else {
        return;
    };
    let good = submit(&env, &good_keymap()).await;
    // A job whose item cannot be read (its state is a number): an infrastructure error, so the
    // handler must report that record, and only it, for redelivery.
    let broken = uuid::Uuid::new_v4().to_string();
    env.clients
        .dynamodb
        .put_item()
        .table_name(&env.names.job_table)
        .item("id", AttributeValue::S(broken.clone()))
        .item("state", AttributeValue::N("7".into()))
        .send()
        .await
        .unwrap();
    let storage = AwsStorage::new(&env.clients, &env.names);
    storage
        .queue
        .send(&QueueMessage {
            job_id: broken.parse().unwrap(),
        })
        .await
        .unwrap();

    let batch = receive(&env, &env.names.queue_url, 2, 60, Duration::from_secs(10)).await;
    assert_eq!(batch.len(), 2);
    let broken_message = batch
        .iter()
        .find(|m| m.body.contains(&broken))
        .unwrap()
        .id
        .clone();
    let failed = invoke(&env, &env.names.queue_url, &env.queue_arn, &batch).await;
    assert_eq!(failed, vec![broken_message.clone()]);

    let doc = status_doc(&env, &good).await;
    assert_eq!(doc["status"], "finished", "{doc}");
    assert_eq!(doc["result"]["returncode"], 0, "{doc}");

    let again = receive(&env, &env.names.queue_url, 2, 60, Duration::from_secs(3)).await;
    assert_eq!(again.len(), 1, "only the failed record is delivered again");
    assert_eq!(again[0].id, broken_message);
    assert_eq!(again[0].receive_count, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_lettered_job_turns_failed() {
    let Some(env) = setup("dead_letter").await else {
        return;
    };
    let id = submit(&env, &good_keymap()).await;
    // A compile function that dies on this message every time: received, never deleted.
    for attempt in 1..=MAX_RECEIVES {
        let got = receive(&env, &env.names.queue_url, 1, 0, Duration::from_secs(10)).await;
        assert_eq!(got.len(), 1, "receive {attempt}");
        assert_eq!(got[0].receive_count, attempt);
    }
    // The next receive finds it past maxReceiveCount: SQS moves it to the dead-letter queue.
    assert!(
        receive(&env, &env.names.queue_url, 1, 0, Duration::from_secs(2))
            .await
            .is_empty()
    );
    let dead = receive(&env, &env.dlq_url, 1, 60, Duration::from_secs(10)).await;
    assert_eq!(dead.len(), 1);
    assert!(dead[0].body.contains(&id));
    assert_eq!(status_doc(&env, &id).await["status"], "queued");

    let failed = invoke(&env, &env.dlq_url, &env.dlq_arn, &dead).await;
    assert!(failed.is_empty(), "{failed:?}");
    let doc = status_doc(&env, &id).await;
    assert_eq!(doc["status"], "failed", "{doc}");
    assert_eq!(doc["is_failed"], true, "{doc}");
    assert!(
        doc["result"]["output"]
            .as_str()
            .unwrap()
            .contains("could not be completed"),
        "{doc}"
    );
    assert!(receive(&env, &env.dlq_url, 1, 0, Duration::from_secs(1))
        .await
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_failures_say_what_to_check() {
    let Some(env) = setup("errors").await else {
        return;
    };
    let missing = AwsConfig {
        job_table: "no-such-table".into(),
        queue_url: format!(
            "{}/123456789012/no-such-queue",
            std::env::var(config::AWS_ENDPOINT_URL).unwrap()
        ),
        artifact_bucket: "no-such-bucket".into(),
        dlq_arn: None,
        keyboards_bucket: None,
    };
    let storage = AwsStorage::new(&env.clients, &missing);
    let id = oven::job::JobId::new();
    let one_sentence = |e: &dyn std::fmt::Display, wanted: &str| {
        let shown = e.to_string();
        assert!(shown.contains(wanted), "{shown}");
        assert!(
            !shown.contains("ServiceError") && !shown.contains("raw:") && !shown.contains('\n'),
            "{shown}"
        );
    };
    use oven::ports::{ArtifactStore, JobStore};
    let e = storage.jobs.get(id).await.unwrap_err();
    one_sentence(&e, "DynamoDB table `no-such-table` does not exist");
    one_sentence(&e, "OVEN_JOB_TABLE");
    let e = storage
        .queue
        .send(&QueueMessage { job_id: id })
        .await
        .unwrap_err();
    one_sentence(&e, "no-such-queue` does not exist");
    one_sentence(&e, "OVEN_QUEUE_URL");
    let key = oven::ports::ArtifactKey::for_job(id, "x.hex").unwrap();
    let meta = oven::ports::ArtifactMeta {
        content_type: "text/plain".into(),
        file_name: "x.hex".into(),
    };
    let body = oven::ports::ArtifactBody::Bytes(bytes::Bytes::from_static(b":00000001FF\n"));
    let e = storage.artifacts.put(&key, body, &meta).await.unwrap_err();
    one_sentence(&e, "S3 bucket `no-such-bucket` does not exist");
    // `oven serve --backend aws` asks before serving (HeadBucket answers a bare 404).
    let e = storage
        .artifacts
        .ping(config::ARTIFACT_BUCKET)
        .await
        .unwrap_err();
    one_sentence(&e, "S3 bucket `no-such-bucket` does not exist");
    one_sentence(&e, "`no-such-bucket` (OVEN_ARTIFACT_BUCKET)");
    // A dead-letter queue that OVEN_DLQ_ARN names is named by that variable, with the value
    // as given; a queue URL given instead of the ARN is read by its last segment.
    for given in [
        "arn:aws:sqs:us-east-1:123456789012:no-such-dlq".to_string(),
        format!(
            "{}/123456789012/no-such-dlq",
            std::env::var(config::AWS_ENDPOINT_URL).unwrap()
        ),
    ] {
        let names = AwsConfig {
            dlq_arn: Some(given.clone()),
            ..env.names.clone()
        };
        assert_eq!(oven::adapters::aws::runner::dlq_name(&names), "no-such-dlq");
        let e = oven::adapters::aws::runner::spawn_worker(
            &env.clients,
            &names,
            WorkerConfig::from_env(None),
        )
        .await
        .unwrap_err();
        one_sentence(&e, "SQS dead-letter queue `no-such-dlq` does not exist");
        one_sentence(&e, &format!("`{given}` (OVEN_DLQ_ARN)"));
    }

    // Nothing listening: the endpoint is what to check.
    let conf = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url("http://127.0.0.1:9")
        .retry_config(aws_config::retry::RetryConfig::disabled())
        .load()
        .await;
    let jobs = oven::adapters::aws::DynamoJobStore::new(
        aws_sdk_dynamodb::Client::new(&conf),
        &env.names.job_table,
    );
    let e = jobs.get(id).await.unwrap_err();
    one_sentence(&e, "could not reach DynamoDB at");
    one_sentence(&e, "check AWS_ENDPOINT_URL");
}

/// `oven provision` (and the tests' set-up) creates the resources as template.yaml declares
/// them: the artifact bucket's expiry and public access block, the queues' retention and long
/// polling; and a second run changes nothing and fails on nothing (found on moto: buckets had
/// no lifecycle rule, queues SQS's defaults).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provision_sets_what_the_template_declares() {
    let Some(env) = setup("provision").await else {
        return;
    };
    let s3 = &env.clients.s3;
    for (bucket, expire_days) in [
        (env.names.artifact_bucket.clone(), Some(2)),
        (env.names.keyboards_bucket.clone().unwrap(), None),
    ] {
        let life = s3
            .get_bucket_lifecycle_configuration()
            .bucket(&bucket)
            .send()
            .await
            .unwrap();
        let rule = &life.rules()[0];
        assert_eq!(
            rule.expiration().and_then(|e| e.days()),
            expire_days,
            "{bucket}"
        );
        assert_eq!(
            rule.abort_incomplete_multipart_upload()
                .and_then(|a| a.days_after_initiation()),
            Some(1)
        );
        let block = s3
            .get_public_access_block()
            .bucket(&bucket)
            .send()
            .await
            .unwrap();
        let c = block.public_access_block_configuration().unwrap();
        assert_eq!(
            (
                c.block_public_acls(),
                c.block_public_policy(),
                c.ignore_public_acls(),
                c.restrict_public_buckets()
            ),
            (Some(true), Some(true), Some(true), Some(true)),
            "{bucket}"
        );
    }
    let attrs = |url: String| {
        let sqs = env.clients.sqs.clone();
        async move {
            sqs.get_queue_attributes()
                .queue_url(url)
                .attribute_names(QueueAttributeName::All)
                .send()
                .await
                .unwrap()
                .attributes()
                .cloned()
                .unwrap_or_default()
        }
    };
    let q = attrs(env.names.queue_url.clone()).await;
    assert_eq!(q[&QueueAttributeName::MessageRetentionPeriod], "86400");
    assert_eq!(q[&QueueAttributeName::ReceiveMessageWaitTimeSeconds], "20");
    let d = attrs(env.dlq_url.clone()).await;
    assert_eq!(d[&QueueAttributeName::MessageRetentionPeriod], "1209600");
    // Again: nothing to create, nothing refused.
    let prefix = env.names.job_table.trim_end_matches("-jobs").to_string();
    let again = provision::ensure_all(&env.clients, &prefix, VISIBILITY, MAX_RECEIVES)
        .await
        .unwrap();
    assert_eq!(again.queue_url, env.names.queue_url);
}
