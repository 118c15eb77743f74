//! The attribute rule: two questions whose words differ by an attribute an answer depends on
//! are not the same question, however close their embeddings. The words one question has and
//! the other lacks (after the guard's normalizations: case, `n't` and `cannot` as `not`,
//! plurals, `daily` as `day`, unit spellings such as `kilometres` as `km`) are looked at:
//!
//! - a negation by affix (`safe` / `unsafe`, `successful` / `unsuccessful`) or a word that
//!   negates what follows (`except`, `avoid`, `stop`, `ban`, `outside`, …) on one side only;
//! - a word of one attribute class replaced by another of the same class: a time unit
//!   (`days` / `weeks`), a weekday, a month, a part of the day (`am` / `pm`), a day
//!   (`today` / `tomorrow`), a time relation (`during` / `after`), a unit of measure or a
//!   currency, a direction or order (`ascending` / `descending`, `east` / `west`), a colour,
//!   an audience or plan (`adults` / `children`, `free` / `enterprise`), a level
//!   (`high` / `low`), a comparative or superlative (`cheapest` / `most expensive`);
//! - one side of a pair of opposites (`show` / `hide`, `accept` / `decline`, …).
//!
//! Numbers, negation parity and names are the guard's own checks ([`super::compatible`]).

use std::collections::{BTreeSet, HashMap};
use std::sync::LazyLock;

/// What two questions differ by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Difference {
    /// A number (or number word) in one and not the other.
    Number,
    /// Negated in one and not the other: a negator, an affix, or a word such as `except`.
    Negation,
    /// A word from one side of a contrast in one, the other side in the other.
    Contrast,
    /// A name in one that the other lacks.
    Entity,
    /// A weekday, month, part of the day, day or time relation.
    Date,
    /// A unit of measure, time or money.
    Unit,
    /// A comparative or superlative (`cheapest` / `most expensive`).
    Comparative,
    /// Who or what it is for: an audience, a plan, a direction, a colour, a level.
    Attribute,
}

impl Difference {
    pub fn as_str(self) -> &'static str {
        match self {
            Difference::Number => "number",
            Difference::Negation => "negation",
            Difference::Contrast => "contrast",
            Difference::Entity => "entity",
            Difference::Date => "date",
            Difference::Unit => "unit",
            Difference::Comparative => "comparative",
            Difference::Attribute => "attribute",
        }
    }
}

/// Words that negate what follows them, counted on one side only.
const NEGATIVE: &[&str] = &[
    "except",
    "excluding",
    "exclude",
    "besides",
    "unless",
    "outside",
    "avoid",
    "stop",
    "ban",
    "banned",
    "prohibited",
    "forbidden",
    "lack",
];

/// Prefixes that negate the word they are on.
const NEGATING_PREFIXES: &[&str] = &["un", "in", "im", "il", "ir", "dis", "non-", "non"];

/// Attribute classes: two different words of one class, one on each side, differ.
const CLASSES: &[(Difference, &str)] = &[
    (
        Difference::Unit,
        "second minute hour day week fortnight month year decade quarter",
    ),
    (
        Difference::Date,
        "monday tuesday wednesday thursday friday saturday sunday weekday weekend",
    ),
    (
        Difference::Date,
        "january february march april may june july august september october november december",
    ),
    (
        Difference::Date,
        "morning afternoon evening night tonight am pm noon midnight overnight",
    ),
    (
        Difference::Date,
        "today tomorrow yesterday same-day next-day",
    ),
    (Difference::Date, "last this next previous coming"),
    (Difference::Date, "spring summer autumn fall winter"),
    (Difference::Date, "breakfast brunch lunch dinner supper"),
    (
        Difference::Date,
        "before after during within until since prior",
    ),
    (
        Difference::Unit,
        "mm cm m km inch foot feet yard mile nautical g kg lb oz stone tonne ton ml litre \
         gallon pint cup glass tablespoon teaspoon celsius fahrenheit kelvin kb mb gb tb mph kph \
         watt kw kwh volt dollar euro gbp yen",
    ),
    (
        Difference::Attribute,
        "north south east west northern southern eastern western left right up down upstairs \
         downstairs inbound outbound incoming outgoing ascending descending upward downward \
         forward backward front back top bottom upper lower",
    ),
    (
        Difference::Attribute,
        "red blue green yellow orange purple black white grey gray pink brown amber silver gold",
    ),
    (
        Difference::Attribute,
        "adult child baby infant toddler teen teenager senior pensioner student men men's women \
         women's man woman boy girl male female employee employer employed self-employed \
         contractor freelancer tenant landlord homeowner resident visitor member non-member \
         guest staff full-time part-time economy business first-class premium basic standard \
         pro enterprise free paid personal",
    ),
    (
        Difference::Attribute,
        "high low higher lower highest lowest senior junior",
    ),
    (
        Difference::Comparative,
        "cheapest cheaper most-expensive more-expensive most least more less fewer best worst \
         better worse highest lowest largest smallest fastest slowest earliest latest oldest \
         newest longest shortest nearest farthest strongest weakest easiest hardest heaviest \
         lightest hottest coldest warmest safest maximum minimum max min",
    ),
];

