//! PII detection with validation, not bare patterns: a candidate found by a pattern must pass
//! its entity's rules (Luhn for cards, mod-97 for IBANs, the SSA's rules for SSNs, a real
//! address for IPs, a valid number for its region for phones), and words around it raise or
//! lower its score (Presidio's context enhancement). Names and places come from cues (titles,
//! "my name is", "lives in", street patterns) and gazetteers; see [`names`].

mod checks;
mod names;
mod recognizers;

use std::sync::LazyLock;

use serde::Serialize;

use crate::text::CharIndex;
use crate::{Finding, SettingsError};

/// The entities the `pii` guardrail knows, by Presidio's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Entity {
    EmailAddress,
    PhoneNumber,
    CreditCard,
    IbanCode,
    UsSsn,
    IpAddress,
    Person,
    Location,
}

impl Entity {
    pub const ALL: [Entity; 8] = [
        Entity::EmailAddress,
        Entity::PhoneNumber,
        Entity::CreditCard,
        Entity::IbanCode,
        Entity::UsSsn,
        Entity::IpAddress,
        Entity::Person,
        Entity::Location,
    ];
    pub const NAMES: [&'static str; 8] = [
        "EMAIL_ADDRESS",
        "PHONE_NUMBER",
        "CREDIT_CARD",
        "IBAN_CODE",
        "US_SSN",
        "IP_ADDRESS",
        "PERSON",
        "LOCATION",
    ];

    pub fn name(self) -> &'static str {
        Self::NAMES[self as usize]
    }

    pub fn parse(name: &str) -> Result<Self, SettingsError> {
        Self::NAMES
            .iter()
            .position(|n| *n == name)
            .map(|i| Self::ALL[i])
            .ok_or_else(|| SettingsError::UnknownEntity(name.to_string()))
    }
}

/// A configured PII detector: which entities, and the least score that counts.
#[derive(Debug, Clone)]
pub struct Pii {
    entities: Vec<Entity>,
    min_score: f64,
}

/// A candidate in byte offsets, before overlaps are resolved.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Hit {
    pub entity: Entity,
    pub start: usize,
    pub end: usize,
    pub score: f64,
}

/// Scores a candidate needs by default.
pub const DEFAULT_MIN_SCORE: f64 = 0.5;
/// How far (in bytes) before a candidate context words are looked for.
const CONTEXT_BYTES: usize = 48;
/// What a context word adds.
const CONTEXT_BOOST: f64 = 0.35;

impl Pii {
    /// A detector of `entities` (names as in [`Entity::NAMES`]); all of them when empty.
    pub fn new(entities: &[String], min_score: Option<f64>) -> Result<Self, SettingsError> {
        let entities = if entities.is_empty() {
            Entity::ALL.to_vec()
        } else {
            entities
                .iter()
                .map(|e| Entity::parse(e))
                .collect::<Result<_, _>>()?
        };
        Ok(Pii {
            entities,
            min_score: min_score.unwrap_or(DEFAULT_MIN_SCORE),
        })
    }

    pub fn entities(&self) -> &[Entity] {
        &self.entities
    }

    /// The findings in `text`, left to right, overlaps resolved (the higher score wins, then
    /// the longer span).
    pub fn find(&self, text: &str) -> Vec<Finding> {
        let mut hits = Vec::new();
        let wants = |e: Entity| self.entities.contains(&e);
        // Every number pattern needs a digit (`\d`), and IPv6 a colon: a text without them,
        // most prose, skips those patterns' scans.
        let digit = has_digit(text);
        if wants(Entity::EmailAddress) {
            recognizers::emails(text, &mut hits);
        }
        if digit && wants(Entity::CreditCard) {
            recognizers::cards(text, &mut hits);
        }
        if digit && wants(Entity::IbanCode) {
            recognizers::ibans(text, &mut hits);
        }
        if (digit || text.contains(':')) && wants(Entity::IpAddress) {
            recognizers::ips(text, &mut hits);
        }
        if digit && wants(Entity::UsSsn) {
            recognizers::ssns(text, &mut hits);
        }
        if digit && wants(Entity::PhoneNumber) {
            recognizers::phones(text, &mut hits);
        }
        if wants(Entity::Person) || wants(Entity::Location) {
            names::find(
                text,
                wants(Entity::Person),
                wants(Entity::Location),
                &mut hits,
            );
        }
        for hit in &mut hits {
            hit.score = (hit.score + context_boost(text, hit)).min(1.0);
        }
        hits.retain(|h| h.score >= self.min_score);
        resolve(text, hits)
    }
}

