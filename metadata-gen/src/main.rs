//! `metadata-gen`: builds the static keyboards API tree from a qmk_firmware checkout (`build`,
//! the replacement for `qmk generate-api`) and uploads it (`publish`).

mod build;
mod c_led;
mod info;
mod json;
mod keycodes;
mod legacy;
mod pyfmt;
mod schema;
mod tree;

use clap::{Parser, Subcommand};
use metadata_gen::publish;
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(name = "metadata-gen", about = "Keyboards API tree generator")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// On an S3 failure, also print the SDK's whole error.
    #[arg(short, long, global = true)]
    verbose: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write the v1/ tree like `qmk generate-api`.
    Build(build::BuildArgs),
    /// Upload a built tree.
    Publish(publish::PublishArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Build(args) => {
            let started = std::time::Instant::now();
            // The build is CPU-bound rayon work; keep it off the async workers.
            match tokio::task::spawn_blocking(move || build::build(&args)).await {
                Ok(Ok(summary)) => {
                    eprintln!(
                        "built {} keyboards ({} failed), {} files in {:.2}s",
                        summary.keyboards,
                        summary.failures.len(),
                        summary.files,
                        started.elapsed().as_secs_f64()
                    );
                    Ok(())
                }
                Ok(Err(e)) => Err(e),
                Err(e) => Err(anyhow::anyhow!("build task failed: {e}")),
            }
        }
        Command::Publish(args) => publish::run(args).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            match e.downcast_ref::<publish::PublishError>() {
                Some(publish::PublishError::S3 { detail, .. }) if cli.verbose => {
                    eprintln!("detail: {detail}")
                }
                Some(publish::PublishError::S3 { .. }) => {
                    eprintln!("(run with -v for the SDK's whole error)")
                }
                _ => {}
            }
            ExitCode::FAILURE
        }
    }
}
