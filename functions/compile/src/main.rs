//! The compile function: an SQS-triggered container-image Lambda, also invoked every minute
//! by the reaper's schedule. The handler ([`oven_compile::Handler`]) is built once per
//! execution environment; the binary is the image's bootstrap and speaks the Lambda Runtime
//! API itself (`lambda_runtime`), so any base image works.

use std::sync::Arc;

use lambda_runtime::{service_fn, Error, LambdaEvent};
use oven_compile::{invocation, Handler, Invocation};
use serde_json::Value;

fn main() -> Result<(), Error> {
    // Started by make as `qmk` during a build: the fork server's client, nothing else.
    oven::worker::qmkserver::main_or_client(run)
}

async fn run() -> Result<(), Error> {
    oven::telemetry::init();
    let handler = Arc::new(Handler::from_env(std::env::current_exe().ok()).await?);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        let handler = handler.clone();
        async move {
            match invocation(event.payload)? {
                Invocation::Schedule => {
                    handler.scheduled().await?;
                    Ok::<_, Error>(Value::Null)
                }
                Invocation::Sqs(sqs) => Ok(serde_json::to_value(handler.handle(sqs).await)?),
            }
        }
    }))
    .await
}
