//! Cache keys. The exact key covers the route, its prompt version and target models (so a
//! config change never serves an old answer), the normalized messages, and every parameter
//! that changes the answer. The semantic scope covers the same minus the messages, plus the
//! user or tenant when the route asks for it.

use std::hash::{DefaultHasher, Hash, Hasher};

use trestle_core::config::{Normalize, QueryText, SemanticScope};
use trestle_core::openai::{ChatRequest, Role};

use crate::runtime::Route;

/// Hashes the route's identity: name, prompt version and experiment variant (`variant`,
/// empty when neither applies), target models.
fn scope_hasher(route: &Route, variant: &str) -> DefaultHasher {
    let mut h = DefaultHasher::new();
    route.name.hash(&mut h);
    variant.hash(&mut h);
    for t in &route.targets {
        t.name.hash(&mut h);
    }
    h
}

/// Text with the route's normalization applied, fed to the hasher word by word without
/// allocating per word.
fn hash_text(text: &str, norm: &Normalize, h: &mut DefaultHasher) {
    if !norm.whitespace && !norm.punctuation && norm.filler_words.is_empty() && !norm.case {
        text.hash(h);
        return;
    }
    let separator = |c: char| {
        if norm.whitespace {
            c.is_whitespace()
        } else {
            c == ' '
        }
    };
    for word in text
        .split(separator)
        .filter(|w| !norm.whitespace || !w.is_empty())
    {
        let bare = word.trim_matches(|c: char| c.is_ascii_punctuation());
        if norm
            .filler_words
            .iter()
            .any(|f| f.eq_ignore_ascii_case(bare))
        {
            continue;
        }
        let word = if norm.punctuation { bare } else { word };
        if word.is_empty() {
            continue;
        }
        if norm.case {
            for c in word.chars().flat_map(char::to_lowercase) {
                h.write_u32(c as u32);
            }
        } else {
            word.hash(h);
        }
        h.write_u8(0);
    }
}

fn hash_json<T: serde::Serialize>(value: Option<&T>, h: &mut DefaultHasher) {
    match value {
        None => h.write_u8(0),
        Some(v) => serde_json::to_string(v).unwrap_or_default().hash(h),
    }
}

/// The exact-cache key of a request on a route.
pub fn exact_key(route: &Route, variant: &str, req: &ChatRequest, norm: &Normalize) -> u64 {
    let mut h = scope_hasher(route, variant);
    for m in &req.messages {
        m.role.hash(&mut h);
        hash_text(&m.text(), norm, &mut h);
        h.write_u8(0xff);
        hash_json(m.tool_calls.as_ref(), &mut h);
        m.tool_call_id.hash(&mut h);
        m.name.hash(&mut h);
    }
    hash_json(req.tools.as_ref(), &mut h);
    hash_json(req.tool_choice.as_ref(), &mut h);
    hash_json(req.response_format.as_ref(), &mut h);
    hash_json(req.stop.as_ref(), &mut h);
    req.output_cap().hash(&mut h);
    req.temperature.map(f64::to_bits).hash(&mut h);
    req.top_p.map(f64::to_bits).hash(&mut h);
    // Unknown parameters (seed, n, logit_bias…) change answers too.
    if !req.extra.is_empty() {
        hash_json(Some(&req.extra), &mut h);
    }
    h.finish()
}

