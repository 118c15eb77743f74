//! `json_schema`: an answer must be JSON that validates against a schema. The errors name
//! the failing path, so a model asked again (`reask`) knows what to fix.

/// A compiled schema.
pub type Validator = jsonschema::Validator;

/// Compiles `schema` (any draft the schema declares; 2020-12 by default).
pub fn compile(schema: &serde_json::Value) -> Result<Validator, String> {
    jsonschema::validator_for(schema).map_err(|e| e.to_string())
}

/// Checks `answer`: it must parse as JSON (a Markdown code fence around it is tolerated) and
/// validate. The errors are sentences naming the path.
pub fn check(validator: &Validator, answer: &str) -> Result<(), Vec<String>> {
    let body = unfence(answer);
    let value: serde_json::Value = serde_json::from_str(body)
        .map_err(|e| vec![format!("the answer is not valid JSON: {e}")])?;
    let errors: Vec<String> = validator
        .iter_errors(&value)
        .map(|e| {
            let path = e.instance_path().to_string();
            let at = if path.is_empty() {
                "the answer".to_string()
            } else {
                format!("`{path}`")
            };
            format!("{at}: {e}")
        })
        .take(10)
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// The JSON inside a ```json … ``` fence, or the text itself.
fn unfence(text: &str) -> &str {
    let t = text.trim();
    t.strip_prefix("```json")
        .or_else(|| t.strip_prefix("```"))
        .and_then(|rest| rest.strip_suffix("```"))
        .map_or(t, str::trim)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_invalid_and_unparsable_answers() {
        let v = compile(&serde_json::json!({
            "type": "object", "required": ["city"],
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}
        }))
        .unwrap_or_else(|e| unreachable!("{e}"));
        assert!(check(&v, r#"{"city": "Paris", "days": 3}"#).is_ok());
        assert!(check(&v, "```json\n{\"city\": \"Oslo\"}\n```").is_ok());
        let errors = check(&v, r#"{"days": "three"}"#).unwrap_err();
        assert!(errors.iter().any(|e| e.contains("city")), "{errors:?}");
        assert!(errors.iter().any(|e| e.contains("/days")), "{errors:?}");
        assert!(check(&v, "Paris, 3 days").unwrap_err()[0].contains("not valid JSON"));
        assert!(compile(&serde_json::json!({"type": "no-such-type"})).is_err());
    }
}
