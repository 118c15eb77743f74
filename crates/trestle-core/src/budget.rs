//! Token budget settings: a route's `max_input_tokens` and `trim` policy, and a model's
//! `tokenizer`. Plain data and its checks; the gateway counts and trims
//! (`pipeline/trim.rs`, `tokens.rs`).

use std::path::PathBuf;

use serde::Deserialize;

/// What a route does with a request over its `max_input_tokens`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(try_from = "String")]
pub enum TrimPolicy {
    /// Keep every system and developer message and the newest turns that fit; drop the
    /// oldest turns first.
    #[default]
    OldestTurns,
    /// Refuse with 400 `context_length_exceeded` instead of trimming.
    Reject,
}

impl TrimPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            TrimPolicy::OldestTurns => "oldest_turns",
            TrimPolicy::Reject => "reject",
        }
    }
}

impl TryFrom<String> for TrimPolicy {
    type Error = String;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        match value.as_str() {
            "oldest_turns" => Ok(TrimPolicy::OldestTurns),
            "reject" => Ok(TrimPolicy::Reject),
            other => Err(format!(
                "`trim` must be \"oldest_turns\" or \"reject\", not \"{other}\""
            )),
        }
    }
}

/// The tiktoken encodings built into the binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// GPT-4o, GPT-4.1, GPT-4.5, GPT-5, o1, o3, o4.
    O200kBase,
    /// GPT-4, GPT-3.5.
    Cl100kBase,
}

impl Encoding {
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::O200kBase => "o200k_base",
            Encoding::Cl100kBase => "cl100k_base",
        }
    }

    /// The encoding OpenAI uses for a model name, where it is an OpenAI model. A router's
    /// `vendor/` prefix and a fine-tune's `ft:` prefix are looked through.
    pub fn for_model(model: &str) -> Option<Encoding> {
        let name = model
            .rsplit('/')
            .next()
            .unwrap_or(model)
            .to_ascii_lowercase();
        let name = name.strip_prefix("ft:").unwrap_or(&name);
        let family = |prefix: &str| {
            name == prefix
                || name
                    .strip_prefix(prefix)
                    .is_some_and(|rest| rest.starts_with(['-', ':', '.', '@']))
        };
        let o200k = [
            "gpt-4o",
            "chatgpt-4o",
            "gpt-4.1",
            "gpt-4.5",
            "gpt-5",
            "gpt-oss",
        ]
        .iter()
        .any(|p| family(p))
            || ["o1", "o3", "o4"].iter().any(|p| family(p));
        if o200k {
            return Some(Encoding::O200kBase);
        }
        let cl100k = ["gpt-4", "gpt-3.5", "gpt-35"].iter().any(|p| family(p));
        cl100k.then_some(Encoding::Cl100kBase)
    }
}

/// A model's `tokenizer`: a built-in encoding or a `tokenizer.json` file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum TokenizerSpec {
    Tiktoken(Encoding),
    /// A Hugging Face `tokenizer.json`; relative to the config file's folder.
    File(PathBuf),
}

impl TryFrom<String> for TokenizerSpec {
    type Error = String;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        match value.as_str() {
            "o200k_base" => Ok(TokenizerSpec::Tiktoken(Encoding::O200kBase)),
            "cl100k_base" => Ok(TokenizerSpec::Tiktoken(Encoding::Cl100kBase)),
            path if path.ends_with(".json") => Ok(TokenizerSpec::File(PathBuf::from(path))),
            other => Err(format!(
                "`tokenizer` must be \"o200k_base\", \"cl100k_base\" or the path of a \
                 tokenizer.json file, not \"{other}\""
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openai_model_names_pick_their_encoding() {
        use Encoding::{Cl100kBase as Cl, O200kBase as O2};
        for (model, want) in [
            ("gpt-4o", Some(O2)),
            ("gpt-4o-mini-2024-07-18", Some(O2)),
            ("gpt-4.1-nano", Some(O2)),
            ("o1", Some(O2)),
            ("o3-mini", Some(O2)),
            ("o4-mini-2025-04-16", Some(O2)),
            ("gpt-5", Some(O2)),
            ("gpt-5-mini", Some(O2)),
            ("openai/gpt-4o", Some(O2)),
            ("ft:gpt-4o-mini:acme::abc", Some(O2)),
            ("gpt-4", Some(Cl)),
            ("gpt-4-turbo", Some(Cl)),
            ("gpt-4-0613", Some(Cl)),
            ("gpt-3.5-turbo", Some(Cl)),
            ("gpt-35-turbo", Some(Cl)),
            ("claude-sonnet-4-5", None),
            ("llama-3.1-8b", None),
            ("o1preview", None),
            ("gpt-40", None),
            ("m1", None),
        ] {
            assert_eq!(Encoding::for_model(model), want, "{model}");
        }
    }

    fn problems(text: &str) -> String {
        match crate::Config::parse(text, &|_| None) {
            Ok(_) => String::new(),
            Err(e) => e.to_string(),
        }
    }

    const BASE: &str =
        "[providers.p]\nkind = \"placeholder\"\n[routes.r]\ntargets = [\"p/gpt-4o\"]\n";

    #[test]
    fn config_check_names_the_key_of_each_bad_budget_value() {
        assert_eq!(problems(&format!("{BASE}max_input_tokens = 4000\n")), "");
        assert_eq!(
            problems(&format!(
                "{BASE}max_input_tokens = 4000\ntrim = \"reject\"\n"
            )),
            ""
        );
        let e = problems(&format!("{BASE}max_input_tokens = 0\n"));
        assert!(
            e.contains("routes.r.max_input_tokens: must be above 0"),
            "{e}"
        );
        let e = problems(&format!("{BASE}trim = \"reject\"\n"));
        assert!(
            e.contains("routes.r.trim: `trim` needs `max_input_tokens`"),
            "{e}"
        );
        let e = problems(&format!("{BASE}max_input_tokens = 10\ntrim = \"newest\"\n"));
        assert!(e.contains("line 6") && e.contains("`trim` must be"), "{e}");
        let e = problems(&format!("{BASE}[models.\"p/m\"]\ntokenizer = \"llama3\"\n"));
        assert!(
            e.contains("line 6") && e.contains("`tokenizer` must be"),
            "{e}"
        );
    }

    #[test]
    fn a_missing_tokenizer_file_is_a_config_error() {
        let dir = std::env::temp_dir().join(format!("trestle-budget-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("trestle.toml");
        let text = format!("{BASE}[models.\"p/m\"]\ntokenizer = \"tok/tokenizer.json\"\n");
        std::fs::write(&file, &text).unwrap();
        let e = crate::Config::load(&file).unwrap_err().to_string();
        assert!(
            e.contains("line 5: models.\"p/m\".tokenizer: no tokenizer file at")
                && e.contains("tok/tokenizer.json"),
            "{e}"
        );
        std::fs::create_dir_all(dir.join("tok")).unwrap();
        std::fs::write(dir.join("tok/tokenizer.json"), "{}").unwrap();
        assert!(crate::Config::load(&file).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_values_name_their_key() {
        let e = TokenizerSpec::try_from("llama3".to_string()).unwrap_err();
        assert!(e.contains("`tokenizer`") && e.contains("llama3"), "{e}");
        let e = TrimPolicy::try_from("newest".to_string()).unwrap_err();
        assert!(e.contains("`trim`") && e.contains("newest"), "{e}");
        assert_eq!(
            TokenizerSpec::try_from("tok/tokenizer.json".to_string()),
            Ok(TokenizerSpec::File("tok/tokenizer.json".into()))
        );
    }
}
