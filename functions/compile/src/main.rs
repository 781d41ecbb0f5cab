//! The compile function: an SQS-triggered container-image Lambda. The handler
//! ([`oven_compile::Handler`]) is built once per execution environment; the binary is the
//! image's bootstrap and speaks the Lambda Runtime API itself (`lambda_runtime`), so any base
//! image works.

use std::sync::Arc;

use aws_lambda_events::event::sqs::SqsEvent;
use lambda_runtime::{service_fn, Error, LambdaEvent};
use oven_compile::Handler;

#[tokio::main]
async fn main() -> Result<(), Error> {
    oven::telemetry::init();
    let handler = Arc::new(Handler::from_env().await?);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| {
        let handler = handler.clone();
        async move { Ok::<_, Error>(handler.handle(event.payload).await) }
    }))
    .await
}
