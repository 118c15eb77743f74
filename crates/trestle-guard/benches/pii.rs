//! The `pii` guardrail on 1 KB of text: the stage budget is 200 µs p50 without a
//! named-entity model (issue 10). Run: `cargo bench -p trestle-guard --bench pii`.

use criterion::{Criterion, criterion_group, criterion_main};
use trestle_guard::pii::Pii;

/// About 1 KB of support-chat text with a few entities and look-alikes.
const TEXT: &str = "Hi, my name is Priya Raman and I ordered the Apple Watch (order ORD-2024-118833) on \
2024-03-15. It was supposed to ship from Berlin but the tracking id 1Z999AA10123456784 shows \
nothing since Monday. You can reach me at priya.raman@example.com or +1 415-555-0132, or at \
work on (212) 555-0199 ext. 42. I paid with the card ending 4111 1111 1111 1111 and the \
refund should go to DE89 3704 0044 0532 0130 00. My previous ticket was INC2012199 and the \
agent, Dr. Chidi Okafor, said the firmware 4.17.0.68 update would fix the sync issue. The \
router at 203.0.113.42 still drops the connection every few minutes, version 10.0.19045 of the \
app is installed, and the price was $1,299.00 including tax. Please ship the replacement to \
221B Baker Street, London, before Friday; I move to Lisbon next month. Thanks a lot for your \
help, and sorry for the long message — I have been waiting for almost three weeks now.";

fn bench(c: &mut Criterion) {
    let pii = Pii::new(&[], None).unwrap_or_else(|e| unreachable!("{e}"));
    let _ = pii.find(TEXT);
    let mut group = c.benchmark_group("guard");
    group.bench_function(format!("pii_all_entities_{}_bytes", TEXT.len()), |b| {
        b.iter(|| pii.find(std::hint::black_box(TEXT)))
    });
    let numeric = Pii::new(
        &[
            "EMAIL_ADDRESS",
            "CREDIT_CARD",
            "IBAN_CODE",
            "US_SSN",
            "IP_ADDRESS",
        ]
        .map(String::from),
        None,
    )
    .unwrap_or_else(|e| unreachable!("{e}"));
    group.bench_function("pii_checksummed_entities_only", |b| {
        b.iter(|| numeric.find(std::hint::black_box(TEXT)))
    });
    for entity in trestle_guard::pii::Entity::NAMES {
        let one = Pii::new(&[entity.to_string()], None).unwrap_or_else(|e| unreachable!("{e}"));
        group.bench_function(format!("pii_{entity}"), |b| {
            b.iter(|| one.find(std::hint::black_box(TEXT)))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
