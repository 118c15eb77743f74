use std::time::Instant;
fn main() {
    let text = include_str!("../benches/pii.rs");
    let start = text.find("const TEXT: &str = \"").unwrap() + 20;
    let end = start + text[start..].find("\";").unwrap();
    let t = text[start..end].replace("\\\n", "");
    for e in [
        "EMAIL_ADDRESS",
        "PHONE_NUMBER",
        "CREDIT_CARD",
        "IBAN_CODE",
        "US_SSN",
        "IP_ADDRESS",
        "PERSON",
        "LOCATION",
    ] {
        let pii = trestle_guard::pii::Pii::new(&[e.to_string()], None).unwrap();
        let _ = pii.find(&t);
        let n = 200;
        let s = Instant::now();
        for _ in 0..n {
            std::hint::black_box(pii.find(&t));
        }
        println!(
            "{e:14} {:8.1} µs",
            s.elapsed().as_secs_f64() * 1e6 / n as f64
        );
    }
}
