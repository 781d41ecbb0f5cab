//! `metadata-gen publish` against moto server through the real AWS SDK: what a publish writes,
//! that it writes only what changed, and that readers never see a half-published tree.
//!
//! Needs `AWS_ENDPOINT_URL` (scripts/test.sh starts moto and sets it). Without it the tests
//! skip with a note, unless `OVEN_TEST_MOTO` is set: then they fail.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use aws_sdk_s3::config::interceptors::BeforeSerializationInterceptorContextRef;
use aws_sdk_s3::config::{ConfigBag, Intercept};
use aws_sdk_s3::operation::copy_object::CopyObjectInput;
use aws_sdk_s3::operation::delete_objects::DeleteObjectsInput;
use aws_sdk_s3::operation::put_object::PutObjectInput;
use aws_sdk_s3::Client;
use metadata_gen::publish::manifest::Pointer;
use metadata_gen::publish::{self, store, Options, PublishError, Target};

/// Set by scripts/test.sh: moto is expected, so its absence is a failure.
const REQUIRE_MOTO: &str = "OVEN_TEST_MOTO";
const ENDPOINT: &str = "AWS_ENDPOINT_URL";

/// The S3 client the CLI would build, or `None` (skip) when no emulator is configured.
async fn client() -> Option<Client> {
    if std::env::var_os(ENDPOINT).is_none() {
        assert!(
            std::env::var_os(REQUIRE_MOTO).is_none(),
            "{REQUIRE_MOTO} is set but {ENDPOINT} is not: start moto (scripts/test.sh does)"
        );
        eprintln!("note: {ENDPOINT} unset, skipping a test that needs moto server");
        return None;
    }
    Some(store::client_from_env().await)
}

async fn new_bucket(client: &Client, name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let bucket = format!("pub-{name}-{nanos}").replace('_', "-");
    client.create_bucket().bucket(&bucket).send().await.unwrap();
    bucket
}

/// Runs just before the pointer write is sent.
type Hook = Arc<dyn Fn() + Send + Sync>;

/// Records the writes a client makes; optionally fails every write to a release after
/// `fail_after`, or runs `before_pointer` just before the pointer write.
#[derive(Default, Clone)]
struct Writes {
    log: Arc<Mutex<Vec<(&'static str, String)>>>,
    fail_after: Option<usize>,
    before_pointer: Option<Hook>,
    /// A release upload whose key ends with this is sent to another key (a lost write).
    misdirect: Option<&'static str>,
}

impl std::fmt::Debug for Writes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writes").field("log", &self.log).finish()
    }
}

impl Writes {
    fn failing_after(n: usize) -> Self {
        Writes {
            fail_after: Some(n),
            ..Writes::default()
        }
    }

    fn of(&self, op: &str) -> Vec<String> {
        let log = self.log.lock().unwrap();
        log.iter()
            .filter(|(o, _)| *o == op)
            .map(|(_, k)| k.clone())
            .collect()
    }

    fn release_writes(&self) -> usize {
        let log = self.log.lock().unwrap();
        log.iter()
            .filter(|(o, k)| *o != "DeleteObjects" && k.contains("/releases/"))
            .count()
    }

    fn client(&self, base: &Client) -> Client {
        Client::from_conf(base.config().to_builder().interceptor(self.clone()).build())
    }
}

impl Intercept for Writes {
    fn name(&self) -> &'static str {
        "test write recorder"
    }

    fn modify_before_serialization(
        &self,
        context: &mut aws_sdk_s3::config::interceptors::BeforeSerializationInterceptorContextMut<
            '_,
        >,
        _runtime_components: &aws_sdk_s3::config::RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), aws_sdk_s3::error::BoxError> {
        if let (Some(suffix), Some(input)) = (
            self.misdirect,
            context.input_mut().downcast_mut::<PutObjectInput>(),
        ) {
            if let Some(key) = input.key.as_mut().filter(|k| k.ends_with(suffix)) {
                key.push_str(".lost");
            }
        }
        Ok(())
    }

    fn read_before_execution(
        &self,
        context: &BeforeSerializationInterceptorContextRef<'_>,
        _cfg: &mut ConfigBag,
    ) -> Result<(), aws_sdk_s3::error::BoxError> {
        let input = context.input();
        let (op, key) = if let Some(i) = input.downcast_ref::<PutObjectInput>() {
            ("PutObject", i.key().unwrap_or_default().to_string())
        } else if let Some(i) = input.downcast_ref::<CopyObjectInput>() {
            ("CopyObject", i.key().unwrap_or_default().to_string())
        } else if let Some(i) = input.downcast_ref::<DeleteObjectsInput>() {
            let n = i.delete().map_or(0, |d| d.objects().len());
            ("DeleteObjects", n.to_string())
        } else {
            return Ok(());
        };
        if let Some(limit) = self.fail_after {
            if op != "DeleteObjects" && key.contains("/releases/") && self.release_writes() >= limit
            {
                return Err("injected failure: connection lost".into());
            }
        }
        if op == "PutObject" && key.ends_with("current.json") {
            if let Some(hook) = &self.before_pointer {
                hook();
            }
        }
        self.log.lock().unwrap().push((op, key));
        Ok(())
    }
}

