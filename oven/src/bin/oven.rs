//! `oven`: the whole service on one machine. `oven serve` runs the HTTP API over the local
//! adapters (SQLite job table and queue, artifacts as files) and, optionally, serves a built
//! keyboards tree, so the stock Configurator can point both of its URLs at it. `oven verify`
//! rebuilds a job's firmware here and checks it against the hash its Oven recorded. With
//! `--backend aws` the same API and worker run over DynamoDB, SQS and S3 named by the
//! functions' `OVEN_*` variables; `oven provision` creates those resources on an empty
//! account or emulator.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use oven::adapters::aws::{AwsClients, AwsConfig, AwsStorage};
use oven::adapters::local::{LocalDbOptions, LocalStorage};
use oven::http::{ApiConfig, App, LocalKeyboardIndex, DEFAULT_KEYBOARDS_URL};
use oven::ports::{JobQueue, JobStore};
use oven::worker::{EtaInsight, WorkerConfig};
use tokio::task::JoinSet;

#[derive(Parser)]
#[command(
    name = "oven",
    version,
    about = "Oven, a compile service for QMK firmware"
)]
struct Cli {
    /// Log format: text (coloured only on a terminal) or json (one object per line).
    #[arg(long, global = true, env = "OVEN_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
    /// Log the whole AWS SDK error behind each one-sentence AWS failure.
    #[arg(short, long, global = true)]
    verbose: bool,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the API and the compile worker on this machine.
    Serve(ServeArgs),
    /// Get qmk_firmware (pinned commit, submodules), the qmk CLI and check the toolchains, into
    /// the data directory; safe to run again.
    Setup {
        /// Where the tree and the venv go (the same as `serve --data-dir`).
        #[arg(long, default_value = ".oven")]
        data_dir: PathBuf,
        #[command(flatten)]
        options: oven::setup::SetupOptions,
    },
    /// Rebuild a finished job's firmware here and check it against the sha256 it recorded.
    Verify(VerifyArgs),
    /// Create the AWS resources the OVEN_* variables name (table, queue and dead-letter queue,
    /// buckets) on the configured endpoint, as template.yaml declares them.
    Provision,
}

/// Where `oven serve` keeps jobs, the queue and artifacts.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Backend {
    /// SQLite and files under --data-dir.
    Local,
    /// DynamoDB, SQS and S3 from the standard AWS environment and OVEN_JOB_TABLE,
    /// OVEN_QUEUE_URL, OVEN_ARTIFACT_BUCKET (OVEN_DLQ_ARN, OVEN_KEYBOARDS_BUCKET optional).
    Aws,
}

#[derive(clap::Args)]
struct VerifyArgs {
    /// The job: its id (on --server) or a URL of it (https://.../v1/compile/<id>).
    job: String,
    /// The Oven a bare job id refers to.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    server: String,
    /// The qmk_firmware tree to rebuild in (it must be at the job's firmware commit);
    /// default: QMK_HOME, `qmk config user.qmk_home`, ~/qmk_firmware.
    #[arg(long)]
    qmk_home: Option<PathBuf>,
    /// Keep build state here (faster repeated runs); default: a temporary directory.
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// The qmk CLI to build with; default: OVEN_QMK_BIN, else `qmk` on PATH.
    #[arg(long)]
    qmk: Option<PathBuf>,
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Where jobs, the queue and artifacts are kept.
    #[arg(long, value_enum, default_value = "local")]
    backend: Backend,
    /// Local data (jobs, queue, artifacts; the setup tree) and the worker's build state (both
    /// backends).
    #[arg(long, default_value = ".oven")]
    data_dir: PathBuf,
    /// Base URL browsers reach this server at (result URLs); default http://<listen>.
    #[arg(long)]
    public_url: Option<String>,
    /// Base URL of the keyboards site; default <public-url>/keyboards with --keyboards-dir,
    /// else https://keyboards.qmk.fm.
    #[arg(long)]
    keyboards_url: Option<String>,
    /// A built keyboards tree (metadata-gen output) to serve under /keyboards/.
    #[arg(long)]
    keyboards_dir: Option<PathBuf>,
    /// The qmk_firmware tree to compile in; default: QMK_HOME, the tree `oven setup` made in
    /// the data dir, `qmk config user.qmk_home`, ~/qmk_firmware.
    #[arg(long)]
    qmk_home: Option<PathBuf>,
    /// Serve the API only: queued jobs wait until `oven serve` runs again with its worker
    /// (load tests of the API use this, so compiles do not compete with them).
    #[arg(long)]
    no_worker: bool,
    /// Run `oven setup` first (each start verifies it; the first run takes minutes).
    #[arg(long)]
    setup: bool,
    #[command(flatten, next_help_heading = "Setup (with --setup)")]
    setup_options: oven::setup::SetupOptions,
    /// Benchmark baseline: submit with two durable writes (store, then enqueue) instead of one.
    #[arg(long, hide = true)]
    bench_two_writes: bool,
    /// Benchmark only: commit without fsync (survives a crash of the process, not of the
    /// machine), to show what the API costs apart from the disk.
    #[arg(long, hide = true)]
    bench_no_fsync: bool,
}

