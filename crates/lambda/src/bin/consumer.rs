//! The `consumer` function ([`cashflow_lambda::consumer`]).

use aws_lambda_events::event::sqs::SqsEvent;
use lambda_runtime::{service_fn, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    let parts = &cashflow_lambda::env::parts().await?;
    lambda_runtime::run(service_fn(|event: LambdaEvent<SqsEvent>| async move {
        let response = cashflow_lambda::invocation::serve(
            "consumer",
            &event.context,
            cashflow_lambda::consumer::handle(parts, event.payload),
        )
        .await;
        Ok::<_, std::convert::Infallible>(response)
    }))
    .await
}