/// A small built tree: keyboard list, two keyboards, a schema, the top-level readme.
fn write_tree(dir: &Path, files: &BTreeMap<&str, String>) {
    if dir.exists() {
        std::fs::remove_dir_all(dir).unwrap();
    }
    for (key, body) in files {
        let path = dir.join(key);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, body).unwrap();
    }
}

fn sample() -> BTreeMap<&'static str, String> {
    BTreeMap::from([
        (
            "v1/keyboard_list.json",
            r#"{"keyboards":["alpha","beta"]}"#.to_string(),
        ),
        (
            "v1/keyboards/alpha/info.json",
            r#"{"keyboards":{"alpha":{}}}"#.to_string(),
        ),
        ("v1/keyboards/alpha/readme.md", "# alpha\n".to_string()),
        (
            "v1/keyboards/beta/info.json",
            r#"{"keyboards":{"beta":{}}}"#.to_string(),
        ),
        ("v1/keyboards/beta/readme.md", "# beta\n".to_string()),
        (
            "v1/schemas/keyboard.jsonschema",
            r#"{"type":"object"}"#.to_string(),
        ),
        ("readme.md", "# API\n".to_string()),
    ])
}

fn opts() -> Options {
    Options {
        concurrency: 4,
        ..Options::default()
    }
}

async fn get(client: &Client, bucket: &str, key: &str) -> Option<String> {
    match client.get_object().bucket(bucket).key(key).send().await {
        Ok(out) => Some(
            String::from_utf8(out.body.collect().await.unwrap().into_bytes().to_vec()).unwrap(),
        ),
        Err(e) if e.as_service_error().is_some_and(|e| e.is_no_such_key()) => None,
        Err(e) => panic!("GetObject {key}: {e:?}"),
    }
}

async fn pointer(client: &Client, target: &Target) -> Option<Pointer> {
    get(client, &target.bucket, &target.pointer_key())
        .await
        .map(|s| serde_json::from_str(&s).unwrap())
}

/// Every object under `prefix/`, keyed relative to it.
async fn objects_under(client: &Client, bucket: &str, prefix: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for obj in store::list(client, bucket, &format!("{prefix}/"))
        .await
        .unwrap()
    {
        let rel = obj.key[prefix.len() + 1..].to_string();
        out.insert(rel, get(client, bucket, &obj.key).await.unwrap());
    }
    out
}

