//! Router tests over the real local adapters (SQLite and files in a temp dir): every route,
//! every job state, CORS, hostile input, and the OpenAPI document checked against responses.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use bytes::Bytes;
use http_body_util::BodyExt;
use oven::adapters::local::{LocalDbOptions, LocalStorage};
use oven::http::{router, ApiConfig, App, LocalKeyboardIndex, ROUTES};
use oven::job::{JobId, JobResult, JobState, Transition};
use oven::ports::{
    ArtifactBody, ArtifactKey, ArtifactMeta, ArtifactStore, BackendError, Delivery, JobQueue,
    JobStore, Part, QueueMessage,
};
use oven::time::Millis;
use serde_json::{json, Value};
use tower::ServiceExt;

const PUBLIC: &str = "https://oven.example/";

struct Env {
    _dir: tempfile::TempDir,
    storage: LocalStorage,
    router: Router,
}

fn env_with(tweak: impl FnOnce(&mut App, &std::path::Path)) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let storage = LocalStorage::open_with(
        dir.path(),
        LocalDbOptions {
            fsync_every_commit: false,
            ..Default::default()
        },
    )
    .unwrap();
    let mut app = App::local(&storage, ApiConfig::new(PUBLIC, "https://kb.example/"));
    tweak(&mut app, dir.path());
    Env {
        router: router(app),
        storage,
        _dir: dir,
    }
}

fn env() -> Env {
    env_with(|_, _| {})
}

struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Bytes,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap())
            .unwrap_or("")
    }
}

async fn send(router: &Router, req: Request<Body>) -> Answer {
    let res = router.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        headers,
        body,
    }
}

async fn get(router: &Router, path: &str) -> Answer {
    send(router, Request::get(path).body(Body::empty()).unwrap()).await
}

async fn post(router: &Router, path: &str, body: impl Into<Body>) -> Answer {
    send(
        router,
        Request::post(path)
            .header(header::CONTENT_TYPE, "application/json")
            .body(body.into())
            .unwrap(),
    )
    .await
}

fn keymap() -> Value {
    json!({
        "keyboard": "clueboard/66/rev3",
        "keymap": "my_awesome_keymap",
        "layout": "LAYOUT",
        "layers": [["KC_GRV", "MO(1)", "LT(2, KC_SPC)"], ["KC_TRNS", "KC_TRNS", "KC_TRNS"]],
        "version": 1,
        "notes": "",
        "documentation": "doc"
    })
}

async fn submit(e: &Env) -> JobId {
    let a = post(&e.router, "/v1/compile", keymap().to_string()).await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    let v = a.json();
    assert_eq!(v["enqueued"], true);
    v["job_id"].as_str().unwrap().parse().unwrap()
}

/// Validates `body` against the OpenAPI response schema of `method path` for `status`.
fn check_spec(method: &str, spec_path: &str, status: StatusCode, body: &Value) {
    let spec: Value = serde_json::from_str(oven::http::OPENAPI_JSON).unwrap();
    let op = &spec["paths"][spec_path][method.to_lowercase()];
    assert!(op.is_object(), "{method} {spec_path} missing from the spec");
    let resp = &op["responses"][status.as_str()];
    assert!(
        resp.is_object(),
        "{method} {spec_path} {status} missing from the spec"
    );
    let schema = &resp["content"]["application/json"]["schema"];
    assert!(
        schema.is_object(),
        "{method} {spec_path} {status}: no JSON schema"
    );
    let mut root = spec.clone();
    root.as_object_mut().unwrap().remove("paths");
    for (k, v) in schema.as_object().unwrap() {
        root[k] = v.clone();
    }
    let validator = jsonschema::validator_for(&root).unwrap();
    let errors: Vec<String> = validator.iter_errors(body).map(|e| e.to_string()).collect();
    assert!(
        errors.is_empty(),
        "{method} {spec_path} {status}: {errors:?}\n{body}"
    );
}

