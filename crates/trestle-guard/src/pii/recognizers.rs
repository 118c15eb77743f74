//! The pattern recognizers: each finds candidates with a pattern and keeps those that pass
//! their entity's validation ([`super::checks`]). Scores follow Presidio's scale: 1.0 for a
//! checksum-validated number, lower where the format alone is weak evidence (context words
//! then raise it, see [`super::context_boost`]).

use std::net::{Ipv4Addr, Ipv6Addr};

use phonenumber::country::Id as Region;

use super::{Entity, Hit, Pattern, checks, pattern};

/// 12 to 19 digits, optionally grouped by single spaces or dashes.
static CARD: Pattern = Pattern::new(|| pattern(r"(?-u:\b)\d(?:[ -]?\d){11,18}(?-u:\b)"));
/// Two letters, two digits, then 11–30 letters or digits, compact or in groups of four.
static IBAN: Pattern = Pattern::new(|| {
    pattern(r"(?i)(?-u:\b)[a-z]{2}\d{2}(?:[ ]?[a-z0-9]{4}){2,7}(?:[ ]?[a-z0-9]{1,4})?(?-u:\b)")
});
static IPV4: Pattern = Pattern::new(|| {
    pattern(r"(?-u:\b)(?:25[0-5]|2[0-4]\d|1?\d?\d)(?:\.(?:25[0-5]|2[0-4]\d|1?\d?\d)){3}(?-u:\b)")
});
/// Anything IPv6-shaped; `Ipv6Addr` decides.
static IPV6: Pattern = Pattern::new(|| pattern(r"(?i)[0-9a-f:]*:[0-9a-f:]*:[0-9a-f:.]*[0-9a-f]"));
static SSN: Pattern =
    Pattern::new(|| pattern(r"(?-u:\b)(\d{3})([- ]?)(\d{2})([- ]?)(\d{4})(?-u:\b)"));
/// Phone-shaped runs: an optional `+`, then digits with spaces, dots, dashes, slashes and
/// parentheses, 7 to 20 characters; the phone number library decides.
static PHONE: Pattern = Pattern::new(|| {
    pattern(
        r"(?:\+|(?-u:\b)00|\(|(?-u:\b))\d[\d ().\-/]{5,22}\d(?:\s?(?:x|ext\.?)\s?\d{1,5})?(?-u:\b)",
    )
});

pub(super) fn emails(text: &str, out: &mut Vec<Hit>) {
    // From each `@`, the local part to the left and the domain to the right, by character
    // class: no pattern has to scan the whole text for where a local part might start.
    let local = |c: char| c.is_alphanumeric() || matches!(c, '.' | '_' | '%' | '+' | '\'' | '-');
    let domain = |c: char| c.is_alphanumeric() || matches!(c, '.' | '-');
    for (at, _) in text.match_indices('@') {
        let before = &text[..at];
        let start = before
            .char_indices()
            .rev()
            .take_while(|(_, c)| local(*c))
            .last()
            .map_or(at, |(i, _)| i);
        // The local part starts with a letter or digit.
        let start = start
            + text[start..at]
                .find(|c: char| c.is_alphanumeric())
                .unwrap_or(at - start);
        let after = &text[at + 1..];
        let len = after.find(|c: char| !domain(c)).unwrap_or(after.len());
        let dom = after[..len].trim_end_matches(['.', '-']);
        let end = at + 1 + dom.len();
        let tld = dom.rsplit('.').next().unwrap_or("");
        let valid = start < at
            && at - start <= 64
            && dom.contains('.')
            && !dom.starts_with(['.', '-'])
            && !dom.contains("..")
            && tld.chars().count() >= 2
            && tld.chars().all(char::is_alphabetic);
        // `git@github.com:org/repo` is an SSH address, not a mailbox.
        let scp = text[end..].starts_with(':')
            && text[end + 1..].starts_with(|c: char| c.is_alphanumeric() || c == '/');
        if valid && !scp {
            out.push(hit(Entity::EmailAddress, start, end, 1.0));
        }
    }
}

fn hit(entity: Entity, start: usize, end: usize, score: f64) -> Hit {
    Hit {
        entity,
        start,
        end,
        score,
    }
}

