//! The merchant: the tenant whose books we keep. Its currency and time zone are fixed at
//! creation because every recorded amount and business date depends on them.

use chrono::{DateTime, Utc};

use crate::{Currency, MerchantId, MerchantTimeZone};

/// A merchant's display name: 1 to 120 characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MerchantName(String);

impl MerchantName {
    /// Parses a name.
    pub fn parse(name: &str) -> Result<Self, String> {
        let trimmed = name.trim();
        if trimmed.is_empty() || trimmed.chars().count() > 120 || trimmed.chars().any(char::is_control) {
            return Err("merchant name must be 1 to 120 characters without control characters".into());
        }
        Ok(Self(trimmed.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A merchant and the settings its books depend on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merchant {
    pub id: MerchantId,
    pub name: MerchantName,
    /// Every entry of this merchant is in this currency.
    pub currency: Currency,
    /// Decides the business date of each entry.
    pub time_zone: MerchantTimeZone,
    pub created_at: DateTime<Utc>,
}
