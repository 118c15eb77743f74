//! The validation rules a candidate must pass: checksums and numbering rules, so that order
//! numbers, tracking ids and version strings that look like PII are not reported.

/// The Luhn checksum of a string of ASCII digits.
pub fn luhn(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    for (i, d) in digits.iter().rev().enumerate() {
        let mut v = u32::from(d - b'0');
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    sum.is_multiple_of(10)
}

/// Whether a card number's prefix and length belong to a card network (Visa, Mastercard,
/// American Express, Discover, JCB, Diners, UnionPay, Maestro).
pub fn card_network(digits: &[u8]) -> bool {
    let n = digits.len();
    let prefix = |k: usize| -> u32 {
        digits[..k.min(n)]
            .iter()
            .fold(0, |acc, d| acc * 10 + u32::from(d - b'0'))
    };
    match digits.first() {
        Some(b'4') => matches!(n, 13 | 16 | 19),
        Some(b'5') => (51..=55).contains(&prefix(2)) && n == 16 || maestro(prefix(2), n),
        Some(b'2') => (2221..=2720).contains(&prefix(4)) && n == 16,
        Some(b'3') => match prefix(2) {
            34 | 37 => n == 15,
            35 => (3528..=3589).contains(&prefix(4)) && (16..=19).contains(&n),
            36 | 38 | 39 | 30 => (14..=19).contains(&n),
            _ => false,
        },
        Some(b'6') => {
            prefix(4) == 6011
                || (644..=649).contains(&prefix(3))
                || prefix(2) == 65
                || prefix(2) == 62
                || maestro(prefix(2), n)
        }
        _ => false,
    }
}

fn maestro(two: u32, n: usize) -> bool {
    matches!(two, 50 | 56..=58 | 63 | 67) && (12..=19).contains(&n)
}

/// IBAN lengths by country (ISO 13616 registry).
const IBAN_LENGTHS: &[(&str, usize)] = &[
    ("AD", 24),
    ("AE", 23),
    ("AL", 28),
    ("AT", 20),
    ("AZ", 28),
    ("BA", 20),
    ("BE", 16),
    ("BG", 22),
    ("BH", 22),
    ("BR", 29),
    ("CH", 21),
    ("CR", 22),
    ("CY", 28),
    ("CZ", 24),
    ("DE", 22),
    ("DK", 18),
    ("DO", 28),
    ("EE", 20),
    ("EG", 29),
    ("ES", 24),
    ("FI", 18),
    ("FO", 18),
    ("FR", 27),
    ("GB", 22),
    ("GE", 22),
    ("GI", 23),
    ("GL", 18),
    ("GR", 27),
    ("GT", 28),
    ("HR", 21),
    ("HU", 28),
    ("IE", 22),
    ("IL", 23),
    ("IS", 26),
    ("IT", 27),
    ("JO", 30),
    ("KW", 30),
    ("KZ", 20),
    ("LB", 28),
    ("LI", 21),
    ("LT", 20),
    ("LU", 20),
    ("LV", 21),
    ("MC", 27),
    ("MD", 24),
    ("ME", 22),
    ("MK", 19),
    ("MR", 27),
    ("MT", 31),
    ("MU", 30),
    ("NL", 18),
    ("NO", 15),
    ("PK", 24),
    ("PL", 28),
    ("PS", 29),
    ("PT", 25),
    ("QA", 29),
    ("RO", 24),
    ("RS", 22),
    ("SA", 24),
    ("SE", 24),
    ("SI", 19),
    ("SK", 24),
    ("SM", 27),
    ("TN", 24),
    ("TR", 26),
    ("UA", 29),
    ("VG", 24),
    ("XK", 20),
];

/// The length of an IBAN of `country` (two letters, any case).
pub fn iban_length(country: &str) -> Option<usize> {
    IBAN_LENGTHS
        .iter()
        .find(|(c, _)| c.eq_ignore_ascii_case(country))
        .map(|(_, len)| *len)
}

/// Whether `compact` (no spaces, upper case) is an IBAN: a known country, its length, and
/// the ISO 7064 mod-97 check.
pub fn iban(compact: &[u8]) -> bool {
    if compact.len() < 15 || !compact.iter().all(u8::is_ascii_alphanumeric) {
        return false;
    }
    let Ok(country) = std::str::from_utf8(&compact[..2]) else {
        return false;
    };
    let Some((_, len)) = IBAN_LENGTHS.iter().find(|(c, _)| *c == country) else {
        return false;
    };
    if compact.len() != *len || !compact[2..4].iter().all(u8::is_ascii_digit) {
        return false;
    }
    let mut rem: u32 = 0;
    for &c in compact[4..].iter().chain(&compact[..4]) {
        let v = if c.is_ascii_digit() {
            u32::from(c - b'0')
        } else {
            u32::from(c.to_ascii_uppercase() - b'A') + 10
        };
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    rem == 1
}

/// The Social Security Administration's rules: area not 000, 666 or 900–999; group not 00;
/// serial not 0000; and not a number the SSA voided for advertising.
pub fn ssn(area: u32, group: u32, serial: u32) -> bool {
    let voided = matches!(
        (area, group, serial),
        (78, 5, 1120) | (219, 9, 9999) | (123, 45, 6789)
    );
    area != 0 && area != 666 && area < 900 && group != 0 && serial != 0 && !voided
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luhn_and_networks() {
        assert!(luhn(b"4111111111111111"));
        assert!(!luhn(b"4111111111111112"));
        assert!(card_network(b"4111111111111111"));
        assert!(card_network(b"378282246310005"));
        assert!(card_network(b"5555555555554444"));
        assert!(card_network(b"6011111111111117"));
        assert!(
            !card_network(b"1234567812345670"),
            "no network starts with 1"
        );
    }

    #[test]
    fn iban_mod_97() {
        assert!(iban(b"DE89370400440532013000"));
        assert!(iban(b"GB82WEST12345698765432"));
        assert!(iban(b"FR1420041010050500013M02606"));
        assert!(!iban(b"DE89370400440532013001"), "bad check digits");
        assert!(!iban(b"DE8937040044053201300"), "wrong length for DE");
        assert!(!iban(b"ZZ89370400440532013000"), "no such country");
    }

    #[test]
    fn ssn_rules() {
        assert!(ssn(536, 22, 1234));
        assert!(!ssn(0, 12, 3456));
        assert!(!ssn(666, 12, 3456));
        assert!(!ssn(912, 12, 3456));
        assert!(!ssn(536, 0, 1234));
        assert!(!ssn(536, 22, 0));
        assert!(!ssn(78, 5, 1120), "the Woolworth wallet card");
    }
}