#[tokio::test]
async fn submit_stores_the_job_and_queues_it() {
    let e = env();
    let id = submit(&e).await;
    let job = e.storage.db.get(id).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Queued);
    assert_eq!(job.request["layers"][0][2], "LT(2,KC_SPC)");
    assert_eq!(job.request_hash.len(), 64);
    let got = e.storage.db.receive(10, Duration::ZERO).await.unwrap();
    assert_eq!(
        got.iter().map(|d| d.message.job_id).collect::<Vec<_>>(),
        vec![id]
    );
    // Any Content-Type is accepted, as upstream (force=True).
    let a = send(
        &e.router,
        Request::post("/v1/compile")
            .header(header::CONTENT_TYPE, "text/plain")
            .body(Body::from(keymap().to_string()))
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    check_spec("POST", "/v1/compile", a.status, &a.json());
}

/// A queue whose `send` fails, around the real one: the job must end `failed`, not `queued`.
struct BrokenQueue {
    inner: Arc<dyn JobQueue>,
    asked: Mutex<Vec<JobId>>,
}

#[async_trait]
impl JobQueue for BrokenQueue {
    async fn send(&self, m: &QueueMessage) -> Result<(), BackendError> {
        self.asked.lock().unwrap().push(m.job_id);
        Err(BackendError::new("test", "queue is down"))
    }
    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<Delivery>, BackendError> {
        self.inner.receive(max, wait).await
    }
    async fn ack(&self, r: &str) -> Result<(), BackendError> {
        self.inner.ack(r).await
    }
    async fn extend_visibility(&self, r: &str, t: Duration) -> Result<(), BackendError> {
        self.inner.extend_visibility(r, t).await
    }
    async fn waiting(&self) -> Result<u64, BackendError> {
        self.inner.waiting().await
    }
}

#[tokio::test]
async fn failed_send_fails_the_job_and_answers_503() {
    let broken = Arc::new(Mutex::new(None));
    let slot = broken.clone();
    let e = env_with(move |app, _| {
        let q = Arc::new(BrokenQueue {
            inner: app.queue.clone(),
            asked: Mutex::new(Vec::new()),
        });
        *slot.lock().unwrap() = Some(q.clone());
        app.queue = q;
        app.submitter = None; // the generic create-then-send path
    });
    let a = post(&e.router, "/v1/compile", keymap().to_string()).await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(a.json()["code"], 503);
    let q = broken.lock().unwrap().clone().unwrap();
    let id = q.asked.lock().unwrap()[0];
    let job = e.storage.db.get(id).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Failed);
    let s = get(&e.router, &format!("/v1/compile/{id}")).await.json();
    assert_eq!(s["status"], "failed");
    assert_eq!(s["is_failed"], true);
}

fn finished_result(id: JobId, ok: bool) -> JobResult {
    JobResult {
        id: id.to_string(),
        keyboard: "clueboard/66/rev3".into(),
        keymap: "my_awesome_keymap".into(),
        layout: "LAYOUT".into(),
        returncode: if ok { 0 } else { 2 },
        output: "Ψ Compiling keymap\u{1b}[0m".into(),
        firmware_filename: if ok {
            "clueboard_66_rev3_my_awesome_keymap.hex".into()
        } else {
            String::new()
        },
        keymap_archive: "clueboard-66-rev3-my_awesome_keymap.json".into(),
        source_archive: "qmk_firmware-clueboard-66-rev3-my_awesome_keymap.zip".into(),
        keymap_json: "{}".into(),
        command: vec!["qmk".into(), "compile".into()],
        compile_seconds: Some(12.5),
        build_date: Some("2026-07-19-20:55:20".into()),
        request_hash: Some("a".repeat(64)),
        firmware_sha256: ok.then(|| "b".repeat(64)),
        keymap_sha256: Some("c".repeat(64)),
        source_archive_sha256: Some("d".repeat(64)),
        flash: Some(oven::job::FlashBudget {
            used_bytes: if ok { 23722 } else { 30000 },
            max_bytes: 28672,
            percent: if ok { 82 } else { 104 },
            free_bytes: ok.then_some(4950),
            over_bytes: (!ok).then_some(1328),
        }),
        keymap_errors: (!ok).then(|| {
            vec![oven::job::KeymapError {
                layer: 1,
                key: 14,
                keycode: "LM_VALD".into(),
                message: "'LM_VALD' undeclared here (not in a function)".into(),
            }]
        }),
        ..Default::default()
    }
}

