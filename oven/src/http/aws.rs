//! The router's state on AWS, built from the environment of a deployed function (the three
//! HTTP functions share it: each serves its routes from the same router).

use std::sync::Arc;

use super::{ApiConfig, App, ConfigError, S3KeyboardIndex};
use crate::adapters::aws::{AwsClients, AwsConfig, AwsStorage, MissingVar};

#[derive(Debug, thiserror::Error)]
pub enum AwsAppError {
    #[error(transparent)]
    Missing(#[from] MissingVar),
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// DynamoDB, SQS and S3 adapters, the keyboards bucket when `OVEN_KEYBOARDS_BUCKET` is set,
/// and the API settings, all from the environment.
pub async fn app_from_env() -> Result<App, AwsAppError> {
    let names = AwsConfig::from_env()?;
    let config = ApiConfig::from_env()?;
    let clients = AwsClients::from_env().await;
    let workers = std::env::var(crate::config::COMPILE_CONCURRENCY)
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        .unwrap_or(1);
    Ok(app(&clients, &names, config, workers))
}

/// The router's state over the AWS adapters of `names`; `workers` compiles run at once (the
/// queue-time estimate divides by it). `oven serve --backend aws` and the tests build it here.
pub fn app(clients: &AwsClients, names: &AwsConfig, config: ApiConfig, workers: u32) -> App {
    let storage = AwsStorage::new(clients, names);
    let mut app = App::new(
        Arc::new(storage.jobs),
        Arc::new(storage.queue),
        Arc::new(storage.artifacts),
        config,
    );
    app.queue_insight = Some(Arc::new(crate::worker::EtaInsight::new(
        app.queue.clone(),
        app.artifacts.clone(),
        workers.max(1),
    )));
    if let Some(bucket) = &names.keyboards_bucket {
        app.keyboards = Some(Arc::new(S3KeyboardIndex::new(
            clients.s3.clone(),
            bucket.clone(),
        )));
    }
    app
}