/// Opposites not already in the guard's contrasts (singular forms).
const OPPOSITES: &[(&str, &str)] = &[
    ("show", "hide"),
    ("keep", "stop"),
    ("continue", "stop"),
    ("accept", "decline"),
    ("accept", "reject"),
    ("allow", "ban"),
    ("allowed", "banned"),
    ("pass", "fail"),
    ("approve", "reject"),
    ("approved", "rejected"),
    ("compulsory", "optional"),
    ("mandatory", "optional"),
    ("required", "optional"),
    ("join", "leave"),
    ("pause", "resume"),
    ("busy", "quiet"),
    ("benefit", "drawback"),
    ("advantage", "disadvantage"),
    ("pro", "con"),
    ("cover", "exclude"),
    ("increased", "decreased"),
    ("closed", "open"),
    ("win", "lose"),
    ("won", "lost"),
    ("success", "failure"),
    ("safe", "dangerous"),
    ("good", "bad"),
    ("upload", "download"),
    ("credit", "debit"),
    ("charge", "refund"),
    ("borrow", "lend"),
    ("mute", "unmute"),
    ("arrival", "departure"),
    ("online", "offline"),
    ("online", "paper"),
    ("home", "abroad"),
    ("old", "new"),
    ("new", "used"),
    ("inside", "outside"),
    ("with", "without"),
    ("add", "delete"),
    ("create", "delete"),
    ("warm", "cool"),
    ("heating", "cooling"),
    ("fast", "slow"),
    ("early", "late"),
    ("start", "end"),
    ("begin", "end"),
    ("long", "short"),
    ("large", "small"),
    ("big", "small"),
    ("plus", "minus"),
    ("sum", "difference"),
    ("subtract", "add"),
    ("multiply", "divide"),
    ("area", "perimeter"),
    ("area", "circumference"),
    ("area", "volume"),
    ("sunrise", "sunset"),
    ("eat", "avoid"),
];

/// Spellings of one thing, and forms that mean the same unit.
const ALIASES: &[(&str, &str)] = &[
    ("daily", "day"),
    ("weekly", "week"),
    ("monthly", "month"),
    ("yearly", "year"),
    ("annual", "year"),
    ("annually", "year"),
    ("hourly", "hour"),
    ("lbs", "lb"),
    ("pound", "lb"),
    ("kilometer", "km"),
    ("kilometre", "km"),
    ("kilogram", "kg"),
    ("gram", "g"),
    ("meter", "m"),
    ("metre", "m"),
    ("liter", "litre"),
    ("millilitre", "ml"),
    ("milliliter", "ml"),
    ("centimetre", "cm"),
    ("centimeter", "cm"),
    ("millimetre", "mm"),
    ("millimeter", "mm"),
    ("ounce", "oz"),
    ("kilowatt", "kw"),
    ("km/h", "kph"),
    ("mi/h", "mph"),
    ("gigabyte", "gb"),
    ("megabyte", "mb"),
    ("terabyte", "tb"),
    ("kilobyte", "kb"),
    ("usd", "dollar"),
    ("eur", "euro"),
    ("kid", "child"),
    ("children", "child"),
    ("grown-up", "adult"),
    ("quickest", "fastest"),
    ("quicker", "faster"),
    ("biggest", "largest"),
    ("bigger", "larger"),
    ("closest", "nearest"),
    ("furthest", "farthest"),
    ("priciest", "most-expensive"),
    ("pricier", "more-expensive"),
    ("a.m", "am"),
    ("p.m", "pm"),
];

/// Words a trailing `s` does not make plural.
const NOT_PLURAL: &[&str] = &[
    "this", "its", "is", "was", "has", "does", "plus", "bus", "gas", "yes", "lbs", "less", "news",
    "series", "always", "us", "various", "previous", "bonus", "status", "campus", "virus",
    "canvas", "chaos", "analysis", "basis", "thesis", "crisis", "gps", "ios", "aws", "sms", "dns",
    "https", "mrs", "ms", "sales", "whereas", "perhaps",
];

