//! The OTLP/HTTP exporter: spans POSTed as protobuf (`application/x-protobuf`) to the
//! collector, configured by the standard variables:
//! - `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (used as is) or `OTEL_EXPORTER_OTLP_ENDPOINT` (with
//!   `/v1/traces` added), `http://localhost:4318/v1/traces` when neither is set;
//! - `OTEL_EXPORTER_OTLP_(TRACES_)HEADERS` (`key=value,…`, values percent-decoded), for a
//!   collector that wants a key;
//! - `OTEL_EXPORTER_OTLP_(TRACES_)TIMEOUT` in milliseconds (10 s);
//! - `OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL`: only `http/protobuf` is spoken, and
//!   `OTEL_EXPORTER_OTLP_(TRACES_)COMPRESSION` only `none`: anything else is refused at start
//!   rather than sent in a form the collector does not expect;
//! - the resource: `service.name` from `OTEL_SERVICE_NAME` (else `OTEL_RESOURCE_ATTRIBUTES`'s,
//!   else `cashflow`), the other `OTEL_RESOURCE_ATTRIBUTES`, and `telemetry.sdk.*`.
//!
//! The client is reqwest's blocking one, built on the exporting thread ([`super::batch`]): it
//! runs its own runtime, so it neither needs nor disturbs ours.

use std::time::Duration;

use super::batch::SpanExporter;
use super::span::SpanRecord;

/// Where and how spans are sent.
#[derive(Debug, Clone, PartialEq)]
pub struct OtlpSettings {
    pub endpoint: String,
    pub headers: Vec<(String, String)>,
    pub timeout: Duration,
    /// `service.name` and the other resource attributes.
    pub resource: Vec<(String, String)>,
}

impl OtlpSettings {
    /// From the `OTEL_*` variables.
    pub fn from_env() -> Result<Self, String> {
        Self::from_vars(|var| std::env::var(var).ok())
    }

    /// From the variables `var` reads (the traces-specific one of each pair first).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let get = |name: &str| var(name).filter(|v| !v.is_empty());
        let either = |specific: &str, general: &str| {
            get(specific).map(|v| (specific.to_owned(), v)).or_else(|| get(general).map(|v| (general.to_owned(), v)))
        };
        let endpoint = match (get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"), get("OTEL_EXPORTER_OTLP_ENDPOINT")) {
            (Some(traces), _) => traces,
            (None, Some(base)) => format!("{}/v1/traces", base.trim_end_matches('/')),
            (None, None) => "http://localhost:4318/v1/traces".to_owned(),
        };
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            return Err(format!("OTLP endpoint {endpoint}: expected an http:// or https:// URL"));
        }
        if let Some((name, protocol)) = either("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL") {
            if protocol != "http/protobuf" {
                return Err(format!("{name}={protocol}: only http/protobuf is supported"));
            }
        }
        if let Some((name, compression)) =
            either("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "OTEL_EXPORTER_OTLP_COMPRESSION")
        {
            if compression != "none" {
                return Err(format!("{name}={compression}: only none is supported"));
            }
        }
        let timeout = match either("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT") {
            None => Duration::from_secs(10),
            Some((name, ms)) => {
                Duration::from_millis(ms.parse().map_err(|_| format!("{name}={ms}: expected milliseconds"))?)
            }
        };
        let headers = match either("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "OTEL_EXPORTER_OTLP_HEADERS") {
            None => Vec::new(),
            // The values may be secrets: the error names the variable, not its content.
            Some((name, list)) => pairs(&list).ok_or_else(|| format!("{name}: expected key=value pairs"))?,
        };
        let mut resource = match get("OTEL_RESOURCE_ATTRIBUTES") {
            None => Vec::new(),
            Some(list) => pairs(&list).ok_or("OTEL_RESOURCE_ATTRIBUTES: expected key=value pairs")?,
        };
        let service = get("OTEL_SERVICE_NAME")
            .or_else(|| resource.iter().find(|(k, _)| k == "service.name").map(|(_, v)| v.clone()))
            .unwrap_or_else(|| "cashflow".to_owned());
        resource.retain(|(k, _)| k != "service.name" && !k.starts_with("telemetry.sdk."));
        resource.insert(0, ("service.name".to_owned(), service));
        resource.extend([
            ("telemetry.sdk.name".to_owned(), "cashflow".to_owned()),
            ("telemetry.sdk.language".to_owned(), "rust".to_owned()),
            ("telemetry.sdk.version".to_owned(), env!("CARGO_PKG_VERSION").to_owned()),
        ]);
        Ok(Self { endpoint, headers, timeout, resource })
    }
}

/// `key=value,key=value` with percent-encoded values (W3C Baggage's form, which the
/// OpenTelemetry variables use); `None` if a member has no `=` or an empty key.
fn pairs(list: &str) -> Option<Vec<(String, String)>> {
    list.split(',')
        .map(str::trim)
        .filter(|member| !member.is_empty())
        .map(|member| {
            let (key, value) = member.split_once('=')?;
            let key = key.trim();
            let value = percent_encoding::percent_decode_str(value.trim()).decode_utf8().ok()?;
            (!key.is_empty()).then(|| (key.to_owned(), value.into_owned()))
        })
        .collect()
}

