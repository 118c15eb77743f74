//! The human review queue: score a trace or an eval case on the rubric, or pick the better
//! of two eval runs' answers to the same case without knowing which run wrote which.
//! Labels go to [`crate::review`], read back by `GET /v1/review/labels`.

use axum::Form;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;

use super::{enc, error_page, flags, layout, read};
use crate::review::{Label, PREFERENCE, RUBRIC};
use crate::state::SharedState;
use crate::store::TraceFilter;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct QueueQuery {
    /// `flagged` (anomalies, negative feedback, or a failed app span; the default),
    /// `recent`, or `eval:RUN`.
    source: Option<String>,
    /// The item just labelled (for the confirmation).
    done: Option<String>,
}

/// One thing to score.
struct Item {
    id: String,
    category: Option<String>,
    question: String,
    answer: String,
    context: Markup,
}

const SOURCES: [(&str, &str); 2] = [
    (
        "flagged",
        "traces with anomalies, negative feedback or failed tool spans",
    ),
    ("recent", "recent traces"),
];

/// The next unlabelled trace from `source`, and how many are left.
async fn next_trace(state: &SharedState, source: &str) -> Result<(Option<Item>, usize), Response> {
    let s = state.clone();
    let source = source.to_string();
    let labelled = match tokio::task::spawn_blocking(move || s.review.labelled("trace")).await {
        Ok(Ok(l)) => l,
        Ok(Err(e)) => {
            return Err(error_page(
                StatusCode::BAD_REQUEST,
                "Review unavailable",
                &e,
            ));
        }
        Err(e) => {
            return Err(error_page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Review unavailable",
                &e.to_string(),
            ));
        }
    };
    read(state, move |store| {
        let mut rows = Vec::new();
        let base = TraceFilter {
            limit: Some(500),
            ..Default::default()
        };
        if source == "flagged" {
            rows.extend(store.list(&TraceFilter { flag: Some("any".into()), ..base.clone() })?);
            rows.extend(store.list(&TraceFilter { feedback: Some("negative".into()), ..base.clone() })?);
            for id in store.traces_with_failed_spans(100)? {
                rows.extend(store.list(&TraceFilter { trace_id: Some(id), ..base.clone() })?);
            }
            rows.sort_by_key(|r| std::cmp::Reverse(r.started_at_ms));
        } else {
            rows.extend(store.list(&base)?);
        }
        let mut seen = std::collections::HashSet::new();
        rows.retain(|r| !labelled.contains(&r.trace_id) && seen.insert(r.trace_id.clone()));
        let left = rows.len();
        let Some(first) = rows.first() else {
            return Ok((None, 0));
        };
        let trace = store.get(&first.trace_id)?.unwrap_or_default();
        let req = &trace["requests"][0];
        let item = Item {
            id: first.trace_id.clone(),
            category: Some(first.route.clone()),
            question: crate::store::question_text(&req["request"]).unwrap_or_else(|| "(body not kept)".into()),
            answer: crate::store::answer_text(&req["response"]).unwrap_or_else(|| "(no answer)".into()),
            context: html! {
                p.meta {
                    a.mono href=(format!("/ui/traces/{}", enc(&first.trace_id))) { "trace " (first.trace_id) }
                    " · route " (first.route) " · " (first.status) " " (first.outcome) " "
                    (flags(&first.flags))
                }
            },
        };
        Ok((Some(item), left))
    })
    .await
}

/// Where eval runs are kept: the store, on either backend.
fn eval_db(state: &SharedState) -> Result<crate::db::Db, Response> {
    state.db.clone().ok_or_else(|| {
        error_page(
            StatusCode::NOT_FOUND,
            "No store",
            "Review needs the trace store ([store] enabled).",
        )
    })
}