fn singular(w: &str) -> String {
    if let Some(stem) = w.strip_suffix("ies")
        && w.len() > 4
    {
        return format!("{stem}y");
    }
    if w.len() > 3
        && w.ends_with('s')
        && !w.ends_with("ss")
        && !w.ends_with("'s")
        && !w.ends_with("us")
        && !NOT_PLURAL.contains(&w)
    {
        return w[..w.len() - 1].to_string();
    }
    w.to_string()
}

fn alias(w: &str) -> String {
    ALIASES
        .iter()
        .find(|(from, _)| *from == w)
        .map_or_else(|| w.to_string(), |(_, to)| (*to).to_string())
}

/// A question's words, normalized.
pub(crate) fn words(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for raw in text.split_whitespace() {
        let raw = raw.replace('\u{2019}', "'").to_lowercase();
        let word = raw.trim_matches(|c: char| !c.is_alphanumeric() && c != '\'' && c != '-');
        let word = word.trim_matches(|c: char| c == '\'' || c == '-');
        if word.is_empty() {
            continue;
        }
        if word == "cannot" {
            out.extend(["can".to_string(), "not".to_string()]);
            continue;
        }
        if let Some(base) = word.strip_suffix("n't") {
            let base = match word {
                "can't" => "can",
                "won't" => "will",
                "shan't" => "shall",
                _ => base,
            };
            out.extend([base.to_string(), "not".to_string()]);
            continue;
        }
        // Plural first ("kilometres" → "kilometre"), then the spelling ("km").
        let w = alias(&singular(&alias(word)));
        // "most expensive" is one comparative, as is "least expensive" ("cheapest").
        let joined = match (out.last().map(String::as_str), w.as_str()) {
            (Some("most"), "expensive") => Some("most-expensive"),
            (Some("more"), "expensive") => Some("more-expensive"),
            (Some("least"), "expensive") => Some("cheapest"),
            (Some("less"), "expensive") => Some("cheaper"),
            _ => None,
        };
        match joined {
            Some(j) => {
                out.pop();
                out.push(j.to_string());
            }
            None => out.push(w),
        }
    }
    out
}

/// Words ending in `-est` that are not superlatives.
const NOT_SUPERLATIVE: &[&str] = &[
    "interest", "request", "suggest", "honest", "harvest", "forest", "contest", "protest",
    "digest", "invest", "arrest", "manifest", "modest", "priest", "guest", "test", "rest", "best",
    "west", "nest", "chest", "quest", "pest", "vest", "zest", "crest", "behest",
];

/// The index of the comparatives' class in [`CLASSES`].
fn comparatives() -> usize {
    CLASSES
        .iter()
        .position(|(d, _)| *d == Difference::Comparative)
        .unwrap_or(CLASSES.len())
}

/// Every class word, with the classes it is in (built once).
static CLASS_OF: LazyLock<HashMap<&'static str, Vec<(usize, Difference)>>> = LazyLock::new(|| {
    let mut map: HashMap<&'static str, Vec<(usize, Difference)>> = HashMap::new();
    for (i, (kind, words)) in CLASSES.iter().enumerate() {
        for w in words.split_whitespace() {
            map.entry(w).or_default().push((i, *kind));
        }
    }
    map
});

fn classes_of(word: &str) -> impl Iterator<Item = (usize, Difference)> + '_ {
    // Superlatives not listed ("healthiest", "brightest") are comparatives too.
    let superlative = word.len() >= 6
        && word.ends_with("est")
        && word.chars().all(|c| c.is_ascii_lowercase())
        && !NOT_SUPERLATIVE.contains(&word);
    CLASS_OF
        .get(word)
        .into_iter()
        .flatten()
        .copied()
        .chain(superlative.then(|| (comparatives(), Difference::Comparative)))
}

