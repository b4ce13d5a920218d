//! The `outbox-sweep` function ([`cashflow_lambda::sweep`]).

use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use lambda_runtime::{service_fn, Diagnostic, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    let parts = &cashflow_lambda::env::parts().await?;
    lambda_runtime::run(service_fn(|event: LambdaEvent<EventBridgeEvent>| async move {
        let swept = cashflow_lambda::sweep::handle(parts, event.payload);
        let swept = cashflow_lambda::invocation::serve("outbox-sweep", &event.context, swept).await;
        swept.map_err(|e| Diagnostic { error_type: "sweep".into(), error_message: format!("{e:#}") })
    }))
    .await
}
