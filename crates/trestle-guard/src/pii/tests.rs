//! The PII recognizers on hand-written cases, including the look-alikes they must leave alone.

use super::*;

fn found(text: &str) -> Vec<(String, String)> {
    let pii = Pii::new(&[], None).unwrap_or_else(|e| unreachable!("{e}"));
    pii.find(text)
        .into_iter()
        .map(|f| {
            let span: String = text.chars().skip(f.start).take(f.end - f.start).collect();
            (f.entity, span)
        })
        .collect()
}

fn has(text: &str, entity: &str, span: &str) -> bool {
    found(text).iter().any(|(e, s)| e == entity && s == span)
}

#[test]
fn validated_numbers_are_found() {
    assert!(has(
        "card 4111 1111 1111 1111 exp 12/27",
        "CREDIT_CARD",
        "4111 1111 1111 1111"
    ));
    assert!(has(
        "Pay to DE89 3704 0044 0532 0130 00 today",
        "IBAN_CODE",
        "DE89 3704 0044 0532 0130 00"
    ));
    assert!(has(
        "IBAN: GB82WEST12345698765432.",
        "IBAN_CODE",
        "GB82WEST12345698765432"
    ));
    assert!(has("my SSN is 536-22-1234", "US_SSN", "536-22-1234"));
    assert!(has(
        "login from 203.0.113.42 failed",
        "IP_ADDRESS",
        "203.0.113.42"
    ));
    assert!(has(
        "peer 2001:db8::8a2e:370:7334 connected",
        "IP_ADDRESS",
        "2001:db8::8a2e:370:7334"
    ));
    assert!(has(
        "write to jane.doe+billing@mail.example.co.uk please",
        "EMAIL_ADDRESS",
        "jane.doe+billing@mail.example.co.uk"
    ));
    assert!(has(
        "call me at +1 415-555-0132",
        "PHONE_NUMBER",
        "+1 415-555-0132"
    ));
    assert!(has(
        "Ruf mich an: +49 30 901820",
        "PHONE_NUMBER",
        "+49 30 901820"
    ));
    assert!(has(
        "phone (415) 555-0132",
        "PHONE_NUMBER",
        "(415) 555-0132"
    ));
}

#[test]
fn look_alikes_are_left_alone() {
    for text in [
        "order 4111 1111 1111 1112 shipped", // fails Luhn
        "tracking 1Z999AA10123456784",
        "version 10.0.19045 and 1.2.3.4.5",
        "invoice INV-2024-118833 dated 2024-03-15",
        "SSN-like 000-12-3456 and 666-12-3456 and 912-12-3456",
        "IBAN DE89 3704 0044 0532 0130 01 is a typo", // bad check digits
        "bind 0.0.0.0 and 127.0.0.1",
        "price $1,299.00 for SKU 55512345",
    ] {
        let f = found(text);
        let numeric: Vec<_> = f
            .iter()
            .filter(|(e, _)| e != "PERSON" && e != "LOCATION")
            .collect();
        assert!(numeric.is_empty(), "{text}: {f:?}");
    }
}

#[test]
fn names_and_places_from_cues_and_gazetteers() {
    assert!(has(
        "Please ask for Dr. Chidi Okafor at the desk",
        "PERSON",
        "Chidi Okafor"
    ));
    assert!(has(
        "Hi, my name is Priya Raman and I need help",
        "PERSON",
        "Priya Raman"
    ));
    assert!(has("Frau Weber hat angerufen", "PERSON", "Weber"));
    assert!(has("She moved to Lisbon last year", "LOCATION", "Lisbon"));
    assert!(has(
        "Ship it to 221B Baker Street, London",
        "LOCATION",
        "221B Baker Street, London"
    ));
    assert!(has(
        "Lieferung an Hauptstraße 12, 10115 Berlin",
        "LOCATION",
        "Hauptstraße 12, 10115 Berlin"
    ));
    assert!(
        !found("May I return the Apple Watch on Monday?")
            .iter()
            .any(|(e, _)| e == "PERSON")
    );
}

#[test]
fn context_words_raise_weak_candidates() {
    // Nine bare digits are an SSN only when the text says so.
    assert!(!has("ref 536221234 attached", "US_SSN", "536221234"));
    assert!(has(
        "social security number 536221234",
        "US_SSN",
        "536221234"
    ));
}

#[test]
fn unknown_entities_are_refused_and_offsets_are_characters() {
    assert!(Pii::new(&["EMAIL".into()], None).is_err());
    let pii = Pii::new(&["EMAIL_ADDRESS".into()], None).unwrap_or_else(|e| unreachable!("{e}"));
    let text = "Grüße — jürgen@example.de";
    let f = pii.find(text);
    assert_eq!(f.len(), 1);
    assert_eq!((f[0].start, f[0].end), (8, 25));
    assert_eq!(crate::redact(text, &f), "Grüße — <EMAIL_ADDRESS>");
}

#[test]
fn the_digit_gate_admits_every_character_the_patterns_digit_class_matches() {
    // The number patterns are skipped for texts without a digit: every character `\d`
    // matches must count as one, or a number in another script would be missed.
    let digit = regex::Regex::new(r"^\d$").unwrap_or_else(|e| unreachable!("{e}"));
    let mut buf = [0u8; 4];
    let missed: Vec<char> = (0..=char::MAX as u32)
        .filter_map(char::from_u32)
        .filter(|c| digit.is_match(c.encode_utf8(&mut buf)) && !super::has_digit(&c.to_string()))
        .collect();
    assert!(missed.is_empty(), "not seen as digits: {missed:?}");
    assert!(!super::has_digit(
        "Write a few sentences about bridges — über Brücken."
    ));
    // Fullwidth digits are still scanned (the card pattern's `\d` matches them).
    assert!(super::has_digit("カード ４１１１"));
}