/// What `a` and `b` differ by among the attributes above, if anything.
pub fn differ(a: &str, b: &str) -> Option<Difference> {
    let a: BTreeSet<String> = words(a).into_iter().collect();
    let b: BTreeSet<String> = words(b).into_iter().collect();
    let only_a: Vec<&str> = a.difference(&b).map(String::as_str).collect();
    let only_b: Vec<&str> = b.difference(&a).map(String::as_str).collect();
    for (one, other) in [(&only_a, &only_b), (&only_b, &only_a)] {
        for w in one.iter() {
            let affixed = NEGATING_PREFIXES.iter().any(|p| {
                w.strip_prefix(p)
                    .is_some_and(|stem| stem.len() >= 3 && other.contains(&stem))
            });
            if affixed || NEGATIVE.contains(w) {
                return Some(Difference::Negation);
            }
        }
    }
    let classes_b: Vec<usize> = only_b
        .iter()
        .flat_map(|y| classes_of(y).map(|(c, _)| c))
        .collect();
    for x in &only_a {
        for (class, kind) in classes_of(x) {
            if classes_b.contains(&class) {
                return Some(kind);
            }
        }
    }
    OPPOSITES
        .iter()
        .any(|(x, y)| {
            (only_a.contains(x) && only_b.contains(y)) || (only_a.contains(y) && only_b.contains(x))
        })
        .then_some(Difference::Contrast)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(a: &str, b: &str) -> Option<Difference> {
        differ(a, b)
    }

    #[test]
    fn negation_by_affix_or_by_a_negating_word() {
        assert_eq!(
            d(
                "Is ibuprofen safe with alcohol?",
                "Is ibuprofen unsafe with alcohol?"
            ),
            Some(Difference::Negation)
        );
        assert_eq!(
            d(
                "Which fees apply?",
                "Which fees apply except the monthly one?"
            ),
            Some(Difference::Negation)
        );
        assert_eq!(
            d(
                "Which foods should I eat before surgery?",
                "Which foods should I avoid before surgery?"
            ),
            Some(Difference::Negation)
        );
        // Normalized by the guard: not a difference.
        assert_eq!(d("I can't log in", "I cannot log in"), None);
        assert_eq!(d("Why won't it start?", "Why will it not start?"), None);
    }

    #[test]
    fn dates_units_and_comparatives() {
        assert_eq!(
            d("Is there a shuttle at 5 am?", "Is there a shuttle at 5 pm?"),
            Some(Difference::Date)
        );
        assert_eq!(
            d(
                "Can I take vacation during probation?",
                "Can I take vacation after probation?"
            ),
            Some(Difference::Date)
        );
        assert_eq!(
            d(
                "Can I take 3 days of leave?",
                "Can I take 3 weeks of leave?"
            ),
            Some(Difference::Unit)
        );
        assert_eq!(
            d(
                "Convert 10 miles to kilometres",
                "Convert 10 miles to pounds"
            ),
            Some(Difference::Unit)
        );
        assert_eq!(
            d(
                "What is the cheapest flight to Rome?",
                "What is the most expensive flight to Rome?"
            ),
            Some(Difference::Comparative)
        );
        assert_eq!(
            d(
                "Why was my bill higher last month?",
                "Why was my bill higher this month?"
            ),
            Some(Difference::Date)
        );
        assert_eq!(
            d(
                "What's the quickest sauce to make?",
                "What's the healthiest sauce to make?"
            ),
            Some(Difference::Comparative)
        );
        assert_eq!(
            d("Is the limit 70 mph?", "Is the limit 70 km/h?"),
            Some(Difference::Unit)
        );
        // The same unit or comparative spelled two ways is no difference.
        assert_eq!(
            d("Convert 10 kilometres to miles", "convert 10 km to miles"),
            None
        );
        assert_eq!(
            d("What's the daily limit?", "What is the limit per day?"),
            None
        );
        assert_eq!(
            d(
                "What's the quickest way to learn typing?",
                "What is the fastest way to learn typing?"
            ),
            None
        );
    }

    #[test]
    fn attributes_and_opposites() {
        assert_eq!(
            d(
                "What's the dose for adults?",
                "What's the dose for children?"
            ),
            Some(Difference::Attribute)
        );
        assert_eq!(
            d(
                "Sort the list in ascending order",
                "Sort the list in descending order"
            ),
            Some(Difference::Attribute)
        );
        assert_eq!(
            d(
                "What does the blue light mean?",
                "What does the red light mean?"
            ),
            Some(Difference::Attribute)
        );
        assert_eq!(
            d("How do I show my caller ID?", "How do I hide my caller ID?"),
            Some(Difference::Contrast)
        );
        assert_eq!(
            d(
                "How do I accept a meeting invite?",
                "How do I decline a meeting invite?"
            ),
            Some(Difference::Contrast)
        );
        // Rewording, fillers, plurals and typos are no difference.
        for (a, b) in [
            (
                "How do I mute notifications?",
                "How do I silence notifications?",
            ),
            (
                "Do you deliver on weekends?",
                "Is weekend delivery available?",
            ),
            (
                "Hi, how do I reset my password?",
                "how do i reset my password",
            ),
            (
                "What is the refund process?",
                "What are the refunds process?",
            ),
        ] {
            assert_eq!(d(a, b), None, "{a} / {b}");
        }
    }
}