/// Whether `text` holds a character the patterns' `\d` could match (Unicode decimal digits;
/// `char::is_numeric` covers them and more).
fn has_digit(text: &str) -> bool {
    text.bytes().any(|b| b.is_ascii_digit())
        || (!text.is_ascii() && text.chars().any(char::is_numeric))
}

/// Words that, before a candidate, make it likelier to be that entity (several languages).
fn context_words(entity: Entity) -> &'static [&'static str] {
    match entity {
        Entity::PhoneNumber => &[
            "phone",
            "call",
            "tel",
            "mobile",
            "cell",
            "ring",
            "text me",
            "whatsapp",
            "fax",
            "contact",
            "reach",
            "telefon",
            "handy",
            "rufnummer",
            "téléphone",
            "portable",
            "teléfono",
            "móvil",
            "llámame",
            "appelez",
        ],
        Entity::CreditCard => &[
            "card",
            "visa",
            "mastercard",
            "amex",
            "credit",
            "debit",
            "cc",
            "pan",
            "karte",
            "kreditkarte",
            "carte",
            "tarjeta",
        ],
        Entity::UsSsn => &[
            "ssn",
            "social security",
            "social",
            "ss#",
            "ss #",
            "taxpayer",
        ],
        Entity::IbanCode => &[
            "iban", "account", "bank", "konto", "compte", "cuenta", "sepa",
        ],
        Entity::IpAddress => &["ip", "address", "host", "server", "client", "from", "addr"],
        _ => &[],
    }
}

fn context_boost(text: &str, hit: &Hit) -> f64 {
    let words = context_words(hit.entity);
    if words.is_empty() {
        return 0.0;
    }
    let mut from = hit.start.saturating_sub(CONTEXT_BYTES);
    while !text.is_char_boundary(from) {
        from -= 1;
    }
    let before = text[from..hit.start].to_lowercase();
    if words.iter().any(|w| before.contains(w)) {
        CONTEXT_BOOST
    } else {
        0.0
    }
}

/// Drops hits that overlap a better one and converts offsets to characters.
fn resolve(text: &str, mut hits: Vec<Hit>) -> Vec<Finding> {
    hits.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then((b.end - b.start).cmp(&(a.end - a.start)))
    });
    let mut kept: Vec<Hit> = Vec::with_capacity(hits.len());
    for h in hits {
        if kept.iter().all(|k| h.end <= k.start || h.start >= k.end) {
            kept.push(h);
        }
    }
    kept.sort_by_key(|h| h.start);
    let index = CharIndex::new(text);
    kept.into_iter()
        .map(|h| {
            Finding::new(
                h.entity.name(),
                index.char_at(h.start),
                index.char_at(h.end),
                (h.score * 100.0).round() / 100.0,
            )
        })
        .collect()
}

/// Whether a capitalized word is a common word rather than a name (sentence starts, days,
/// months, everyday nouns).
pub(crate) fn not_a_name(word: &str) -> bool {
    names::not_a_name(word)
}

/// Whether a word is a day or a month.
pub(crate) fn day_or_month(word: &str) -> bool {
    names::DAYS_AND_MONTHS.contains(&word)
}

/// A compiled pattern from this module's fixed set; they are literals checked by the tests.
pub(crate) fn pattern(re: &str) -> regex::Regex {
    regex::Regex::new(re).unwrap_or_else(|e| unreachable!("built-in pattern {re}: {e}"))
}

/// A lazily compiled built-in pattern.
pub(crate) type Pattern = LazyLock<regex::Regex>;

#[cfg(test)]
mod tests;