/// The semantic scope of a request: the route's identity, the parameters that must match
/// exactly (tools, response format, output cap), and the user or tenant when scoped.
pub fn semantic_scope(
    route: &Route,
    variant: &str,
    req: &ChatRequest,
    scope: SemanticScope,
    user: Option<&str>,
    tenant: Option<&str>,
) -> u64 {
    let mut h = scope_hasher(route, variant);
    hash_json(req.tools.as_ref(), &mut h);
    hash_json(req.response_format.as_ref(), &mut h);
    req.output_cap().hash(&mut h);
    // The conversation so far (everything before the last user message) must match exactly:
    // only the last user message is compared by meaning.
    let last_user = req.messages.iter().rposition(|m| m.role == Role::User);
    let norm = Normalize::default();
    for m in &req.messages[..last_user.unwrap_or(0)] {
        m.role.hash(&mut h);
        hash_text(&m.text(), &norm, &mut h);
        h.write_u8(0xff);
        hash_json(m.tool_calls.as_ref(), &mut h);
    }
    match scope {
        SemanticScope::Route => 0u8.hash(&mut h),
        SemanticScope::User => (1u8, user.unwrap_or("")).hash(&mut h),
        SemanticScope::Tenant => (2u8, tenant.unwrap_or("")).hash(&mut h),
    }
    h.finish()
}