/// Whether the candidate at `start..end` is part of a longer identifier (`INV-2024-118833`,
/// `ORD_5551234`, `#4111…`): glued to letters or digits by `-`, `_`, `/` or `#`.
fn in_identifier(text: &str, start: usize, end: usize) -> bool {
    let before = text[..start].chars().rev().take(2).collect::<Vec<_>>();
    let after = text[end..].chars().take(2).collect::<Vec<_>>();
    let glue = |c: char| matches!(c, '-' | '_' | '/' | '#');
    let glued_before = match before.as_slice() {
        [g, w, ..] => glue(*g) && w.is_alphanumeric(),
        [g] => *g == '#',
        _ => false,
    } || before
        .first()
        .is_some_and(|c| c.is_alphanumeric() || *c == '#');
    let glued_after = match after.as_slice() {
        [g, w, ..] => glue(*g) && w.is_alphanumeric(),
        _ => false,
    } || after.first().is_some_and(|c| c.is_alphanumeric());
    glued_before || glued_after
}

fn digits(s: &str) -> Vec<u8> {
    s.bytes().filter(u8::is_ascii_digit).collect()
}

/// A separator is used consistently: all groups split by the same character, or none.
fn consistent_separators(s: &str) -> bool {
    let seps: Vec<char> = s.chars().filter(|c| !c.is_ascii_digit()).collect();
    seps.windows(2).all(|w| w[0] == w[1])
}

pub(super) fn cards(text: &str, out: &mut Vec<Hit>) {
    for m in CARD.find_iter(text) {
        let d = digits(m.as_str());
        if (12..=19).contains(&d.len())
            && !in_identifier(text, m.start(), m.end())
            && consistent_separators(m.as_str())
            && checks::luhn(&d)
            && checks::card_network(&d)
        {
            out.push(hit(Entity::CreditCard, m.start(), m.end(), 1.0));
        }
    }
}

pub(super) fn ibans(text: &str, out: &mut Vec<Hit>) {
    for m in IBAN.find_iter(text) {
        let s = m.as_str();
        let Some(len) = checks::iban_length(&s[..2]) else {
            continue;
        };
        // Take the country's length of letters and digits: a following word the pattern
        // swallowed is left out.
        let mut compact = Vec::with_capacity(len);
        let mut end = 0;
        for (i, b) in s.bytes().enumerate() {
            if b != b' ' {
                compact.push(b.to_ascii_uppercase());
                end = i + 1;
            }
            if compact.len() == len {
                break;
            }
        }
        if compact.len() == len && checks::iban(&compact) {
            out.push(hit(Entity::IbanCode, m.start(), m.start() + end, 1.0));
        }
    }
}

pub(super) fn ips(text: &str, out: &mut Vec<Hit>) {
    for m in IPV4.find_iter(text) {
        let Ok(ip) = m.as_str().parse::<Ipv4Addr>() else {
            continue;
        };
        // A dotted run longer than four parts is a version or an OID, not an address; a
        // `/n` suffix names a network; unspecified, loopback and netmask-shaped addresses
        // name no one.
        let rest = &text[m.end()..];
        let before = &text[..m.start()];
        let dotted = rest.starts_with('.') && rest[1..].starts_with(|c: char| c.is_ascii_digit())
            || before.ends_with('.');
        let network = rest.starts_with('/') && rest[1..].starts_with(|c: char| c.is_ascii_digit());
        let version = preceded_by_version_word(text, m.start());
        let meaningless = version
            || ip.is_unspecified()
            || ip.is_loopback()
            || ip.is_broadcast()
            || ip.octets()[0] == 255;
        if !dotted && !network && !meaningless {
            out.push(hit(Entity::IpAddress, m.start(), m.end(), 0.9));
        }
    }
    for m in IPV6.find_iter(text) {
        let s = m.as_str().trim_start_matches(':');
        let start = m.end() - s.len();
        let Ok(ip) = s.parse::<Ipv6Addr>() else {
            continue;
        };
        if s.len() >= 6 && !ip.is_loopback() && !ip.is_unspecified() {
            out.push(hit(Entity::IpAddress, start, m.end(), 0.9));
        }
    }
}

