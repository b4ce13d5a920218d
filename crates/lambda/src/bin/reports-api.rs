//! The `reports-api` function ([`cashflow_lambda::http`]).

use lambda_http::RequestExt;

use cashflow_lambda::http::{Api, HttpFunction};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    let function = &HttpFunction::new(Api::Reports, cashflow_lambda::env::parts().await?);
    lambda_http::run(lambda_http::service_fn(|request: lambda_http::Request| async move {
        let context = request.lambda_context();
        cashflow_lambda::invocation::serve("reports-api", &context, function.handle(request)).await
    }))
    .await
}
