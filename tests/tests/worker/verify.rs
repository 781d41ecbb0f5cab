//! `oven verify` end to end: a job built by an Oven (the router on a TCP port and the local
//! worker on the fakeqmk fixture), fetched over HTTP and rebuilt in another work directory.

use std::time::Duration;

use oven::http::{router, ApiConfig, App};
use oven::job::JobId;
use oven::ports::ArtifactKey;
use oven::verify::{parse_target, verify, Options, VerifyError};

use super::{fixture, good, Env};

/// Serves `env`'s storage on 127.0.0.1 with a worker; returns the base URL.
async fn serve(env: &Env) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = App::local(
        &env.storage,
        ApiConfig::new(&base, "https://keyboards.example"),
    );
    tokio::spawn(async move { axum::serve(listener, router(app)).await });
    let mut cfg = env.cfg();
    cfg.public_url = base.clone();
    oven::worker::spawn_local(&env.storage, cfg).expect("the worker takes the data directory");
    base
}

async fn finished(env: &Env, id: JobId) {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while !env.job(id).await.state.is_terminal() {
        assert!(std::time::Instant::now() < deadline, "job did not finish");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn options(tree: std::path::PathBuf) -> Options {
    Options {
        qmk_home: Some(tree),
        work_dir: None,
        qmk: Some(fixture().join("bin/qmk")),
    }
}

#[tokio::test]
async fn verify_rebuilds_a_served_job_and_compares_hashes() {
    let env = Env::new();
    let base = serve(&env).await;
    let id = env.submit(good()).await;
    finished(&env, id).await;
    let r = env.result(id).await;
    assert_eq!(r.returncode, 0, "{}", r.output);

    // By URL of a download, and by id on the server.
    let target = parse_target(&format!("{base}/v1/compile/{id}/download"), "unused").unwrap();
    assert_eq!(target, parse_target(&id.to_string(), &base).unwrap());
    let tree = fixture().join("qmk_firmware");
    let report = verify(&target, &options(tree.clone())).await.unwrap();
    assert!(report.matches(), "{report}");
    assert_eq!(Some(&report.recorded_sha256), r.firmware_sha256.as_ref());
    assert!(report.to_string().contains("MATCH"), "{report}");

    // The same commit id with another date: a different tree under the same name, which
    // verification must catch.
    let other = env.dir.path().join("other-tree");
    super::repro::copy_tree(&tree, &other);
    let version = std::fs::read_to_string(tree.join("version.txt")).unwrap();
    let commit = version.lines().next().unwrap();
    std::fs::write(other.join("version.txt"), format!("{commit}\n1600000000\n")).unwrap();
    let report = verify(&target, &options(other.clone())).await.unwrap();
    assert!(!report.matches(), "{report}");
    assert!(report.to_string().contains("MISMATCH"));
    if let Some(p) = &report.rebuilt_path {
        let _ = std::fs::remove_file(p);
    }

    // Another commit: refused before building.
    std::fs::write(
        other.join("version.txt"),
        "fakeqmk0000000000000000000000000000000009\n1700000000\n",
    )
    .unwrap();
    let err = verify(&target, &options(other)).await.unwrap_err();
    assert!(matches!(err, VerifyError::Commit { .. }), "{err}");
    assert!(err.to_string().contains("checkout fakeqmk"), "{err}");

    // A served firmware that is not the recorded one.
    let fw = env
        .storage
        .artifacts
        .path(&ArtifactKey::for_job(id, &r.firmware_filename).unwrap());
    std::fs::write(&fw, b":00000001FF\n").unwrap();
    let err = verify(&target, &options(tree.clone())).await.unwrap_err();
    assert!(
        matches!(
            err,
            VerifyError::Served {
                what: "firmware",
                ..
            }
        ),
        "{err}"
    );

    // No such job.
    let missing = JobId::new();
    let err = verify(
        &parse_target(&missing.to_string(), &base).unwrap(),
        &options(tree),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, VerifyError::Http { .. }), "{err}");
}