/// The next unlabelled case of an eval run.
async fn next_case(state: &SharedState, run: &str) -> Result<(Option<Item>, usize), Response> {
    let db = eval_db(state)?;
    let s = state.clone();
    let run = run.to_string();
    let out = tokio::task::spawn_blocking(move || {
        let labelled = s.review.labelled(&format!("eval:{run}"))?;
        let store = crate::evals::runs::open(&db)?;
        if store.run(&run)?.is_none() {
            return Err(format!("no eval run `{run}`"));
        }
        let cases: Vec<_> = store
            .results(&run, false, 5_000)?
            .into_iter()
            .filter(|c| !labelled.contains(&c.id))
            .collect();
        let left = cases.len();
        Ok((cases.into_iter().next(), left))
    })
    .await;
    let (case, left) = match out {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => return Err(error_page(StatusCode::NOT_FOUND, "Cannot review", &e)),
        Err(e) => {
            return Err(error_page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Cannot review",
                &e.to_string(),
            ));
        }
    };
    Ok((
        case.map(|c| Item {
            context: html! {
                p.meta { "case " span.mono { (c.id) } " · " (c.category) " · automated result " (if c.pass { "pass" } else { "fail" })
                    @if let Some(t) = &c.trace_id { " · " a.mono href=(format!("/ui/traces/{}", enc(t))) { "trace" } } }
                @if let Some(e) = &c.expected { p { strong { "expected: " } (e) } }
            },
            id: c.id,
            category: Some(c.category),
            question: c.input,
            answer: c.answer,
        }),
        left,
    ))
}

/// `GET /ui/review`: the next item of a queue with the rubric form.
pub async fn queue(
    State(state): State<SharedState>,
    query: Result<Query<QueueQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let q = match query {
        Ok(Query(q)) => q,
        Err(e) => return error_page(StatusCode::BAD_REQUEST, "Bad query", &e.body_text()),
    };
    let source = q.source.unwrap_or_else(|| "flagged".into());
    let next = match source.strip_prefix("eval:") {
        Some(run) => next_case(&state, run).await,
        None if SOURCES.iter().any(|(s, _)| *s == source) => next_trace(&state, &source).await,
        None => {
            return error_page(
                StatusCode::BAD_REQUEST,
                "Unknown queue",
                &format!("source `{source}`: use flagged, recent or eval:RUN_ID"),
            );
        }
    };
    let (item, left) = match next {
        Ok(v) => v,
        Err(r) => return r,
    };
    let runs = eval_runs(&state).await;
    let content = html! {
        h1 { "Human review" }
        nav.queues {
            "Queue: "
            @for (s, name) in SOURCES { a href=(format!("/ui/review?source={s}")) class=[(source == s).then_some("active")] { (name) } " " }
            @for r in runs.iter().take(5) { a href=(format!("/ui/review?source=eval:{}", enc(&r.0))) class=[(source == format!("eval:{}", r.0)).then_some("active")] { "eval " (r.0) } " " }
            " · " a href="/ui/review/compare" { "side-by-side" }
            " · " a href="/v1/review/labels" { "labels (JSON Lines)" }
        }
        @if let Some(done) = &q.done { p.ok id="saved" { "Saved labels for " span.mono { (done) } "." } }
        @match &item {
            None => p.empty id="queue-empty" { "Nothing left to review in this queue." },
            Some(item) => {
                p.count { (left) " left in this queue" }
                article.item {
                    (item.context)
                    div.q { span.role { "user" } (item.question) }
                    div.a { span.role { "assistant" } (item.answer) }
                }
                form.rubric method="post" action="/ui/review" {
                    input type="hidden" name="id" value=(item.id);
                    input type="hidden" name="source" value=(if source.starts_with("eval:") { source.clone() } else { "trace".to_string() });
                    input type="hidden" name="queue" value=(source);
                    input type="hidden" name="category" value=(item.category.clone().unwrap_or_default());
                    @for (criterion, help) in RUBRIC {
                        fieldset {
                            legend { (criterion) span.help { " " (help) } }
                            @for score in 1..=5 {
                                label.score { input type="radio" name=(criterion) value=(score) required; (score) }
                            }
                        }
                    }
                    label { "comment " input type="text" name="comment"; }
                    label { "your name " input type="text" name="rater" required data-remember="rater"; }
                    button type="submit" { "Save and next" }
                }
            }
        }
    };
    layout("Review", "review", content)
}