/// Sends spans to an OTLP/HTTP collector.
pub struct OtlpExporter {
    settings: OtlpSettings,
    /// The encoded `Resource`, the same in every request.
    resource: Vec<u8>,
    /// Built on the exporting thread when it starts (reqwest's blocking client must not be
    /// built or dropped on an async runtime).
    client: Option<reqwest::blocking::Client>,
}

impl OtlpExporter {
    pub fn new(settings: OtlpSettings) -> Self {
        let resource = super::protobuf::resource(&settings.resource);
        Self { settings, resource, client: None }
    }

    fn client(&mut self) -> Result<&reqwest::blocking::Client, String> {
        if self.client.is_none() {
            let mut headers = reqwest::header::HeaderMap::new();
            for (name, value) in &self.settings.headers {
                let name = reqwest::header::HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| format!("OTLP header {name}: not a header name"))?;
                let mut value = reqwest::header::HeaderValue::from_str(value)
                    .map_err(|_| format!("OTLP header {name}: value not allowed in a header"))?;
                value.set_sensitive(true);
                headers.insert(name, value);
            }
            let client = reqwest::blocking::Client::builder()
                .timeout(self.settings.timeout)
                .default_headers(headers)
                .build()
                .map_err(|e| e.to_string())?;
            self.client = Some(client);
        }
        self.client.as_ref().ok_or_else(|| "no client".to_owned())
    }
}

impl SpanExporter for OtlpExporter {
    fn start(&mut self) -> Result<(), String> {
        self.client().map(|_| ())
    }

    fn takes_written(&self) -> bool {
        true
    }

    fn export(&mut self, spans: &[SpanRecord]) -> Result<(), String> {
        let mut written = Vec::new();
        for span in spans {
            super::protobuf::span_field(&mut written, span);
        }
        self.export_written(&written)
    }

    fn export_written(&mut self, spans: &[u8]) -> Result<(), String> {
        let body = super::protobuf::around(&self.resource, "cashflow", spans);
        let endpoint = self.settings.endpoint.clone();
        let response = self
            .client()?
            .post(&endpoint)
            .header(reqwest::header::CONTENT_TYPE, "application/x-protobuf")
            .body(body)
            .send()
            .map_err(|e| format!("{endpoint}: {e}"))?;
        let status = response.status();
        // The body (a partial success, or the error's details) is read so the connection can
        // be used again.
        let _ = response.bytes();
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("{endpoint} answered {status}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Result<OtlpSettings, String> {
        OtlpSettings::from_vars(|name| pairs.iter().find(|(n, _)| *n == name).map(|(_, v)| v.to_string()))
    }

    #[test]
    fn the_endpoint_is_the_traces_one_as_is_or_the_base_one_with_its_path() {
        assert_eq!(settings(&[]).unwrap().endpoint, "http://localhost:4318/v1/traces");
        assert_eq!(
            settings(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/")]).unwrap().endpoint,
            "http://collector:4318/v1/traces"
        );
        let both = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "https://traces.example/otlp"),
        ];
        assert_eq!(settings(&both).unwrap().endpoint, "https://traces.example/otlp");
        assert!(settings(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318")]).is_err());
    }

    #[test]
    fn headers_timeout_and_resource_come_from_their_variables() {
        let s = settings(&[
            ("OTEL_EXPORTER_OTLP_HEADERS", "api-key=s3cr%3Dt, x-tenant = shop"),
            ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "2500"),
            ("OTEL_RESOURCE_ATTRIBUTES", "service.name=ignored,deployment.environment=prod"),
            ("OTEL_SERVICE_NAME", "ledger"),
        ])
        .unwrap();
        assert_eq!(
            s.headers,
            [("api-key".to_owned(), "s3cr=t".to_owned()), ("x-tenant".to_owned(), "shop".to_owned())]
        );
        assert_eq!(s.timeout, Duration::from_millis(2500));
        assert_eq!(s.resource[0], ("service.name".to_owned(), "ledger".to_owned()));
        assert!(s.resource.contains(&("deployment.environment".to_owned(), "prod".to_owned())));
        assert!(!s.resource.iter().any(|(_, v)| v == "ignored"));
        let named = settings(&[("OTEL_RESOURCE_ATTRIBUTES", "service.name=consolidator")]).unwrap();
        assert_eq!(named.resource[0].1, "consolidator");
    }

    #[test]
    fn what_is_not_spoken_is_refused_and_a_bad_header_list_does_not_show_its_values() {
        assert!(settings(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]).is_err());
        assert!(settings(&[("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json")]).is_err());
        assert!(settings(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")]).is_ok());
        assert!(settings(&[("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")]).is_err());
        assert!(settings(&[("OTEL_EXPORTER_OTLP_TIMEOUT", "10s")]).is_err());
        let error = settings(&[("OTEL_EXPORTER_OTLP_HEADERS", "api-key")]).unwrap_err();
        assert!(error.contains("OTEL_EXPORTER_OTLP_HEADERS") && !error.contains("api-key"), "{error}");
    }
}
