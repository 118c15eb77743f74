//! Tool parameter schemas in the form Gemini's `parameters` accepts.
//!
//! `FunctionDeclaration.parameters` is an OpenAPI-subset `Schema` message, not JSON Schema:
//! a keyword it does not know is a 400 (`Unknown name "additionalProperties"`). Such keywords
//! are dropped, so the constraints they state are not enforced by Gemini. `$ref`/`$defs` are
//! left in place (Gemini then names them in its error): they cannot be dropped without changing
//! the schema's meaning.

use serde_json::{Map, Value};

/// JSON-Schema keywords the `Schema` message lacks.
const UNSUPPORTED_KEYS: &[&str] = &[
    "$schema",
    "$id",
    "$comment",
    "additionalProperties",
    "unevaluatedProperties",
    "patternProperties",
    "propertyNames",
    "dependentRequired",
    "dependentSchemas",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
    "uniqueItems",
    "contentEncoding",
    "contentMediaType",
    "readOnly",
    "writeOnly",
    "deprecated",
    "examples",
    "strict",
    "const",
];

/// The string formats Gemini accepts; any other (`uri`, `email`, …) is a 400.
const STRING_FORMATS: &[&str] = &["enum", "date-time"];

/// A function's parameter schema for `parameters`, or `None` when it takes no arguments
/// (Gemini rejects an object schema without properties).
pub fn parameters(schema: &Value) -> Option<Value> {
    let mut schema = schema.clone();
    clean_schema(&mut schema);
    let object = schema.as_object()?;
    let no_properties = object
        .get("properties")
        .and_then(Value::as_object)
        .is_none_or(Map::is_empty);
    let kind = object.get("type").and_then(Value::as_str);
    let composite = ["anyOf", "oneOf", "allOf", "$ref"]
        .iter()
        .any(|k| object.contains_key(*k));
    let takes_nothing = no_properties && !composite && matches!(kind, None | Some("object"));
    (!takes_nothing).then_some(schema)
}

/// Cleans one schema level and recurses through `properties`, `items`, `anyOf`/`oneOf`/
/// `allOf`, `not` and `$defs` (never into property names or `enum`/`default` values):
/// drops [`UNSUPPORTED_KEYS`] and string formats Gemini rejects, turns a string `const`
/// into a one-value `enum`, and `"type": [T, "null"]` into `"type": T, "nullable": true`.
pub fn clean_schema(schema: &mut Value) {
    let Some(object) = schema.as_object_mut() else {
        return;
    };
    let const_enum = match object.get("const") {
        Some(Value::String(value)) if !object.contains_key("enum") => Some(value.clone()),
        _ => None,
    };
    if let Some(value) = const_enum {
        object.insert("enum".into(), Value::Array(vec![Value::String(value)]));
    }
    for key in UNSUPPORTED_KEYS {
        object.remove(*key);
    }
    if let Some(Value::Array(types)) = object.get("type") {
        let nullable = types.iter().any(|t| t == "null");
        let rest: Vec<Value> = types.iter().filter(|t| *t != "null").cloned().collect();
        if let [only] = rest.as_slice() {
            let only = only.clone();
            object.insert("type".into(), only);
            if nullable {
                object.insert("nullable".into(), Value::Bool(true));
            }
        }
    }
    let is_string = object.get("type").and_then(Value::as_str) == Some("string");
    let bad_format = object
        .get("format")
        .and_then(Value::as_str)
        .is_some_and(|f| !STRING_FORMATS.contains(&f));
    if is_string && bad_format {
        object.remove("format");
    }
    for (key, value) in object.iter_mut() {
        match key.as_str() {
            "properties" | "$defs" | "definitions" => {
                if let Some(map) = value.as_object_mut() {
                    map.values_mut().for_each(clean_schema);
                }
            }
            "items" | "prefixItems" | "anyOf" | "oneOf" | "allOf" | "not" => match value {
                Value::Array(list) => list.iter_mut().for_each(clean_schema),
                other => clean_schema(other),
            },
            _ => {}
        }
    }
}
