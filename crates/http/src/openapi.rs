//! The answers every operation shares, written into the OpenAPI document in one place.
//!
//! Some statuses do not come from a handler but from what runs around every handler: the
//! `Principal` extractor (401, and 403 through `Principal::require`), the body limit (413),
//! [`crate::ApiJson`] (400 for malformed JSON, 415 for another media type), the path and query
//! extractors (400), a store that is down (503) and the panic guard (500). Annotating each
//! handler by hand with these drifted: the served document omitted 401 on every protected
//! operation while the API returned it. [`document_shared_answers`] derives them from what an
//! operation declares instead (its security requirement, its parameters, its request body), so a
//! new route is documented as truthfully as the old ones, and every error response points at the
//! one [`PROBLEM_SCHEMA`] under `application/problem+json`.
//!
//! It works on the document as JSON: the generator's types keep some fields (the security
//! requirement's scopes) private, and the result is served as JSON anyway.

use serde_json::{json, Map, Value};

use crate::problem::PROBLEM_JSON;
use crate::problem_type::ProblemType;

/// The component name of the problem body.
pub const PROBLEM_SCHEMA: &str = "Problem";

/// The RFC 9457 body every error of the `/v1` API has. Its `type` enumerates
/// [`ProblemType::ALL`], so a contract check refuses an answer of any other type.
fn problem_schema() -> Value {
    let types: Vec<String> = ProblemType::ALL.iter().map(|kind| kind.uri()).collect();
    let described: Vec<String> =
        ProblemType::ALL.iter().map(|kind| format!("- `{}`: {}", kind.slug(), kind.description())).collect();
    json!({
        "type": "object",
        "description": "RFC 9457 problem details. `type` is stable (`/problems/<slug>`): match on it, not on `title`.",
        "required": ["type", "title", "status"],
        "properties": {
            "type": {
                "type": "string",
                "enum": types,
                "example": "/problems/invalid-amount",
                "description": format!("The stable kind of problem. Every type:\n{}", described.join("\n"))
            },
            "title": { "type": "string" },
            "status": { "type": "integer", "minimum": 400, "maximum": 599 },
            "detail": { "type": "string" },
            "field": { "type": "string", "description": "The request field at fault, for a validation failure" },
            "scope": { "type": "string", "description": "For insufficient-scope: the scope the operation requires" },
            "first_open_day": { "type": "string", "format": "date", "description": "For day-closed: the first day that takes entries" },
            "request_id": { "type": "string", "description": "The x-request-id of this request, to quote to support" }
        }
    })
}

/// The component name of the token endpoint's error body.
pub const TOKEN_ERROR_SCHEMA: &str = "TokenError";

/// A problem that is also an RFC 6749 §5.2 error response, so OAuth client libraries read it.
fn token_error_schema() -> Value {
    json!({
        "description": "A problem (RFC 9457) carrying the OAuth 2.0 error (RFC 6749 section 5.2) too.",
        "allOf": [
            { "$ref": format!("#/components/schemas/{PROBLEM_SCHEMA}") },
            {
                "type": "object",
                "required": ["error"],
                "properties": {
                    "error": {
                        "type": "string",
                        "enum": ["invalid_request", "invalid_client", "invalid_grant", "unauthorized_client",
                                 "unsupported_grant_type", "invalid_scope", "slow_down", "server_error"]
                    },
                    "error_description": { "type": "string" }
                }
            }
        ]
    })
}

/// The statuses an operation can answer without its handler saying so, with their meaning.
fn shared_answers(operation: &Map<String, Value>) -> Vec<(&'static str, String)> {
    let mut answers = Vec::new();
    let scopes: Option<Vec<String>> = operation.get("security").and_then(Value::as_array).map(|requirements| {
        requirements
            .iter()
            .filter_map(|r| r.get("bearer"))
            .filter_map(Value::as_array)
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect()
    });
    let has_params = operation.get("parameters").and_then(Value::as_array).is_some_and(|p| !p.is_empty());
    let has_body = operation.contains_key("requestBody");
    if has_params || has_body {
        answers.push(("400", "Invalid input: the problem names the `field` at fault".to_owned()));
    }
    if let Some(scopes) = scopes {
        answers.push((
            "401",
            "Missing, malformed, expired or untrusted token (with `WWW-Authenticate: Bearer`)".to_owned(),
        ));
        if !scopes.is_empty() {
            answers.push(("403", format!("The token lacks the scope {}", scopes.join(" or "))));
        }
        answers.push(("503", "A database this operation needs is unavailable; retry later".to_owned()));
    }
    if has_body {
        answers.push(("413", "Body over the size limit".to_owned()));
        answers.push(("415", "Content-Type is not application/json".to_owned()));
    }
    answers.push(("500", "Unexpected failure (logged with the request id)".to_owned()));
    answers
}