fn expected(files: &BTreeMap<&str, String>) -> BTreeMap<String, String> {
    files
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

/// What a reader resolving through the pointer sees (the API's `GET /v1/keyboards`).
async fn live_tree(client: &Client, target: &Target) -> BTreeMap<String, String> {
    let p = pointer(client, target).await.expect("a live pointer");
    objects_under(client, &target.bucket, &p.prefix).await
}

async fn release_ids(client: &Client, target: &Target) -> Vec<String> {
    let mut ids = store::list_dirs(
        client,
        &target.bucket,
        &format!("{}/", target.key("releases")),
    )
    .await
    .unwrap();
    ids.sort();
    ids
}

#[tokio::test]
async fn first_publish_writes_a_complete_release_pointer_and_mirror() {
    let Some(base) = client().await else { return };
    let target = Target::new(&new_bucket(&base, "first").await, "site/kb").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let files = sample();
    write_tree(dir.path(), &files);
    let writes = Writes::default();

    let report = publish::publish(&writes.client(&base), &target, dir.path(), &opts())
        .await
        .unwrap();

    assert_eq!(report.diff.added.len(), files.len());
    assert!(report.switched);
    assert_eq!((report.uploaded, report.copied), (files.len(), 0));
    let p = pointer(&base, &target).await.unwrap();
    assert_eq!(
        p.prefix,
        format!("site/kb/releases/{}", report.release.clone().unwrap())
    );
    assert_eq!(p.previous, None);
    assert_eq!(live_tree(&base, &target).await, expected(&files));
    // Mirror at the stable keys browsers use.
    assert_eq!(
        objects_under(&base, &target.bucket, "site/kb/v1").await,
        objects_under(&base, &target.bucket, &format!("{}/v1", p.prefix)).await
    );
    assert_eq!(
        get(&base, &target.bucket, "site/kb/readme.md")
            .await
            .as_deref(),
        Some("# API\n")
    );
    // One upload per file plus the manifest and the pointer; the mirror is copied server-side.
    let puts = writes.of("PutObject");
    assert_eq!(puts.len(), files.len() + 2, "{puts:?}");
    assert_eq!(puts.last().unwrap(), "site/kb/current.json");

    let head = base
        .head_object()
        .bucket(&target.bucket)
        .key(format!("{}/v1/keyboards/alpha/readme.md", p.prefix))
        .send()
        .await
        .unwrap();
    assert_eq!(head.content_type(), Some("text/markdown; charset=utf-8"));
    assert_eq!(head.cache_control(), Some(publish::RELEASE_CACHE_CONTROL));
    let head = base
        .head_object()
        .bucket(&target.bucket)
        .key("site/kb/v1/keyboard_list.json")
        .send()
        .await
        .unwrap();
    assert_eq!(head.content_type(), Some("application/json"));
    assert_eq!(head.cache_control(), Some(publish::MIRROR_CACHE_CONTROL));
    let head = base
        .head_object()
        .bucket(&target.bucket)
        .key("site/kb/current.json")
        .send()
        .await
        .unwrap();
    assert_eq!(head.cache_control(), Some(publish::POINTER_CACHE_CONTROL));
}

#[tokio::test]
async fn second_publish_uploads_only_the_changed_file() {
    let Some(base) = client().await else { return };
    let target = Target::new(&new_bucket(&base, "second").await, "").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut files = sample();
    write_tree(dir.path(), &files);
    let first = publish::publish(&base, &target, dir.path(), &opts())
        .await
        .unwrap();
    let old = pointer(&base, &target).await.unwrap();

    files.insert(
        "v1/keyboards/beta/info.json",
        r#"{"keyboards":{"beta":{"changed":true}}}"#.to_string(),
    );
    write_tree(dir.path(), &files);
    let writes = Writes::default();
    let report = publish::publish(&writes.client(&base), &target, dir.path(), &opts())
        .await
        .unwrap();

    assert_eq!(report.diff.changed, ["v1/keyboards/beta/info.json"]);
    assert!(report.diff.added.is_empty() && report.diff.removed.is_empty());
    let release_puts: Vec<String> = writes
        .of("PutObject")
        .into_iter()
        .filter(|k| k.starts_with("releases/"))
        .collect();
    let new = pointer(&base, &target).await.unwrap();
    assert_eq!(
        release_puts,
        [format!("{}/v1/keyboards/beta/info.json", new.prefix)]
    );
    assert_eq!(
        writes
            .of("CopyObject")
            .iter()
            .filter(|k| k.starts_with("releases/"))
            .count(),
        files.len() - 1
    );
    // The mirror copies exactly the changed key.
    assert_eq!(
        writes
            .of("CopyObject")
            .iter()
            .filter(|k| !k.starts_with("releases/"))
            .collect::<Vec<_>>(),
        ["v1/keyboards/beta/info.json"]
    );
    assert_ne!(first.release, report.release);
    assert_eq!(new.previous.as_deref(), Some(old.prefix.as_str()));
    assert_eq!(live_tree(&base, &target).await, expected(&files));
    assert_eq!(
        get(&base, &target.bucket, "v1/keyboards/beta/info.json").await,
        Some(files["v1/keyboards/beta/info.json"].clone())
    );
    // The previous release stays whole for readers that resolved the old pointer.
    assert_eq!(
        objects_under(&base, &target.bucket, &old.prefix).await["v1/keyboards/beta/info.json"],
        r#"{"keyboards":{"beta":{}}}"#
    );
}

#[tokio::test]
async fn removed_files_disappear_from_the_new_release_and_the_mirror() {
    let Some(base) = client().await else { return };
    let target = Target::new(&new_bucket(&base, "removed").await, "kb").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut files = sample();
    write_tree(dir.path(), &files);
    publish::publish(&base, &target, dir.path(), &opts())
        .await
        .unwrap();
    let old = pointer(&base, &target).await.unwrap();

    files.remove("v1/keyboards/beta/info.json");
    files.remove("v1/keyboards/beta/readme.md");
    files.insert(
        "v1/keyboard_list.json",
        r#"{"keyboards":["alpha"]}"#.to_string(),
    );
    write_tree(dir.path(), &files);
    let report = publish::publish(&base, &target, dir.path(), &opts())
        .await
        .unwrap();

    assert_eq!(
        report.diff.removed,
        ["v1/keyboards/beta/info.json", "v1/keyboards/beta/readme.md"]
    );
    assert_eq!(report.mirror_deleted, 2);
    assert_eq!(live_tree(&base, &target).await, expected(&files));
    let mirror = objects_under(&base, &target.bucket, "kb/v1").await;
    assert!(!mirror.contains_key("keyboards/beta/info.json"));
    assert_eq!(mirror["keyboard_list.json"], r#"{"keyboards":["alpha"]}"#);
    assert!(objects_under(&base, &target.bucket, &old.prefix)
        .await
        .contains_key("v1/keyboards/beta/info.json"));
}

#[tokio::test]
async fn unchanged_republish_writes_nothing() {
    let Some(base) = client().await else { return };
    let target = Target::new(&new_bucket(&base, "same").await, "").unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_tree(dir.path(), &sample());
    let first = publish::publish(&base, &target, dir.path(), &opts())
        .await
        .unwrap();
    let before = pointer(&base, &target).await.unwrap();

    let writes = Writes::default();
    let report = publish::publish(&writes.client(&base), &target, dir.path(), &opts())
        .await
        .unwrap();

    assert!(report.diff.is_empty());
    assert!(!report.switched);
    assert_eq!(report.release, first.release);
    assert_eq!(report.mirror_updated, 0);
    assert_eq!(writes.log.lock().unwrap().len(), 0, "{:?}", writes.log);
    assert_eq!(pointer(&base, &target).await.unwrap(), before);
}

#[tokio::test]
async fn dry_run_writes_nothing() {
    let Some(base) = client().await else { return };
    let target = Target::new(&new_bucket(&base, "dry").await, "kb").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut files = sample();
    write_tree(dir.path(), &files);
    let dry = Options {
        dry_run: true,
        ..opts()
    };

    let writes = Writes::default();
    let report = publish::publish(&writes.client(&base), &target, dir.path(), &dry)
        .await
        .unwrap();
    assert_eq!(report.diff.added.len(), files.len());
    assert!(writes.log.lock().unwrap().is_empty());
    assert!(store::list(&base, &target.bucket, "")
        .await
        .unwrap()
        .is_empty());

    publish::publish(&base, &target, dir.path(), &opts())
        .await
        .unwrap();
    let before = store::list(&base, &target.bucket, "").await.unwrap();
    files.insert("v1/keyboards/alpha/readme.md", "# alpha 2\n".to_string());
    files.insert("v1/keyboards/gamma/info.json", "{}".to_string());
    files.remove("v1/keyboards/beta/readme.md");
    write_tree(dir.path(), &files);
    let report = publish::publish(&writes.client(&base), &target, dir.path(), &dry)
        .await
        .unwrap();
    assert_eq!(report.diff.added, ["v1/keyboards/gamma/info.json"]);
    assert_eq!(report.diff.changed, ["v1/keyboards/alpha/readme.md"]);
    assert_eq!(report.diff.removed, ["v1/keyboards/beta/readme.md"]);
    assert!(writes.log.lock().unwrap().is_empty());
    assert_eq!(
        store::list(&base, &target.bucket, "").await.unwrap(),
        before
    );
    let text = report.to_string();
    assert!(text.contains("+ v1/keyboards/gamma/info.json"), "{text}");
    assert!(text.contains("1 added, 1 changed, 1 removed"), "{text}");
}

#[tokio::test]
async fn interrupted_publish_leaves_readers_on_the_old_tree() {
    let Some(base) = client().await else { return };
    let target = Target::new(&new_bucket(&base, "interrupted").await, "kb").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let old_files = sample();
    write_tree(dir.path(), &old_files);
    publish::publish(&base, &target, dir.path(), &opts())
        .await
        .unwrap();
    let old_pointer = pointer(&base, &target).await.unwrap();
    let old_mirror = objects_under(&base, &target.bucket, "kb/v1").await;

    let mut files = old_files.clone();
    for key in [
        "v1/keyboards/alpha/info.json",
        "v1/keyboards/beta/info.json",
    ] {
        files.insert(key, r#"{"v":2}"#.to_string());
    }
    files.insert(
        "v1/keyboard_list.json",
        r#"{"keyboards":["beta","alpha"]}"#.to_string(),
    );
    write_tree(dir.path(), &files);
    let writes = Writes::failing_after(3);
    // One request at a time, so the three writes before the failure all complete.
    let sequential = Options {
        concurrency: 1,
        ..opts()
    };
    let err = publish::publish(&writes.client(&base), &target, dir.path(), &sequential)
        .await
        .unwrap_err();

    assert!(matches!(err, PublishError::S3 { .. }), "{err}");
    assert!(err.to_string().contains("injected failure"), "{err}");
    assert_eq!(writes.release_writes(), 3, "the failure came mid-release");
    assert!(writes
        .of("PutObject")
        .iter()
        .all(|k| !k.ends_with("current.json")));
    assert_eq!(pointer(&base, &target).await.unwrap(), old_pointer);
    assert_eq!(live_tree(&base, &target).await, expected(&old_files));
    assert_eq!(
        objects_under(&base, &target.bucket, "kb/v1").await,
        old_mirror
    );

    // The next publish succeeds and removes the orphaned partial release. Release ids have
    // one-second resolution: wait so the retry gets an id of its own.
    let orphan = writes.of("PutObject")[0]
        .split('/')
        .nth(2)
        .unwrap()
        .to_string();
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let report = publish::publish(&base, &target, dir.path(), &opts())
        .await
        .unwrap();
    assert_eq!(report.releases_deleted, [orphan]);
    assert_eq!(live_tree(&base, &target).await, expected(&files));
    let mut want = vec![old_pointer.release.clone(), report.release.clone().unwrap()];
    want.sort();
    assert_eq!(release_ids(&base, &target).await, want);
}

#[tokio::test]
async fn a_publish_that_raced_another_does_not_switch() {
    let Some(base) = client().await else { return };
    let target = Target::new(&new_bucket(&base, "race").await, "kb").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut files = sample();
    write_tree(dir.path(), &files);
    publish::publish(&base, &target, dir.path(), &opts())
        .await
        .unwrap();

    // Another publisher switches the pointer after this one read it and before it writes it.
    let rival = r#"{"prefix":"kb/releases/rival","release":"rival","manifest":"kb/manifests/rival.json","published_at":"x"}"#;
    let (other, bucket, key) = (base.clone(), target.bucket.clone(), target.pointer_key());
    let writes = Writes {
        before_pointer: Some(Arc::new(move || {
            let (other, bucket, key) = (other.clone(), bucket.clone(), key.clone());
            std::thread::spawn(move || {
                tokio::runtime::Runtime::new().unwrap().block_on(async {
                    other
                        .put_object()
                        .bucket(bucket)
                        .key(key)
                        .body(rival.as_bytes().to_vec().into())
                        .send()
                        .await
                        .unwrap();
                })
            })
            .join()
            .unwrap();
        })),
        ..Writes::default()
    };
    files.insert("v1/keyboard_list.json", r#"{"keyboards":[]}"#.to_string());
    write_tree(dir.path(), &files);
    let err = publish::publish(&writes.client(&base), &target, dir.path(), &opts())
        .await
        .unwrap_err();

    assert!(
        matches!(err, PublishError::Raced(ref k) if k == "kb/current.json"),
        "{err}"
    );
    assert_eq!(
        get(&base, &target.bucket, "kb/current.json")
            .await
            .as_deref(),
        Some(rival)
    );
}

#[tokio::test]
async fn a_lost_write_stops_the_switch() {
    let Some(base) = client().await else { return };
    let target = Target::new(&new_bucket(&base, "lost").await, "").unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_tree(dir.path(), &sample());
    let writes = Writes {
        misdirect: Some("alpha/readme.md"),
        ..Writes::default()
    };
    let err = publish::publish(&writes.client(&base), &target, dir.path(), &opts())
        .await
        .unwrap_err();
    assert!(
        matches!(err, PublishError::Incomplete { missing: 1, .. }),
        "{err}"
    );
    assert_eq!(pointer(&base, &target).await, None);
}

#[tokio::test]
async fn old_releases_are_collected_keeping_the_live_and_previous_one() {
    let Some(base) = client().await else { return };
    let target = Target::new(&new_bucket(&base, "gc").await, "").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut files = sample();
    let mut pointers = Vec::new();
    for round in 0..3 {
        files.insert("v1/keyboard_list.json", format!(r#"{{"round":{round}}}"#));
        write_tree(dir.path(), &files);
        publish::publish(&base, &target, dir.path(), &opts())
            .await
            .unwrap();
        pointers.push(pointer(&base, &target).await.unwrap());
    }
    let ids = release_ids(&base, &target).await;
    let mut want = vec![pointers[1].release.clone(), pointers[2].release.clone()];
    want.sort();
    assert_eq!(ids, want);
    assert!(objects_under(&base, &target.bucket, &pointers[0].prefix)
        .await
        .is_empty());
    assert_eq!(
        get(&base, &target.bucket, &pointers[0].manifest).await,
        None
    );
    assert!(get(&base, &target.bucket, &pointers[1].manifest)
        .await
        .is_some());
}

#[tokio::test]
async fn mirror_is_repaired_when_it_drifted() {
    let Some(base) = client().await else { return };
    let target = Target::new(&new_bucket(&base, "repair").await, "").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let files = sample();
    write_tree(dir.path(), &files);
    publish::publish(&base, &target, dir.path(), &opts())
        .await
        .unwrap();
    // As if a previous run died during the mirror step: one key stale, one missing, one extra.
    base.put_object()
        .bucket(&target.bucket)
        .key("v1/keyboard_list.json")
        .body(b"stale".to_vec().into())
        .send()
        .await
        .unwrap();
    base.delete_object()
        .bucket(&target.bucket)
        .key("v1/keyboards/alpha/readme.md")
        .send()
        .await
        .unwrap();
    base.put_object()
        .bucket(&target.bucket)
        .key("v1/keyboards/zombie/info.json")
        .body(b"{}".to_vec().into())
        .send()
        .await
        .unwrap();

    let report = publish::publish(&base, &target, dir.path(), &opts())
        .await
        .unwrap();
    assert!(!report.switched);
    assert_eq!((report.mirror_updated, report.mirror_deleted), (2, 1));
    let want: BTreeMap<String, String> = expected(&files)
        .into_iter()
        .filter_map(|(k, v)| k.strip_prefix("v1/").map(|k| (k.to_string(), v)))
        .collect();
    assert_eq!(objects_under(&base, &target.bucket, "v1").await, want);
}

#[test]
fn cli_rejects_a_directory_that_is_not_a_built_tree() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_metadata-gen"))
        .args(["publish", "--bucket", "b", "--dry-run", "--from"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not a built tree"), "{stderr}");
}

#[tokio::test]
async fn cli_dry_run_prints_the_changes() {
    let Some(base) = client().await else { return };
    let bucket = new_bucket(&base, "cli").await;
    let dir = tempfile::tempdir().unwrap();
    write_tree(dir.path(), &sample());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_metadata-gen"))
        .args(["publish", "--bucket", &bucket, "--dry-run", "--from"])
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("+ v1/keyboard_list.json"), "{stdout}");
    assert!(stdout.contains("7 added, 0 changed, 0 removed"), "{stdout}");
    assert!(store::list(&base, &bucket, "").await.unwrap().is_empty());
}

#[tokio::test]
async fn a_missing_bucket_is_named_in_one_sentence() {
    let Some(base) = client().await else { return };
    let bucket = format!(
        "pub-missing-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let target = Target::new(&bucket, "").unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_tree(dir.path(), &sample());
    let err = publish::publish(&base, &target, dir.path(), &opts())
        .await
        .unwrap_err();
    let PublishError::S3 { detail, .. } = &err else {
        panic!("{err:?}")
    };
    let shown = err.to_string();
    assert!(
        shown.contains(&format!(
            "S3 bucket `{bucket}` does not exist at the endpoint"
        )),
        "{shown}"
    );
    assert!(shown.contains("check the bucket name"), "{shown}");
    // The SDK's structure stays out of the sentence, in the detail (`-v`).
    assert!(
        !shown.contains("ServiceError") && !shown.contains('\n'),
        "{shown}"
    );
    assert!(detail.contains("NoSuchBucket"), "{detail}");
}