/// Eval runs, newest first: `(id, suite)`.
async fn eval_runs(state: &SharedState) -> Vec<(String, String)> {
    let Ok(db) = eval_db(state) else {
        return Vec::new();
    };
    if matches!(&db, crate::db::Db::Sqlite(path) if !path.exists()) {
        return Vec::new();
    }
    tokio::task::spawn_blocking(move || {
        crate::evals::runs::open(&db)
            .and_then(|s| s.runs(50))
            .map(|runs| runs.into_iter().map(|r| (r.id, r.suite)).collect())
            .unwrap_or_default()
    })
    .await
    .unwrap_or_default()
}

#[derive(Deserialize)]
pub struct RubricForm {
    id: String,
    source: String,
    queue: String,
    #[serde(default)]
    category: String,
    rater: String,
    #[serde(default)]
    comment: String,
    accuracy: Option<u8>,
    helpfulness: Option<u8>,
    tone: Option<u8>,
    completeness: Option<u8>,
    safety: Option<u8>,
}

async fn store(state: &SharedState, labels: Vec<Label>) -> Result<(), Response> {
    let s = state.clone();
    match tokio::task::spawn_blocking(move || s.review.add(&labels)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(error_page(StatusCode::BAD_REQUEST, "Not saved", &e)),
        Err(e) => Err(error_page(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Not saved",
            &e.to_string(),
        )),
    }
}

fn non_empty(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_string())
}

/// `POST /ui/review`: one score per rubric criterion.
pub async fn submit(State(state): State<SharedState>, Form(f): Form<RubricForm>) -> Response {
    let scores = [
        ("accuracy", f.accuracy),
        ("helpfulness", f.helpfulness),
        ("tone", f.tone),
        ("completeness", f.completeness),
        ("safety", f.safety),
    ];
    if let Some((missing, _)) = scores.iter().find(|(_, s)| s.is_none()) {
        return error_page(
            StatusCode::BAD_REQUEST,
            "Not saved",
            &format!("score `{missing}` from 1 to 5"),
        );
    }
    let labels = scores
        .iter()
        .map(|(criterion, score)| Label {
            id: f.id.clone(),
            criterion: criterion.to_string(),
            score: f64::from(score.unwrap_or(0)),
            rater: non_empty(&f.rater),
            category: non_empty(&f.category),
            source: f.source.clone(),
            a: None,
            b: None,
            comment: non_empty(&f.comment),
        })
        .collect();
    if let Err(r) = store(&state, labels).await {
        return r;
    }
    Redirect::to(&format!(
        "/ui/review?source={}&done={}",
        enc(&f.queue),
        enc(&f.id)
    ))
    .into_response()
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct CompareQuery {
    a: Option<String>,
    b: Option<String>,
    done: Option<String>,
}

/// `GET /ui/review/compare?a=RUN&b=RUN`: two runs' answers to one case, in random order.
pub async fn compare(
    State(state): State<SharedState>,
    query: Result<Query<CompareQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let q = match query {
        Ok(Query(q)) => q,
        Err(e) => return error_page(StatusCode::BAD_REQUEST, "Bad query", &e.body_text()),
    };
    let runs = eval_runs(&state).await;
    let picker = html! {
        form.pick method="get" action="/ui/review/compare" {
            label { "version A (baseline) "
                select name="a" { @for (id, suite) in &runs { option value=(id) selected[q.a.as_deref() == Some(id.as_str())] { (id) " · " (suite) } } }
            }
            label { "version B (candidate) "
                select name="b" { @for (id, suite) in &runs { option value=(id) selected[q.b.as_deref() == Some(id.as_str())] { (id) " · " (suite) } } }
            }
            button type="submit" { "Compare" }
        }
    };
    let (Some(a), Some(b)) = (q.a.clone(), q.b.clone()) else {
        return layout(
            "Side by side",
            "review",
            html! {
                h1 { "Side-by-side preference" }
                p.help { "Pick two eval runs of the same dataset (for example two prompt versions). Each case's two answers are shown in random order without saying which run wrote which." }
                (picker)
            },
        );
    };
    if a == b {
        return error_page(
            StatusCode::BAD_REQUEST,
            "Same run twice",
            "Pick two different runs to compare.",
        );
    }
    let db = match eval_db(&state) {
        Ok(db) => db,
        Err(r) => return r,
    };
    let s = state.clone();
    let (ka, kb) = (a.clone(), b.clone());
    let out = tokio::task::spawn_blocking(move || {
        let source = format!("pair:{ka}:{kb}");
        let labelled = s.review.labelled(&source)?;
        let store = crate::evals::runs::open(&db)?;
        let answers_b = store.answers(&kb)?;
        let cases = store.results(&ka, false, 5_000)?;
        let pending: Vec<_> = cases
            .into_iter()
            .filter(|c| !labelled.contains(&c.id))
            .filter_map(|c| answers_b.get(&c.id).cloned().map(|other| (c, other)))
            .collect();
        let left = pending.len();
        Ok::<_, String>((pending.into_iter().next(), left))
    })
    .await;
    let (pair, left) = match out {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => return error_page(StatusCode::NOT_FOUND, "Cannot compare", &e),
        Err(e) => {
            return error_page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Cannot compare",
                &e.to_string(),
            );
        }
    };
    let content = html! {
        h1 { "Side-by-side preference" }
        (picker)
        @if let Some(done) = &q.done { p.ok id="saved" { "Saved the preference for " span.mono { (done) } "." } }
        @match pair {
            None => p.empty id="queue-empty" { "Every case both runs answered has a preference." },
            Some((case, answer_b)) => {
                @let a_left: bool = rand::random();
                @let (left_answer, right_answer) = if a_left { (case.answer.clone(), answer_b) } else { (answer_b, case.answer.clone()) };
                @let left_run = if a_left { a.clone() } else { b.clone() };
                p.count { (left) " cases left" }
                div.q { span.role { "user" } (case.input) }
                div.pair {
                    div.side id="left" { h3 { "Answer 1" } div.a { (left_answer) } }
                    div.side id="right" { h3 { "Answer 2" } div.a { (right_answer) } }
                }
                form.prefer method="post" action="/ui/review/compare" {
                    input type="hidden" name="id" value=(case.id);
                    input type="hidden" name="a" value=(a);
                    input type="hidden" name="b" value=(b);
                    input type="hidden" name="left" value=(left_run);
                    input type="hidden" name="category" value=(case.category);
                    label { "your name " input type="text" name="rater" required data-remember="rater"; }
                    button type="submit" name="choice" value="left" { "Answer 1 is better" }
                    button type="submit" name="choice" value="tie" { "About the same" }
                    button type="submit" name="choice" value="right" { "Answer 2 is better" }
                }
            }
        }
    };
    layout("Side by side", "review", content)
}