/// Stores `firmware` as the job's firmware file, named as `result` names it.
async fn store_firmware(e: &Env, id: JobId, result: &JobResult, firmware: &Bytes) {
    e.storage
        .artifacts
        .put(
            &ArtifactKey::for_job(id, &result.firmware_filename).unwrap(),
            ArtifactBody::Bytes(firmware.clone()),
            &ArtifactMeta {
                content_type: "text/plain".into(),
                file_name: result.firmware_filename.clone(),
            },
        )
        .await
        .unwrap();
}

async fn start(e: &Env, id: JobId) {
    let now = Millis::now();
    e.storage
        .db
        .transition(
            id,
            Transition::Start {
                at: now,
                lease_until: now.plus(Duration::from_secs(60)),
            },
        )
        .await
        .unwrap();
}

async fn finish(e: &Env, id: JobId, result: JobResult) {
    let finish = Transition::Finish {
        at: Millis::now(),
        attempt: 1,
        result,
    };
    e.storage.db.transition(id, finish).await.unwrap();
}

#[tokio::test]
async fn status_in_every_state() {
    let e = env();
    let id = submit(&e).await;
    let path = format!("/v1/compile/{id}");

    let a = get(&e.router, &path).await;
    let v = a.json();
    check_spec("GET", "/v1/compile/{id}", a.status, &v);
    assert_eq!(
        (
            v["status"].as_str(),
            v["is_failed"].is_null(),
            v["result"].is_null()
        ),
        (Some("queued"), true, true)
    );
    assert_eq!(v["id"], id.to_string());
    assert!(v["created_at"].as_str().unwrap().ends_with(" GMT"));

    start(&e, id).await;
    let v = get(&e.router, &path).await.json();
    assert_eq!(v["status"], "running");
    assert!(v["is_failed"].is_null());

    finish(&e, id, finished_result(id, true)).await;
    let a = get(&e.router, &path).await;
    let v = a.json();
    check_spec("GET", "/v1/compile/{id}", a.status, &v);
    assert_eq!(v["status"], "finished");
    assert_eq!(v["is_failed"], false);
    assert_eq!(
        v["result"]["firmware_binary_url"],
        json!([format!("https://oven.example/v1/compile/{id}/download")])
    );
    assert_eq!(
        v["result"]["firmware_source_url"],
        json!([format!("https://oven.example/v1/compile/{id}/source")])
    );
    assert_eq!(v["result"]["output"], "Ψ Compiling keymap\u{1b}[0m");
    assert!(v["result"].get("source_ip").is_none());
    assert_eq!(v["result"]["firmware_sha256"], "b".repeat(64));
    assert_eq!(v["result"]["flash"]["free_bytes"], 4950);
    assert_eq!(v["result"]["build_date"], "2026-07-19-20:55:20");

    // A failed compile: finished, is_failed, no binary URL, keymap/source URLs kept.
    let id2 = submit(&e).await;
    start(&e, id2).await;
    finish(&e, id2, finished_result(id2, false)).await;
    let a = get(&e.router, &format!("/v1/compile/{id2}")).await;
    let v = a.json();
    check_spec("GET", "/v1/compile/{id}", a.status, &v);
    assert_eq!(v["result"]["flash"]["over_bytes"], 1328);
    assert_eq!(v["result"]["keymap_errors"][0]["key"], 14);
    assert_eq!(
        (v["status"].as_str(), v["is_failed"].as_bool()),
        (Some("finished"), Some(true))
    );
    assert!(v["result"].get("firmware_binary_url").is_none());
    assert!(v["result"]["firmware_keymap_url"].is_array());

    // Failed by the infrastructure: the reason as result.output.
    let id3 = submit(&e).await;
    e.storage
        .db
        .transition(
            id3,
            Transition::Fail {
                at: Millis::now(),
                reason: "compile timed out".into(),
            },
        )
        .await
        .unwrap();
    let a = get(&e.router, &format!("/v1/compile/{id3}")).await;
    let v = a.json();
    check_spec("GET", "/v1/compile/{id}", a.status, &v);
    assert_eq!(v["status"], "failed");
    assert_eq!(v["is_failed"], true);
    assert_eq!(v["result"]["output"], "compile timed out");

    for bad in [
        format!("/v1/compile/{}", JobId::new()),
        "/v1/compile/not-a-uuid".to_string(),
        "/v1/compile/..%2F..%2Fetc".to_string(),
    ] {
        let a = get(&e.router, &bad).await;
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{bad}");
        assert_eq!(
            a.json(),
            json!({"code":404,"message":"Compile job not found"})
        );
        check_spec("GET", "/v1/compile/{id}", a.status, &a.json());
    }
}