fn main() -> anyhow::Result<()> {
    // Started by make as `qmk` during a build: the fork server's client, nothing else.
    oven::worker::qmkserver::main_or_client(run)
}

async fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let format = match cli.log_format {
        LogFormat::Text => oven::telemetry::LogFormat::Text,
        LogFormat::Json => oven::telemetry::LogFormat::Json,
    };
    // Per-request lines of the API would cost more than the requests themselves; the AWS SDK's
    // whole error behind each one-sentence failure only with --verbose.
    let mut filter = "info,oven::http=warn".to_string();
    if !cli.verbose {
        filter = format!(
            "{filter},{}=off",
            oven::adapters::aws::errors::DETAIL_TARGET
        );
    }
    oven::telemetry::init_local(format, &filter);
    match cli.command {
        Command::Serve(args) => {
            let json = matches!(format, oven::telemetry::LogFormat::Json);
            serve(args, Say { json }).await
        }
        Command::Setup { data_dir, options } => {
            oven::setup::run_setup(&data_dir, &options, &mut std::io::stdout())?;
            Ok(())
        }
        Command::Verify(args) => verify(args).await,
        Command::Provision => provision().await,
    }
}

async fn verify(args: VerifyArgs) -> anyhow::Result<()> {
    let target = oven::verify::parse_target(&args.job, &args.server)?;
    let options = oven::verify::Options {
        qmk_home: args.qmk_home,
        work_dir: args.work_dir,
        qmk: args.qmk,
    };
    let report = oven::verify::verify(&target, &options).await?;
    println!("{report}");
    if !report.matches() {
        std::process::exit(1);
    }
    Ok(())
}

async fn provision() -> anyhow::Result<()> {
    let clients = oven::adapters::aws::AwsClients::from_env().await;
    let done = oven::adapters::aws::provision::from_env(&clients).await?;
    let n = &done.names;
    println!(
        "oven: table {}, queue {}, dead-letter queue {}, bucket {}{}",
        n.job_table,
        n.queue_url,
        done.dlq_url,
        n.artifact_bucket,
        n.keyboards_bucket
            .as_deref()
            .map(|b| format!(", bucket {b}"))
            .unwrap_or_default()
    );
    if std::env::var(oven::config::QUEUE_URL).ok().as_deref() != Some(n.queue_url.as_str()) {
        println!(
            "oven: SQS answers this queue URL: export {}={}",
            oven::config::QUEUE_URL,
            n.queue_url
        );
    }
    println!(
        "export {}={}",
        oven::config::DLQ_ARN,
        n.dlq_arn.as_deref().unwrap_or_default()
    );
    Ok(())
}

/// What the worker runs on, once the backend is open.
enum Runner {
    Local(LocalStorage),
    Aws(AwsClients, AwsConfig),
}

/// Where `oven serve` says what it is doing: plain `oven: ...` lines on stdout (scripts read the
/// address from "oven: API listening on http://..."), or with `--log-format json` log events,
/// so the output is JSON lines throughout.
#[derive(Clone, Copy)]
struct Say {
    json: bool,
}

impl Say {
    fn line(self, message: impl std::fmt::Display) {
        if self.json {
            tracing::info!(target: "oven::serve", "{message}");
        } else {
            println!("oven: {message}");
        }
    }
}