/// Adds the shared answers to every operation under `prefix` (the problem schema, the statuses
/// above) and gives every error response without a body the problem body; the error responses
/// of the token endpoint at `token_path` get the token error body instead.
pub fn document_shared_answers(doc: &mut Value, prefix: &str, token_path: &str) {
    if let Some(schemas) = doc
        .as_object_mut()
        .map(|d| d.entry("components").or_insert_with(|| json!({})))
        .and_then(Value::as_object_mut)
        .map(|c| c.entry("schemas").or_insert_with(|| json!({})))
        .and_then(Value::as_object_mut)
    {
        schemas.insert(PROBLEM_SCHEMA.to_owned(), problem_schema());
        schemas.insert(TOKEN_ERROR_SCHEMA.to_owned(), token_error_schema());
    }
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else { return };
    for (path, item) in paths.iter_mut() {
        let (schema, shared) = if path.starts_with(prefix) {
            (PROBLEM_SCHEMA, true)
        } else if path == token_path {
            (TOKEN_ERROR_SCHEMA, false)
        } else {
            continue;
        };
        let error_content = json!({ PROBLEM_JSON: { "schema": { "$ref": format!("#/components/schemas/{schema}") } } });
        let Some(item) = item.as_object_mut() else { continue };
        for operation in item.values_mut().filter_map(Value::as_object_mut) {
            let answers = if shared { shared_answers(operation) } else { Vec::new() };
            let responses = operation.entry("responses").or_insert_with(|| json!({}));
            let Some(responses) = responses.as_object_mut() else { continue };
            for (status, description) in answers {
                responses.entry(status).or_insert_with(|| json!({ "description": description }));
            }
            for (status, response) in responses.iter_mut() {
                let is_error = status.starts_with('4') || status.starts_with('5');
                if let Some(response) = response.as_object_mut().filter(|_| is_error) {
                    let has_schema = response
                        .get("content")
                        .and_then(|c| c.get(PROBLEM_JSON))
                        .is_some_and(|media| media.get("schema").is_some());
                    if !has_schema {
                        response.insert("content".to_owned(), error_content.clone());
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc_with(operation: Value) -> Value {
        json!({ "openapi": "3.1.0", "paths": { "/v1/things/{id}": { "post": operation } } })
    }

    #[test]
    fn a_protected_operation_with_a_body_documents_every_answer_around_its_handler() {
        let mut doc = doc_with(json!({
            "parameters": [{ "name": "id", "in": "path" }],
            "requestBody": { "content": {} },
            "security": [{ "bearer": ["things:write"] }],
            "responses": { "201": { "description": "made" } }
        }));
        document_shared_answers(&mut doc, "/v1/", "/oauth2/token");
        let responses = &doc["paths"]["/v1/things/{id}"]["post"]["responses"];
        for status in ["201", "400", "401", "403", "413", "415", "500", "503"] {
            assert!(responses.get(status).is_some(), "{status} missing: {responses}");
        }
        assert!(responses["403"]["description"].as_str().unwrap().contains("things:write"));
        assert_eq!(responses["401"]["content"][PROBLEM_JSON]["schema"]["$ref"], "#/components/schemas/Problem");
        assert!(responses["201"].get("content").is_none(), "a success keeps its own body");
        assert_eq!(doc["components"]["schemas"]["Problem"]["required"], json!(["type", "title", "status"]));
    }

    #[test]
    fn an_open_operation_gets_no_auth_answers_and_a_handlers_own_description_stays() {
        let mut doc = doc_with(json!({
            "responses": { "200": { "description": "ok" }, "400": { "description": "the handler's words" } }
        }));
        document_shared_answers(&mut doc, "/v1/", "/oauth2/token");
        let responses = &doc["paths"]["/v1/things/{id}"]["post"]["responses"];
        assert!(responses.get("401").is_none());
        assert!(responses.get("403").is_none());
        assert_eq!(responses["400"]["description"], "the handler's words");
        assert!(responses["400"]["content"][PROBLEM_JSON]["schema"].is_object());
    }

    #[test]
    fn paths_outside_the_prefix_are_left_as_they_are() {
        let mut doc = json!({ "paths": { "/health/live": { "get": { "responses": { "200": {}, "503": {} } } } } });
        document_shared_answers(&mut doc, "/v1/", "/oauth2/token");
        assert_eq!(doc["paths"]["/health/live"]["get"]["responses"], json!({ "200": {}, "503": {} }));
    }

    #[test]
    fn the_token_endpoints_errors_are_oauth_errors_and_it_gets_no_bearer_answers() {
        let mut doc = json!({ "paths": { "/oauth2/token": { "post": {
            "requestBody": { "content": {} },
            "responses": { "200": {}, "401": { "description": "invalid_client" } }
        } } } });
        document_shared_answers(&mut doc, "/v1/", "/oauth2/token");
        let responses = &doc["paths"]["/oauth2/token"]["post"]["responses"];
        assert_eq!(responses["401"]["content"][PROBLEM_JSON]["schema"]["$ref"], "#/components/schemas/TokenError");
        assert!(responses.get("403").is_none() && responses.get("415").is_none());
        assert_eq!(doc["components"]["schemas"]["TokenError"]["allOf"][1]["required"], json!(["error"]));
    }
}