#[derive(Deserialize)]
pub struct PreferenceForm {
    id: String,
    a: String,
    b: String,
    left: String,
    choice: String,
    rater: String,
    #[serde(default)]
    category: String,
}

/// `POST /ui/review/compare`: stored as a `preference` label: 1 when B (the candidate) is
/// preferred, -1 when A is, 0 for a tie.
pub async fn submit_preference(
    State(state): State<SharedState>,
    Form(f): Form<PreferenceForm>,
) -> Response {
    let chosen = match f.choice.as_str() {
        "left" => Some(f.left.clone()),
        "right" => Some(if f.left == f.a {
            f.b.clone()
        } else {
            f.a.clone()
        }),
        "tie" => None,
        other => {
            return error_page(
                StatusCode::BAD_REQUEST,
                "Not saved",
                &format!("choice `{other}`: left, right or tie"),
            );
        }
    };
    let score = match chosen {
        None => 0.0,
        Some(run) if run == f.b => 1.0,
        Some(_) => -1.0,
    };
    let label = Label {
        id: f.id.clone(),
        criterion: PREFERENCE.into(),
        score,
        rater: non_empty(&f.rater),
        category: non_empty(&f.category),
        source: format!("pair:{}:{}", f.a, f.b),
        a: Some(f.a.clone()),
        b: Some(f.b.clone()),
        comment: None,
    };
    if let Err(r) = store(&state, vec![label]).await {
        return r;
    }
    Redirect::to(&format!(
        "/ui/review/compare?a={}&b={}&done={}",
        enc(&f.a),
        enc(&f.b),
        enc(&f.id)
    ))
    .into_response()
}
