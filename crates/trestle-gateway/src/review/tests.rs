//! Each test runs once on a SQLite file and once on a fresh PostgreSQL database
//! (`NAME::sqlite`, `NAME::postgres`).

use super::*;

fn label(id: &str, criterion: &str, score: f64) -> Label {
    Label {
        id: id.into(),
        criterion: criterion.into(),
        score,
        rater: Some("ana".into()),
        category: Some("billing".into()),
        source: "trace".into(),
        a: None,
        b: None,
        comment: None,
    }
}

use crate::db::testing::{on_both_backends, postgres};

on_both_backends!(
    labels_round_trip_in_the_calibrate_format,
    labels_are_kept_all_or_none_in_the_order_given,
    labelled_items_are_found_by_source_prefix,
);

fn labels_round_trip_in_the_calibrate_format(db: Db) {
    let review = Review::new(Some(db));
    review
        .add(&[label("t1", "accuracy", 4.0), label("t1", "tone", 5.0)])
        .unwrap();
    assert!(review.add(&[label("t2", "accuracy", 9.0)]).is_err());
    assert!(review.add(&[label("t2", PREFERENCE, 0.5)]).is_err());
    let text = jsonl(&review.labels().unwrap());
    let read = trestle_eval::calibrate::read_labels(&text).unwrap();
    assert_eq!(read.len(), 2);
    assert_eq!(read[0].id, "t1");
    assert_eq!(read[0].criterion, "accuracy");
    assert_eq!(read[0].score, 4.0);
    assert_eq!(read[0].rater.as_deref(), Some("ana"));
    assert!(review.labelled("trace").unwrap().contains("t1"));
}

fn labels_are_kept_all_or_none_in_the_order_given(db: Db) {
    let review = Review::new(Some(db.clone()));
    assert!(review.labels().unwrap().is_empty());
    let preference = Label {
        source: "pair:run-a:run-b".into(),
        a: Some("run-a".into()),
        b: Some("run-b".into()),
        comment: Some("b is shorter".into()),
        rater: None,
        category: None,
        ..label("case-9", PREFERENCE, -1.0)
    };
    let batch: Vec<Label> = (0..300)
        .map(|i| label(&format!("t{i}"), "helpfulness", f64::from(i % 5 + 1)))
        .chain([preference.clone()])
        .collect();
    review.add(&batch).unwrap();
    // One bad label: none of the batch is kept, and the message says which rule.
    let e = review
        .add(&[label("x1", "tone", 3.0), label("", "tone", 3.0)])
        .unwrap_err();
    assert!(e.contains("`id` is empty"), "{e}");
    review.add(&[]).unwrap();
    // Read back in order, every field as given, also by another gateway on the same place.
    assert_eq!(review.labels().unwrap(), batch);
    assert_eq!(Review::new(Some(db)).labels().unwrap(), batch);
}

fn labelled_items_are_found_by_source_prefix(db: Db) {
    let review = Review::new(Some(db));
    let from = |id: &str, source: &str| Label {
        source: source.into(),
        ..label(id, "accuracy", 3.0)
    };
    review
        .add(&[
            from("c1", "eval:run-1"),
            from("c2", "eval:run-1"),
            from("c1", "eval:run-1"),
            from("c3", "eval:run-2"),
            from("t1", "trace"),
        ])
        .unwrap();
    let set = |items: &[&str]| items.iter().map(|s| s.to_string()).collect::<HashSet<_>>();
    assert_eq!(review.labelled("eval:run-1").unwrap(), set(&["c1", "c2"]));
    assert_eq!(review.labelled("eval:").unwrap(), set(&["c1", "c2", "c3"]));
    // SQLite's LIKE ignores ASCII case; PostgreSQL answers the same.
    assert_eq!(review.labelled("EVAL:RUN-2").unwrap(), set(&["c3"]));
    assert!(review.labelled("pair:").unwrap().is_empty());
}

#[test]
fn without_a_store_review_says_what_to_enable() {
    let review = Review::new(None);
    let e = review.add(&[label("t1", "tone", 3.0)]).unwrap_err();
    assert!(e.contains("[store] enabled"), "{e}");
    assert!(review.labels().is_err() && review.labelled("trace").is_err());
}

/// `build_state` runs inside the async runtime: PostgreSQL is migrated on a thread of its
/// own, not on the runtime's.
#[test]
fn on_postgres_review_opens_from_inside_the_async_runtime() {
    let Some(db) = postgres() else {
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let review = Arc::new(rt.block_on(async { Review::new(Some(db)) }));
    let r = review.clone();
    rt.block_on(async move {
        tokio::task::spawn_blocking(move || r.add(&[label("t1", "tone", 4.0)])).await
    })
    .unwrap()
    .unwrap();
    assert_eq!(review.labels().unwrap().len(), 1);
}
