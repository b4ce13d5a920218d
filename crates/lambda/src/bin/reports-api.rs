//! The `reports-api` function ([`cashflow_lambda::http`]).

use cashflow_lambda::http::{Api, HttpFunction};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    let function = HttpFunction::new(Api::Reports, cashflow_lambda::env::parts().await?);
    lambda_http::run(lambda_http::service_fn(|request| async {
        let response = function.handle(request).await;
        // The process may be frozen once the invocation answers: export its spans first.
        cashflow::telemetry::flush_async().await;
        response
    }))
    .await
}
