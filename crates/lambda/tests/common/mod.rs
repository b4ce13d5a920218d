//! What several handler test binaries share.

use cashflow::app::Parts;
use cashflow_auth::Scopes;
use cashflow_domain::{Currency, MerchantId, MerchantName, MerchantTimeZone};

/// A merchant created through the function's ledger, and a token of its with every scope.
pub async fn merchant_and_token(parts: &Parts) -> (MerchantId, String) {
    let merchant = parts
        .ledger()
        .await
        .unwrap()
        .create_merchant(MerchantName::parse("Padaria").unwrap(), Currency::BRL, MerchantTimeZone::DEFAULT)
        .await
        .unwrap()
        .id;
    let token = parts.auth().await.unwrap().0.mint("maria", merchant, Scopes::all()).unwrap().0;
    (merchant, token)
}
