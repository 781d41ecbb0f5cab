//! The storage conformance suite on the AWS adapters (DynamoDB, SQS, S3) through the real AWS
//! SDK, against moto server (`scripts/test.sh` starts it and sets `AWS_ENDPOINT_URL`). Every test
//! makes its own resources, named uniquely, so tests run in parallel on one moto.

use std::time::Duration;

use oven::adapters::aws::{provision, AwsClients, AwsStorage, SqsQueue};
use oven::adapters::conformance as c;
use oven::config;
use oven::ports::JobQueue;

const VISIBILITY: Duration = Duration::from_secs(1);
const MAX_RECEIVES: u32 = 2;

struct Env {
    clients: AwsClients,
    storage: AwsStorage,
    dlq_url: String,
}

/// Fresh resources on moto, or `None` (with a note) when no emulator is configured outside CI.
async fn setup(test: &str) -> Option<Env> {
    if std::env::var_os(config::AWS_ENDPOINT_URL).is_none() {
        if std::env::var_os(config::TEST_MOTO).is_some() {
            panic!(
                "{} is set but {} is not: start moto (scripts/test.sh does)",
                config::TEST_MOTO,
                config::AWS_ENDPOINT_URL
            );
        }
        eprintln!(
            "skipping {test}: no {} (run scripts/test.sh to test against moto)",
            config::AWS_ENDPOINT_URL
        );
        return None;
    }
    let clients = AwsClients::from_env().await;
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..12];
    let prefix = format!("oven-{}-{suffix}", test.replace('_', "-"));
    let prefix = &prefix[prefix.len().saturating_sub(40)..];
    let prefix = prefix.trim_start_matches('-');
    let conf = provision::ensure_all(&clients, prefix, VISIBILITY, MAX_RECEIVES)
        .await
        .unwrap();
    let dlq_url = provision::ensure_queue(
        &clients.sqs,
        &format!("{prefix}-compile"),
        VISIBILITY,
        MAX_RECEIVES,
    )
    .await
    .unwrap()
    .dlq_url;
    let storage = AwsStorage::new(&clients, &conf);
    Some(Env {
        clients,
        storage,
        dlq_url,
    })
}

macro_rules! on_moto {
    ($name:ident, |$env:ident| $body:expr) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let Some($env) = setup(stringify!($name)).await else {
                return;
            };
            $body.await;
        }
    };
}

on_moto!(create_get_duplicate, |e| c::create_get_duplicate(
    &e.storage.jobs
));
on_moto!(transitions, |e| c::transitions(&e.storage.jobs));
on_moto!(lease_expired_restart, |e| c::lease_expired_restart(
    &e.storage.jobs
));
on_moto!(lease_renewal, |e| c::lease_renewal(&e.storage.jobs));
on_moto!(requeue_lapsed, |e| c::requeue_lapsed(&e.storage.jobs));
on_moto!(queue_extend_visibility, |e| {
    c::queue_extend_visibility(&e.storage.queue, VISIBILITY)
});
on_moto!(expiry_hides_jobs, |e| c::expiry_hides_jobs(&e.storage.jobs));
// Sequential: moto does not serialise concurrent conditional updates of one item (see
// `Competition::Sequential`); the local store runs the concurrent variant.
on_moto!(competing_starts_have_one_winner, |e| {
    c::competing_starts_have_one_winner(&e.storage.jobs, c::Competition::Sequential)
});
on_moto!(queue_send_receive_ack, |e| c::queue_send_receive_ack(
    &e.storage.queue
));
on_moto!(queue_visibility_redelivery, |e| {
    c::queue_visibility_redelivery(&e.storage.queue, VISIBILITY)
});
on_moto!(queue_long_poll_wakes_up, |e| c::queue_long_poll_wakes_up(
    &e.storage.queue
));
on_moto!(artifacts_put_get_size, |e| c::artifacts_put_get_size(
    &e.storage.artifacts
));
on_moto!(artifacts_compose_with_upload_part_copy, |e| {
    c::artifacts_compose(&e.storage.artifacts, true)
});
on_moto!(artifacts_download_presigned, |e| c::artifacts_download(
    &e.storage.artifacts
));

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_dead_letter() {
    let Some(e) = setup("queue_dead_letter").await else {
        return;
    };
    let dlq = SqsQueue::new(e.clients.sqs.clone(), &e.dlq_url);
    c::queue_dead_letter(&e.storage.queue, VISIBILITY, MAX_RECEIVES, || async {
        let got = dlq.receive(10, Duration::from_secs(1)).await.unwrap();
        for d in &got {
            dlq.ack(&d.receipt).await.unwrap();
        }
        got.into_iter().map(|d| d.message.job_id).collect()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_and_missing_table() {
    let Some(e) = setup("ping_and_missing_table").await else {
        return;
    };
    use oven::ports::JobStore;
    e.storage.jobs.ping().await.unwrap();
    let missing =
        oven::adapters::aws::DynamoJobStore::new(e.clients.dynamodb.clone(), "no-such-table-oven");
    let err = missing.ping().await.unwrap_err();
    assert_eq!(err.backend, "dynamodb");
}

/// What S3 itself stores: the headers on the object, the TTL attribute on the item.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_carry_headers_and_items_carry_ttl() {
    let Some(e) = setup("objects_carry_headers").await else {
        return;
    };
    use oven::ports::{ArtifactBody, ArtifactKey, ArtifactMeta, ArtifactStore, JobStore};
    let key = ArtifactKey::new("keymaps/x.json").unwrap();
    let meta = ArtifactMeta {
        content_type: "application/json".into(),
        file_name: "dz60_default.json".into(),
    };
    e.storage
        .artifacts
        .put(
            &key,
            ArtifactBody::Bytes(bytes::Bytes::from_static(b"{}")),
            &meta,
        )
        .await
        .unwrap();
    let head = e
        .clients
        .s3
        .head_object()
        .bucket(e.storage.artifacts.bucket())
        .key(key.as_str())
        .send()
        .await
        .unwrap();
    assert_eq!(head.content_type(), Some("application/json"));
    assert_eq!(
        head.content_disposition(),
        Some("attachment; filename=\"dz60_default.json\"")
    );

    let job = c::new_job();
    e.storage.jobs.create(&job).await.unwrap();
    let item = e
        .clients
        .dynamodb
        .get_item()
        .table_name(e.storage.jobs.table())
        .key(
            "id",
            aws_sdk_dynamodb::types::AttributeValue::S(job.id.to_string()),
        )
        .send()
        .await
        .unwrap();
    let ttl = item.item().unwrap()["expires_at_s"].as_n().unwrap().clone();
    assert_eq!(ttl, job.expires_at.as_secs().to_string());
    let described = e
        .clients
        .dynamodb
        .describe_time_to_live()
        .table_name(e.storage.jobs.table())
        .send()
        .await
        .unwrap();
    let spec = described.time_to_live_description().unwrap();
    assert_eq!(spec.attribute_name(), Some("expires_at_s"));
}
