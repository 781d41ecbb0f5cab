//! `metadata-gen publish`: uploads a built tree (placeholder until the publish helper lands).

use clap::Args;

/// Arguments of `metadata-gen publish`.
#[derive(Debug, Args)]
pub struct PublishArgs {
    /// The built tree to upload (the output folder of `build`).
    #[arg(long)]
    pub from: std::path::PathBuf,
    /// Target S3 bucket.
    #[arg(long)]
    pub bucket: String,
    /// Key prefix inside the bucket.
    #[arg(long, default_value = "")]
    pub prefix: String,
    /// Show what would be uploaded without uploading.
    #[arg(long)]
    pub dry_run: bool,
}

/// Runs `publish`.
pub async fn run(args: PublishArgs) -> anyhow::Result<()> {
    let _ = args;
    anyhow::bail!("publish: not built yet")
}