/// A dotted quad after "firmware", "version", "v" or "build" is a version number.
fn preceded_by_version_word(text: &str, start: usize) -> bool {
    let before = text[..start].trim_end_matches([' ', ':', '(', '=']);
    let word: String = before
        .chars()
        .rev()
        .take_while(|c| c.is_alphabetic())
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect::<String>()
        .to_lowercase();
    matches!(
        word.as_str(),
        "v" | "ver"
            | "version"
            | "firmware"
            | "fw"
            | "build"
            | "release"
            | "rev"
            | "sdk"
            | "versión"
            | "fassung"
    )
}

pub(super) fn ssns(text: &str, out: &mut Vec<Hit>) {
    for c in SSN.captures_iter(text) {
        let (Some(m), Some(a), Some(s1), Some(g), Some(s2), Some(s)) =
            (c.get(0), c.get(1), c.get(2), c.get(3), c.get(4), c.get(5))
        else {
            continue;
        };
        let num = |m: regex::Match| m.as_str().parse::<u32>().unwrap_or(0);
        if s1.as_str() != s2.as_str()
            || !checks::ssn(num(a), num(g), num(s))
            || in_identifier(text, m.start(), m.end())
        {
            continue;
        }
        // Dashed is the SSN's own format; nine bare digits are weak evidence without context.
        let score = match s1.as_str() {
            "-" => 0.6,
            " " => 0.4,
            _ => 0.3,
        };
        out.push(hit(Entity::UsSsn, m.start(), m.end(), score));
    }
}

/// `(415) 555-0132`, `415-555-0132`, `1-415-555-0132`: the North American plan's 3-3-4
/// shape (tried as a US number only; other shapes try every region).
fn nanp_shape(s: &str) -> bool {
    let groups: Vec<usize> = s
        .split(|c: char| !c.is_ascii_digit())
        .filter(|g| !g.is_empty())
        .map(str::len)
        .collect();
    matches!(groups.as_slice(), [3, 3, 4] | [1, 3, 3, 4]) && !s.starts_with('0')
}

/// Regions a number without a `+` is tried in, most likely first.
const REGIONS: [Region; 8] = [
    Region::US,
    Region::GB,
    Region::DE,
    Region::FR,
    Region::ES,
    Region::IN,
    Region::IT,
    Region::NL,
];

pub(super) fn phones(text: &str, out: &mut Vec<Hit>) {
    for m in PHONE.find_iter(text) {
        let s = m.as_str();
        let d = digits(s);
        if !(7..=15).contains(&d.len()) || looks_like_a_date_or_version(s) || dotted_like_an_ip(s) {
            continue;
        }
        let (start, s) = trim_phone(m.start(), s);
        if in_identifier(text, start, start + s.len()) || not_a_phone_shape(s) {
            continue;
        }
        let international = s.starts_with('+') || s.starts_with("00");
        let valid = if international {
            let normalized = s.strip_prefix("00").map(|r| format!("+{r}"));
            // A written country code is strong evidence: validity alone decides, however
            // the rest is grouped.
            phonenumber::parse(None, normalized.as_deref().unwrap_or(s))
                .is_ok_and(|n| phonenumber::is_valid(&n))
        } else if nanp_shape(s) {
            phonenumber::parse(Some(Region::US), s)
                .is_ok_and(|n| phonenumber::is_valid(&n) && grouped_as_written(s, &n))
        } else {
            REGIONS.iter().any(|r| {
                phonenumber::parse(Some(*r), s)
                    .is_ok_and(|n| phonenumber::is_valid(&n) && grouped_as_written(s, &n))
            })
        };
        if valid {
            // Digits alone, with no `+` and no grouping, are weak evidence without context.
            let grouped = s.contains([' ', '-', '.', '(', '/']);
            let score = match (international, grouped) {
                (true, _) => 0.75,
                (false, true) => 0.55,
                (false, false) => 0.4,
            };
            out.push(hit(Entity::PhoneNumber, start, start + s.len(), score));
        }
    }
}

