//! The `admin` function ([`cashflow_lambda::admin`]).

use lambda_runtime::{service_fn, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    let parts = &cashflow_lambda::env::parts().await?;
    lambda_runtime::run(service_fn(|event: LambdaEvent<serde_json::Value>| async move {
        cashflow_lambda::invocation::serve(
            "admin",
            &event.context,
            cashflow_lambda::admin::handle(parts, event.payload),
        )
        .await
    }))
    .await
}