/// The text a semantic cache embeds.
pub fn query_text(req: &ChatRequest, query: QueryText) -> String {
    match query {
        QueryText::LastUser => req.last_user_text(),
        QueryText::AllUser => req
            .messages
            .iter()
            .filter(|m| m.role == Role::User)
            .map(|m| m.text())
            .collect::<Vec<_>>()
            .join("\n"),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;
    use trestle_core::Config;

    use super::*;
    use crate::resilience::Registry;
    use crate::runtime::Runtime;

    fn runtime() -> Runtime {
        let text = r#"
[providers.p]
kind = "placeholder"
[routes.a]
targets = ["p/m1"]
[routes.b]
targets = ["p/m1"]
[routes.other-model]
targets = ["p/m2"]
"#;
        let config = Config::parse(text, &|_| None).unwrap().config;
        Runtime::build(config, Arc::new(Registry::new(&config_cache()))).unwrap()
    }

    fn config_cache() -> trestle_core::config::CacheConfig {
        Default::default()
    }

    fn req(v: serde_json::Value) -> ChatRequest {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn normalization_ignores_case_spacing_and_filler_words() {
        let rt = runtime();
        let a = rt.resolve("a").unwrap();
        let mut norm = Normalize::default();
        let k = |r: &ChatRequest, n: &Normalize| exact_key(&a, "", r, n);
        let base =
            req(json!({"model": "a", "messages": [{"role": "user", "content": "Hello   World"}]}));
        let spaced = req(json!({"model": "a", "stream": true,
            "messages": [{"role": "user", "content": " hello world\n"}]}));
        assert_eq!(
            k(&base, &norm),
            k(&spaced, &norm),
            "stream is not part of the key"
        );
        let polite = req(
            json!({"model": "a", "messages": [{"role": "user", "content": "Hello, please, world"}]}),
        );
        assert_ne!(k(&base, &norm), k(&polite, &norm));
        norm.filler_words = vec!["please".into()];
        let plain =
            req(json!({"model": "a", "messages": [{"role": "user", "content": "Hello, world"}]}));
        assert_eq!(k(&plain, &norm), k(&polite, &norm));
        norm.case = false;
        let upper =
            req(json!({"model": "a", "messages": [{"role": "user", "content": "HELLO World"}]}));
        assert_ne!(k(&base, &norm), k(&upper, &norm));
        let system =
            req(json!({"model": "a", "messages": [{"role": "system", "content": "Hello World"}]}));
        assert_ne!(k(&base, &norm), k(&system, &norm));
    }

    #[test]
    fn keys_are_scoped_by_route_model_and_parameters() {
        let rt = runtime();
        let norm = Normalize::default();
        let body = |extra: serde_json::Value| {
            let mut v = json!({"model": "a", "messages": [{"role": "user", "content": "hi"}]});
            if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
                o.extend(e.clone());
            }
            req(v)
        };
        let key =
            |route: &str, r: &ChatRequest| exact_key(&rt.resolve(route).unwrap(), "", r, &norm);
        let plain = body(json!({}));
        assert_ne!(key("a", &plain), key("b", &plain), "another route");
        assert_ne!(
            key("a", &plain),
            key("other-model", &plain),
            "another model"
        );
        for changed in [
            json!({"max_tokens": 5}),
            json!({"temperature": 0.7}),
            json!({"seed": 1}),
            json!({"response_format": {"type": "json_object"}}),
        ] {
            assert_ne!(
                key("a", &plain),
                key("a", &body(changed.clone())),
                "{changed}"
            );
        }
        assert_eq!(key("a", &plain), key("a", &body(json!({"user": "u1"}))));
    }

    #[test]
    fn semantic_scopes_separate_users_and_tenants_when_asked() {
        let rt = runtime();
        let a = rt.resolve("a").unwrap();
        let r = req(json!({"model": "a", "messages": [{"role": "user", "content": "hi"}]}));
        let s = |scope, user, tenant| semantic_scope(&a, "", &r, scope, user, tenant);
        assert_eq!(
            s(SemanticScope::Route, Some("u1"), None),
            s(SemanticScope::Route, Some("u2"), None)
        );
        assert_ne!(
            s(SemanticScope::User, Some("u1"), None),
            s(SemanticScope::User, Some("u2"), None)
        );
        assert_ne!(
            s(SemanticScope::Tenant, None, Some("t1")),
            s(SemanticScope::Tenant, None, Some("t2"))
        );
        // Earlier turns must match exactly; only the last user message is compared by meaning.
        let turn = req(json!({"model": "a", "messages": [
            {"role": "user", "content": "first"}, {"role": "assistant", "content": "ok"},
            {"role": "user", "content": "hi"}]}));
        assert_ne!(
            semantic_scope(&a, "", &turn, SemanticScope::Route, None, None),
            s(SemanticScope::Route, None, None)
        );
    }

    mod properties {
        use proptest::prelude::*;

        use super::super::*;

        fn key(text: &str, norm: &Normalize) -> u64 {
            let mut h = DefaultHasher::new();
            hash_text(text, norm, &mut h);
            h.finish()
        }

        /// Words of ASCII letters, digits and a few accented letters (whose case maps round
        /// trip), and the punctuation normalization strips.
        fn words() -> impl Strategy<Value = Vec<String>> {
            prop::collection::vec("[a-zA-Z0-9éàüç]{1,8}[?!.,]?", 1..12)
        }

        proptest! {
            #[test]
            fn spacing_and_case_never_change_the_key(
                words in words(),
                gaps in prop::collection::vec("[ \t\n]{1,3}", 12),
                upper in prop::collection::vec(any::<bool>(), 12),
            ) {
                let norm = Normalize::default();
                let plain = words.join(" ");
                let varied: String = words
                    .iter()
                    .zip(gaps.iter().cycle())
                    .zip(upper.iter().cycle())
                    .map(|((w, g), up)| {
                        let w = if *up { w.to_uppercase() } else { w.to_lowercase() };
                        format!("{g}{w}")
                    })
                    .collect();
                prop_assert_eq!(key(&plain, &norm), key(&varied, &norm));
            }

            #[test]
            fn any_text_hashes_without_panicking_and_is_stable(text in any::<String>()) {
                for norm in [Normalize::default(), Normalize {
                    case: false, whitespace: false, punctuation: false, filler_words: vec![],
                }] {
                    prop_assert_eq!(key(&text, &norm), key(&text, &norm));
                }
            }

            #[test]
            fn different_words_make_different_keys(a in words(), b in words()) {
                let norm = Normalize { filler_words: vec![], ..Normalize::default() };
                let bare = |w: &[String]| w.iter()
                    .map(|w| w.trim_matches(|c: char| c.is_ascii_punctuation()).to_lowercase())
                    .collect::<Vec<_>>();
                prop_assume!(bare(&a) != bare(&b));
                prop_assert_ne!(key(&a.join(" "), &norm), key(&b.join(" "), &norm));
            }
        }
    }
}