#[tokio::test]
async fn downloads_are_saved_under_the_keymap_name_the_user_typed() {
    // The Configurator sends the typed name (lower-cased, spaces replaced): the stored file
    // keeps to ASCII, the browser is told the typed name (RFC 6266 filename*).
    let e = env();
    let id = submit(&e).await;
    start(&e, id).await;
    let mut result = finished_result(id, true);
    result.keyboard = "handwired/ferris".into();
    result.keyboard_folder = Some("ferris/0_1".into());
    result.keymap = "clavier_é.v2".into();
    result.firmware_filename = "ferris_0_1_clavier__.v2.hex".into();
    let firmware = Bytes::from_static(b":00000001FF\n");
    store_firmware(&e, id, &result, &firmware).await;
    finish(&e, id, result).await;
    let a = get(&e.router, &format!("/v1/compile/{id}/download")).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.body, firmware);
    assert_eq!(
        a.header("content-disposition"),
        "attachment; filename=\"ferris_0_1_clavier__.v2.hex\"; filename*=UTF-8''ferris_0_1_clavier_%C3%A9.v2.hex"
    );
    let s = get(&e.router, &format!("/v1/compile/{id}")).await.json();
    assert_eq!(s["result"]["keyboard"], "handwired/ferris");
    assert_eq!(s["result"]["keyboard_folder"], "ferris/0_1");
    check_spec("GET", "/v1/compile/{id}", StatusCode::OK, &s);
}

#[tokio::test]
async fn downloads_stream_with_their_file_names() {
    let e = env();
    let id = submit(&e).await;
    start(&e, id).await;
    let result = finished_result(id, true);
    let firmware = Bytes::from_static(b":10000000DEADBEEF\n:00000001FF\n");
    store_firmware(&e, id, &result, &firmware).await;
    finish(&e, id, result.clone()).await;
    for route in ["download", "hex"] {
        let a = get(&e.router, &format!("/v1/compile/{id}/{route}")).await;
        assert_eq!(a.status, StatusCode::OK);
        assert_eq!(a.body, firmware);
        assert_eq!(
            a.header("content-disposition"),
            "attachment; filename=\"clueboard_66_rev3_my_awesome_keymap.hex\""
        );
        assert!(a.header("content-type").starts_with("text/plain"));
        assert_eq!(a.header("access-control-allow-origin"), "*");
    }
    // Recorded in the result but never stored: 404 JSON, not 500.
    let a = get(&e.router, &format!("/v1/compile/{id}/source")).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    check_spec("GET", "/v1/compile/{id}/source", a.status, &a.json());
    // Queued job: nothing to download yet.
    let queued = submit(&e).await;
    let a = get(&e.router, &format!("/v1/compile/{queued}/keymap")).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert_eq!(a.json()["code"], 404);
    let a = get(&e.router, &format!("/v1/compile/{}/download", JobId::new())).await;
    assert_eq!(a.json()["message"], "Compile job not found");
}