/// libphonenumber's "strict grouping", for numbers without a country code: where the
/// candidate breaks its digits into groups, the number's own national format breaks them too
/// (`415-555-0132` is grouped as a US number is; `2020-10-22 01` is not). Digits without
/// separators pass.
fn grouped_as_written(candidate: &str, number: &phonenumber::PhoneNumber) -> bool {
    fn boundaries(groups: &[usize]) -> Vec<usize> {
        groups
            .iter()
            .scan(0, |acc, g| {
                *acc += g;
                Some(*acc)
            })
            .collect()
    }
    let groups = |s: &str| -> Vec<usize> {
        s.split(|c: char| !c.is_ascii_digit())
            .filter(|g| !g.is_empty())
            .map(str::len)
            .collect()
    };
    let mut written = groups(candidate);
    let national = number.national().to_string();
    let all_digits: usize = written.iter().sum();
    // A national prefix (a leading 0) that the national number does not count.
    if all_digits > national.len()
        && let Some(first) = written.first_mut()
    {
        *first = first.saturating_sub(all_digits - national.len());
    }
    written.retain(|g| *g > 0);
    if written.len() <= 1 {
        return true;
    }
    let formatted = phonenumber::format(number)
        .mode(phonenumber::Mode::National)
        .to_string();
    let mut own = groups(&formatted);
    let own_digits: usize = own.iter().sum();
    if own_digits > national.len()
        && let Some(first) = own.first_mut()
    {
        *first = first.saturating_sub(own_digits - national.len());
    }
    own.retain(|g| *g > 0);
    let own = boundaries(&own);
    let written = boundaries(&written);
    written[..written.len() - 1].iter().all(|b| own.contains(b))
}

/// Groupings that belong to other numbers: 3-2-4 is the SSN's, and three or more groups of
/// four digits are card, account or national-id numbers.
fn not_a_phone_shape(s: &str) -> bool {
    if s.starts_with('+') {
        return false;
    }
    let groups: Vec<usize> = s
        .split(|c: char| !c.is_ascii_digit())
        .filter(|g| !g.is_empty())
        .map(str::len)
        .collect();
    groups == [3, 2, 4] || (groups.len() >= 3 && groups.iter().all(|g| *g == 4))
}

/// Drops an unbalanced leading `(`/trailing `)` and trailing separators from a candidate.
fn trim_phone(start: usize, s: &str) -> (usize, &str) {
    let mut s = s.trim_end_matches(['-', '.', '/', ' ']);
    let mut start = start;
    if s.starts_with('(') && !s.contains(')') {
        s = &s[1..];
        start += 1;
    }
    (start, s)
}

/// `203.0.113.42`, `10.0.19045`: dotted groups with a group of one digit, or four dotted
/// groups of at most three (an address).
fn dotted_like_an_ip(s: &str) -> bool {
    if !s.contains('.') || s.contains(' ') {
        return false;
    }
    let groups: Vec<&str> = s.split('.').collect();
    groups.iter().any(|g| g.len() == 1)
        || (groups.len() == 4 && groups.iter().all(|g| g.len() <= 3))
}

/// `2024-03-15`, `15/03/2024`, `10.0.19045`, `1.2.3.4`: digits split by dots or slashes into
/// date- or version-shaped groups.
fn looks_like_a_date_or_version(s: &str) -> bool {
    let groups: Vec<&str> = s.split(['.', '/', '-']).collect();
    let price = s
        .rsplit_once(['.', ','])
        .is_some_and(|(_, cents)| cents.len() == 2)
        && s.matches(['.', ',']).count() == 1;
    let year_first = s.len() > 5
        && (s.starts_with("19") || s.starts_with("20"))
        && s[4..].starts_with(['-', '/', '.']);
    // A date: a four-digit year and two groups of one or two digits.
    let date = groups.len() == 3
        && groups.iter().all(|g| g.chars().all(|c| c.is_ascii_digit()))
        && groups.iter().filter(|g| g.len() == 4).count() == 1
        && groups.iter().filter(|g| (1..=2).contains(&g.len())).count() == 2;
    price || year_first || date
}