async fn serve(args: ServeArgs, say: Say) -> anyhow::Result<()> {
    let layout = oven::setup::Layout::new(&args.data_dir);
    if args.setup {
        oven::setup::run_setup(&args.data_dir, &args.setup_options, &mut std::io::stdout())?;
    }
    let public_url = args
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{}", args.listen));
    let keyboards_url = match (&args.keyboards_url, &args.keyboards_dir) {
        (Some(url), _) => url.clone(),
        (None, Some(_)) => format!("{}/keyboards", public_url.trim_end_matches('/')),
        (None, None) => DEFAULT_KEYBOARDS_URL.to_string(),
    };
    let mut config = ApiConfig::new(&public_url, &keyboards_url);
    config.keyboards_dir = args.keyboards_dir.clone();
    let setup_tree = layout.ready_tree();
    // Absolute: builds run in their job directory, and the tree's overlay links into it.
    let explicit = args
        .qmk_home
        .as_deref()
        .map(std::path::absolute)
        .transpose()?;
    if let Some(dir) = &explicit {
        // A tree asked for by name is used or refused, never silently replaced by none.
        anyhow::ensure!(
            dir.join("keyboards").is_dir(),
            "--qmk-home {}: not a qmk_firmware tree (it has no keyboards/ folder)",
            dir.display()
        );
    }
    let home = oven::worker::tree::find_qmk_home_in(explicit.as_deref(), setup_tree.as_deref());
    let mut worker = WorkerConfig::from_env(home.as_deref());
    // This binary answers as `qmk` (see `main`).
    worker.qmk_client = std::env::current_exe().ok();
    // The setup tree builds with the setup venv's qmk, unless OVEN_QMK_BIN names another.
    if worker.qmk_home.is_some() && worker.qmk_home == setup_tree {
        if std::env::var_os(oven::config::QMK_BIN).is_none() {
            worker.qmk = std::path::absolute(layout.qmk())?;
        }
        worker.path = layout.build_path(&worker.path);
    }
    if !args.no_worker {
        config.compiler = Some(oven::setup::CompilerHealth::probe(
            worker.qmk_home.as_deref(),
            &worker.qmk,
            &worker.path,
        ));
    }

    let (mut app, backend) = match args.backend {
        Backend::Local => {
            let options = LocalDbOptions {
                fsync_every_commit: !args.bench_no_fsync,
                ..LocalDbOptions::default()
            };
            let local = LocalStorage::open_with(&args.data_dir, options).with_context(|| {
                format!("opening the data directory {}", args.data_dir.display())
            })?;
            let mut app = App::local(&local, config);
            if args.bench_two_writes {
                app.submitter = None;
            }
            app.queue_insight = Some(Arc::new(EtaInsight::new(
                Arc::new(local.db.clone()),
                Arc::new(local.artifacts.clone()),
                1,
            )));
            (app, Runner::Local(local))
        }
        Backend::Aws => {
            let names = AwsConfig::from_env()?;
            let clients = AwsClients::from_env().await;
            // A wrong name or endpoint shows now, not at the first request.
            let probe = AwsStorage::new(&clients, &names);
            probe.jobs.ping().await?;
            probe.queue.waiting().await?;
            probe.artifacts.ping(oven::config::ARTIFACT_BUCKET).await?;
            if let Some(kb) = &names.keyboards_bucket {
                oven::adapters::aws::S3Artifacts::new(clients.s3.clone(), kb)
                    .ping(oven::config::KEYBOARDS_BUCKET)
                    .await?;
            }
            let app = oven::http::aws::app(&clients, &names, config, 1);
            say.line(format!(
                "AWS backend: table {}, queue {}, bucket {}",
                names.job_table, names.queue_url, names.artifact_bucket
            ));
            (app, Runner::Aws(clients, names))
        }
    };
    // Misfits the tree can see are answered at submit, not after the queue.
    app.submit_check = oven::worker::SubmitPrecheck::new(&worker)
        .map(|c| Arc::new(c) as Arc<dyn oven::http::SubmitCheck>);
    if let Some(dir) = &args.keyboards_dir {
        app.keyboards = Some(Arc::new(LocalKeyboardIndex { dir: dir.clone() }));
    }
    let router = oven::http::router(app);

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    say.line(format!(
        "API listening on http://{}",
        listener.local_addr()?
    ));
    say.line(format!(
        "public URL {public_url}, keyboards URL {keyboards_url}"
    ));
    say.line(format!("data in {}", args.data_dir.display()));

    // Everything `serve` runs, side by side; the first to stop ends the process.
    let mut tasks: JoinSet<anyhow::Result<()>> = JoinSet::new();
    tasks.spawn(async move { axum::serve(listener, router).await.context("HTTP server") });
    worker.public_url = public_url.trim_end_matches('/').to_string();
    // Under the data dir, so warm build state outlives a restart.
    worker.work_root = std::path::absolute(args.data_dir.join("work"))?;
    match &worker.qmk_home {
        Some(home) => say.line(format!("compiling in {}", home.display())),
        None => say.line(oven::worker::tree::NO_TREE_MESSAGE),
    }
    if args.no_worker {
        say.line("no compile worker (--no-worker): jobs stay queued");
    } else {
        let worker = match &backend {
            Runner::Local(local) => oven::worker::spawn_local(local, worker)?,
            Runner::Aws(clients, names) => {
                oven::adapters::aws::runner::spawn_worker(clients, names, worker).await?
            }
        };
        tasks.spawn(async move { worker.await.context("compile worker") });
    }

    tokio::select! {
        done = tasks.join_next() => match done {
            Some(Ok(res)) => res,
            Some(Err(e)) => Err(e.into()),
            None => Ok(()),
        },
        _ = tokio::signal::ctrl_c() => {
            say.line("stopping");
            Ok(())
        }
    }
}