#[tokio::test]
async fn cors_on_every_response_and_preflight() {
    let e = env();
    let a = send(
        &e.router,
        Request::builder()
            .method(Method::OPTIONS)
            .uri("/v1/compile")
            .header("Origin", "https://config.qmk.fm")
            .header("Access-Control-Request-Method", "POST")
            .header("Access-Control-Request-Headers", "x-b, content-type")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(
        a.header("access-control-allow-origin"),
        "https://config.qmk.fm"
    );
    assert_eq!(a.header("vary"), "Origin");
    assert_eq!(
        a.header("access-control-allow-methods"),
        "DELETE, GET, HEAD, OPTIONS, PATCH, POST, PUT"
    );
    assert_eq!(
        a.header("access-control-allow-headers"),
        "content-type, x-b"
    );
    assert!(a.headers.get("access-control-max-age").is_none());
    // `Allow` names what the route has, as Flask's automatic OPTIONS does.
    assert_eq!(a.header("allow"), "OPTIONS, POST");
    for (path, allow) in [
        ("/v1/compile/x/download", Some("GET, HEAD, OPTIONS")),
        (
            "/v1/keyboards/clueboard/66/rev3/readme",
            Some("GET, HEAD, OPTIONS"),
        ),
        ("/nope", None),
    ] {
        let a = send(
            &e.router,
            Request::builder()
                .method(Method::OPTIONS)
                .uri(path)
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(a.status, StatusCode::OK, "{path}");
        let got = a.headers.get("allow").map(|v| v.to_str().unwrap());
        assert_eq!(got, allow, "{path}");
    }

    for (method, path) in [
        ("GET", "/v1"),
        ("GET", "/nope"),
        ("DELETE", "/v1/compile"),
        ("GET", "/v1/keyboards/all"),
        ("GET", "/v1/compile/x"),
        ("POST", "/v1/compile"),
    ] {
        let a = send(
            &e.router,
            Request::builder()
                .method(method)
                .uri(path)
                .header("Origin", "http://localhost:8080")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(
            a.header("access-control-allow-origin"),
            "http://localhost:8080",
            "{method} {path}"
        );
        assert_eq!(a.header("vary"), "Origin");
        let a = send(
            &e.router,
            Request::builder()
                .method(method)
                .uri(path)
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(
            a.header("access-control-allow-origin"),
            "*",
            "{method} {path}"
        );
    }
}

#[tokio::test]
async fn routing_errors_are_json_and_slashes_merge() {
    let e = env();
    let a = get(&e.router, "/v1/").await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert_eq!(a.json()["code"], 404);
    let a = send(
        &e.router,
        Request::delete("/v1/compile").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(a.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(a.json()["code"], 405);
    // The Configurator's Docker proxy sends //v1/...
    let a = post(&e.router, "//v1/compile", keymap().to_string()).await;
    assert_eq!(a.status, StatusCode::OK);
    let id = a.json()["job_id"].as_str().unwrap().to_string();
    let a = get(&e.router, &format!("//v1//compile/{id}")).await;
    assert_eq!(a.json()["status"], "queued");
    // HEAD on GET routes.
    let a = send(&e.router, Request::head("/v1").body(Body::empty()).unwrap()).await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(a.body.is_empty());
}

#[tokio::test]
async fn hostile_and_broken_input_gets_json_4xx() {
    let e = env();
    let mut cases: Vec<(String, u16, &str)> = Vec::new();
    let with = |k: &str, v: Value| {
        let mut m = keymap();
        m[k] = v;
        m.to_string()
    };
    cases.push((
        with("keymap", json!("$(shell cat /etc/passwd)")),
        422,
        "Buzz off hacker.",
    ));
    cases.push((
        with("keyboard", json!("../../etc")),
        422,
        "Buzz off hacker.",
    ));
    cases.push((
        with("keyboard", json!("clueboard/../../x")),
        422,
        "Buzz off hacker.",
    ));
    cases.push((with("keymap", json!("a/b")), 422, "Buzz off hacker."));
    cases.push((
        with("layers", json!([["KC_A\"; #include \"/proc/self/environ"]])),
        400,
        "",
    ));
    cases.push((
        with("layers", json!([["KC_A;"]])),
        400,
        "layers[0][0]: \"KC_A;\" is not a keycode: unexpected ';' at 4",
    ));
    cases.push((
        with(
            "layers",
            json!([[format!("{}KC_A{}", "LT(1,".repeat(20), ")".repeat(20))]]),
        ),
        400,
        "",
    ));
    cases.push((with("branch", json!("evil")), 400, ""));
    cases.push((
        with("layers", json!(null)),
        400,
        "Invalid or missing keys: layers",
    ));
    cases.push(("".into(), 400, "Invalid JSON data!"));
    cases.push(("{}".into(), 400, "Invalid JSON data!"));
    cases.push(("null".into(), 400, "Invalid JSON data!"));
    cases.push(("[1,2]".into(), 400, ""));
    cases.push(("not json".into(), 400, ""));
    cases.push(("\u{0}\u{1}".into(), 400, ""));
    cases.push((
        json!({"keyboard":"a","keymap":"b"}).to_string(),
        400,
        "Invalid or missing keys: layout, layers",
    ));
    cases.push((format!("{}{}", "[".repeat(5000), "]".repeat(5000)), 400, ""));
    cases.push((
        format!("{{\"keyboard\":\"{}\"}}", "a".repeat(300 * 1024)),
        413,
        "",
    ));
    for (body, code, message) in cases {
        let short: String = body.chars().take(60).collect();
        let a = post(&e.router, "/v1/compile", body).await;
        assert_eq!(a.status.as_u16(), code, "{short}: {:?}", a.body);
        assert_eq!(a.header("content-type"), "application/json");
        let v = a.json();
        assert_eq!(v["code"], code);
        if !message.is_empty() {
            assert_eq!(v["message"], message, "{short}");
        }
        check_spec("POST", "/v1/compile", a.status, &v);
    }
    // Nothing of that was stored or queued.
    assert_eq!(e.storage.db.waiting().await.unwrap(), 0);
}

#[tokio::test]
async fn status_routes_and_health_do_not_enqueue() {
    let e = env();
    submit(&e).await;
    for path in ["/v1", "/v1/healthcheck"] {
        let a = get(&e.router, path).await;
        let v = a.json();
        check_spec("GET", path, a.status, &v);
        assert_eq!(v["status"], "running");
        assert_eq!(v["queue_length"], 1);
        assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(v.get("children").is_some(), path == "/v1");
    }
    assert_eq!(e.storage.db.waiting().await.unwrap(), 1);

    let a = get(&e.router, "/v1/skeletons/keymap").await;
    let v = a.json();
    check_spec("GET", "/v1/skeletons/keymap", a.status, &v);
    assert!(!v["documentation"].as_str().unwrap().starts_with('"'));
    assert_eq!(
        (v["version"].as_i64(), v["layers"].clone()),
        (Some(1), json!([]))
    );
    for path in ["/v1/skeletons", "/v1/converters", "/v1/openapi.json"] {
        let a = get(&e.router, path).await;
        check_spec("GET", path, a.status, &a.json());
    }
}

#[tokio::test]
async fn keyboards_list_redirects_and_local_tree() {
    let e = env_with(|app, dir| {
        let kb = dir.join("kb");
        std::fs::create_dir_all(kb.join("v1")).unwrap();
        std::fs::write(
            kb.join("v1/keyboard_list.json"),
            r#"{"last_updated":"x","keyboards":["clueboard/66/rev3","dz60"]}"#,
        )
        .unwrap();
        app.keyboards = Some(Arc::new(LocalKeyboardIndex { dir: kb.clone() }));
        app.config.keyboards_dir = Some(kb);
    });
    let a = get(&e.router, "/v1/keyboards").await;
    check_spec("GET", "/v1/keyboards", a.status, &a.json());
    assert_eq!(a.json(), json!(["clueboard/66/rev3", "dz60"]));
    for (path, to) in [
        ("/v1/keyboards/all", "https://kb.example/v1/keyboards.json"),
        ("/v1/usb", "https://kb.example/v1/usb.json"),
        (
            "/v1/keyboards/clueboard/66/rev3",
            "https://kb.example/v1/keyboards/clueboard/66/rev3/info.json",
        ),
        (
            "/v1/keyboards/clueboard/66/rev3/readme",
            "https://kb.example/v1/keyboards/clueboard/66/rev3/readme.md",
        ),
    ] {
        let a = get(&e.router, path).await;
        assert_eq!(a.status, StatusCode::FOUND, "{path}");
        assert_eq!(a.header("location"), to);
    }
    for bad in [
        "/v1/keyboards/..%2Fx",
        "/v1/keyboards/A$B",
        "/v1/keyboards/a//b/readme",
    ] {
        let a = get(&e.router, bad).await;
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{bad}");
        assert_eq!(a.json()["code"], 404);
    }
    let a = send(
        &e.router,
        Request::get("/keyboards/v1/keyboard_list.json")
            .header("Origin", "https://config.example")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(
        a.header("access-control-allow-origin"),
        "https://config.example"
    );
    let a = get(&e.router, "/keyboards/v1/nope.json").await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert_eq!(a.json()["code"], 404);
    let a = get(&e.router, "/keyboards/../oven.sqlite3").await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);

    // Without a tree: a JSON 404 that says where the list is, not a server error.
    let e = env();
    let a = get(&e.router, "/v1/keyboards").await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    check_spec("GET", "/v1/keyboards", a.status, &a.json());
    let message = a.json()["message"].as_str().unwrap().to_owned();
    assert!(
        message.contains("--keyboards-dir") && message.contains("/v1/keyboard_list.json"),
        "{message}"
    );
}

#[test]
fn openapi_paths_match_the_route_table() {
    let spec: Value = serde_json::from_str(oven::http::OPENAPI_JSON).unwrap();
    let mut in_spec: Vec<(String, String)> = Vec::new();
    for (path, ops) in spec["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys() {
            in_spec.push((method.to_uppercase(), path.clone()));
        }
    }
    let mut in_router: Vec<(String, String)> = ROUTES
        .iter()
        .map(|r| (r.method.to_string(), r.path.to_string()))
        .collect();
    in_spec.sort();
    in_router.sort();
    assert_eq!(in_spec, in_router);
}

#[tokio::test]
async fn every_route_answers_as_the_spec_says() {
    let e = env();
    let id = submit(&e).await;
    for r in ROUTES {
        let path = r
            .path
            .replace("{id}", &id.to_string())
            .replace("{keyboard}", "dz60");
        let a = send(
            &e.router,
            Request::builder()
                .method(r.method)
                .uri(&path)
                .body(Body::from(if r.method == "POST" {
                    keymap().to_string()
                } else {
                    String::new()
                }))
                .unwrap(),
        )
        .await;
        let spec: Value = serde_json::from_str(oven::http::OPENAPI_JSON).unwrap();
        let declared =
            &spec["paths"][r.path][r.method.to_lowercase()]["responses"][a.status.as_str()];
        assert!(
            declared.is_object(),
            "{} {} answered {} which the spec does not declare",
            r.method,
            r.path,
            a.status
        );
        if a.header("content-type") == "application/json" {
            check_spec(r.method, r.path, a.status, &a.json());
        }
    }
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
        /// Arbitrary bodies and paths: an answer below 500, JSON when it is an error.
        #[test]
        fn router_never_panics_or_500s(
            body in proptest::collection::vec(any::<u8>(), 0..300),
            path in "(/[a-zA-Z0-9%._~-]{0,12}){0,5}",
            method in prop::sample::select(vec!["GET", "POST", "PUT", "HEAD", "OPTIONS"]),
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let e = env();
            for p in [format!("/v1/compile{path}"), format!("/v1{path}"), path.clone()] {
                let Ok(req) = Request::builder().method(method).uri(if p.is_empty() { "/" } else { &p }).body(Body::from(body.clone())) else { continue };
                let a = rt.block_on(send(&e.router, req));
                prop_assert!(a.status.as_u16() < 500, "{} {} -> {}", method, p, a.status);
                if a.status.is_client_error() {
                    prop_assert_eq!(a.header("content-type"), "application/json");
                }
            }
            let a = rt.block_on(post(&e.router, "/v1/compile", body.clone()));
            prop_assert!(a.status.as_u16() < 500);
        }
    }
}

/// The spec check is not vacuous: shapes the router must never send are refused.
#[test]
fn spec_check_rejects_wrong_shapes() {
    for (path, body) in [
        ("/v1/compile/{id}", json!({"id": "x", "status": "queued"})),
        (
            "/v1/compile/{id}",
            json!({"created_at": "Sun, 03 Apr 2022 18:04:13 GMT", "enqueued_at": "Sun, 03 Apr 2022 18:04:13 GMT",
                   "id": "0f8fad5b-d9cb-469f-a165-70867728950e", "is_failed": null, "result": null, "status": "baking"}),
        ),
        (
            "/v1",
            json!({"queue_length": 0, "status": "running", "status_queue": "good", "status_store": "good", "version": "0.1\n"}),
        ),
    ] {
        let r = std::panic::catch_unwind(|| check_spec("GET", path, StatusCode::OK, &body));
        assert!(r.is_err(), "{path}: {body} passed");
    }
}

#[tokio::test]
async fn generic_store_then_enqueue_path() {
    let e = env_with(|app, _| app.submitter = None);
    let id = submit(&e).await;
    assert_eq!(
        e.storage.db.get(id).await.unwrap().unwrap().state,
        JobState::Queued
    );
    let got = e.storage.db.receive(10, Duration::ZERO).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].message.job_id, id);
}

#[tokio::test]
async fn queued_jobs_show_their_place_and_estimated_wait() {
    let e = env_with(|app, _| {
        app.queue_insight = Some(Arc::new(oven::worker::EtaInsight::new(
            app.queue.clone(),
            app.artifacts.clone(),
            1,
        )));
    });
    let first = submit(&e).await;
    let second = submit(&e).await;
    let v = get(&e.router, &format!("/v1/compile/{second}"))
        .await
        .json();
    assert_eq!(v["status"], "queued");
    // Two waiting, one worker, no compile recorded yet: the default 30 s a compile.
    assert_eq!(v["jobs_ahead"], 1, "{v}");
    assert_eq!(v["eta_seconds"].as_f64(), Some(30.0), "{v}");
    check_spec("get", "/v1/compile/{id}", StatusCode::OK, &v);
    start(&e, first).await;
    let v = get(&e.router, &format!("/v1/compile/{first}")).await.json();
    assert_eq!(v["status"], "running");
    assert!(
        v.get("jobs_ahead").is_none() && v.get("eta_seconds").is_none(),
        "{v}"
    );
}

#[tokio::test]
async fn a_composed_source_archive_streams_from_its_linked_pieces() {
    let e = env();
    let id = submit(&e).await;
    start(&e, id).await;
    let result = finished_result(id, true);
    // A base over the local store's linking threshold, as a tree archive would be.
    let base: Vec<u8> = (0..(3u32 << 20)).map(|i| (i % 251) as u8).collect();
    let base_key = ArtifactKey::new("sources/test-base.zip").unwrap();
    let zip_meta = ArtifactMeta {
        content_type: "application/zip".into(),
        file_name: result.source_archive.clone(),
    };
    let artifacts = &e.storage.artifacts;
    artifacts
        .put(
            &base_key,
            ArtifactBody::Bytes(Bytes::from(base.clone())),
            &zip_meta,
        )
        .await
        .unwrap();
    let parts = vec![
        Part::Copy {
            from: base_key.clone(),
            range: 0..(2 << 20),
        },
        Part::Bytes(Bytes::from_static(b"the job's own files")),
        Part::Copy {
            from: base_key,
            range: (2 << 20)..(3 << 20),
        },
    ];
    let key = ArtifactKey::for_job(id, &result.source_archive).unwrap();
    artifacts.compose(&key, parts, &zip_meta).await.unwrap();
    finish(&e, id, result.clone()).await;
    let a = get(&e.router, &format!("/v1/compile/{id}/source")).await;
    assert_eq!(a.status, StatusCode::OK);
    let mut want = base[..2 << 20].to_vec();
    want.extend_from_slice(b"the job's own files");
    want.extend_from_slice(&base[2 << 20..]);
    assert_eq!(a.body.len(), want.len());
    assert!(
        a.body == want,
        "streamed bytes differ from the composed parts"
    );
    assert_eq!(a.header("content-length"), want.len().to_string());
    assert_eq!(
        a.header("content-disposition"),
        format!("attachment; filename=\"{}\"", result.source_archive)
    );
}
