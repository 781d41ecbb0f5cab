//! The `download` Lambda (GET /v1/compile/{id}/download, /hex, /keymap, /source): Oven's one API router behind API Gateway (HTTP API),
//! over DynamoDB, SQS and S3 adapters configured from the environment.

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    oven::telemetry::init();
    let app = oven::http::aws::app_from_env().await?;
    lambda_http::run(oven::http::router(app)).await
}
