//! The drift report: every signal of DESIGN.md §8 computed from the two windows
//! ([`super::read`]), each with its method, value, threshold, sample sizes and verdict.
//!
//! - inputs, per route: the last user message's length in characters and the prompt
//!   tokens (PSI and normed Wasserstein each), the language mix (Jensen-Shannon distance),
//!   the topics (a domain classifier's ROC AUC);
//! - outputs, per prompt version (per route for requests without one): completion tokens
//!   (PSI, normed Wasserstein), refusal, fallback and guardrail-finding rates (a rise), the
//!   feedback score and the online-eval pass rate (a fall);
//! - providers, per target: the `(model, system_fingerprint)` pairs it answered with, the
//!   changes between them, and a signal when the current window has a pair the reference
//!   window never saw.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use trestle_core::drift::DriftConfig;
use trestle_eval::drift::{self as stats, Signal, Status, Worse};

use super::read::{Counts, Seen, Span, Window};

/// Seed of the domain classifier's split and training: the same windows give the same AUC.
const SEED: u64 = 42;

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub object: &'static str,
    pub generated_at_ms: i64,
    pub route: Option<String>,
    pub reference: WindowInfo,
    pub current: WindowInfo,
    /// `tfidf`, or `embeddings (NAME)` when `[drift] embedder` is set.
    pub topic_features: String,
    /// Signals that drifted, over all sections.
    pub drifted: usize,
    pub inputs: Vec<Signal>,
    pub outputs: Vec<Signal>,
    pub providers: Providers,
}

#[derive(Debug, Clone, Serialize)]
pub struct WindowInfo {
    pub start_ms: i64,
    pub end_ms: i64,
    pub requests: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Providers {
    pub signals: Vec<Signal>,
    pub seen: Vec<Seen>,
    pub changes: Vec<Change>,
}

/// A target starting to answer with a `(model, system_fingerprint)` it had not used in the
/// report's span, after another.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Change {
    pub target: String,
    pub at_ms: i64,
    pub from: Pair,
    pub to: Pair,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Pair {
    pub model: Option<String>,
    pub system_fingerprint: Option<String>,
}

impl Report {
    /// Every signal, inputs, outputs and providers.
    pub fn signals(&self) -> impl Iterator<Item = &Signal> {
        self.inputs
            .iter()
            .chain(&self.outputs)
            .chain(&self.providers.signals)
    }
}

/// Embeddings of the windows' user texts, aligned with `Window::texts` (a text that was
/// not embedded is `None`).
pub struct Vectors {
    pub reference: Vec<Option<Vec<f32>>>,
    pub current: Vec<Option<Vec<f32>>>,
    pub embedder: String,
}

/// Everything the report is computed from.
pub struct Inputs<'a> {
    pub config: &'a DriftConfig,
    pub route: Option<String>,
    pub spans: (Span, Span),
    pub windows: (&'a Window, &'a Window),
    pub seen: Vec<Seen>,
    pub vectors: Option<Vectors>,
    pub now_ms: i64,
}

pub fn build(i: Inputs<'_>) -> Report {
    let (r, c) = i.windows;
    let cfg = i.config;
    let t = &cfg.thresholds;
    let min = cfg.min_samples;
    let mut inputs = Vec::new();
    let routes: BTreeSet<&str> = r
        .numbers
        .iter()
        .chain(&c.numbers)
        .map(|n| n.route.as_str())
        .chain(r.texts.iter().chain(&c.texts).map(|t| t.route.as_str()))
        .collect();
    for route in routes {
        let scope = format!("route:{route}");
        let lengths = |w: &Window| -> Vec<f64> {
            w.texts
                .iter()
                .filter(|x| x.route == route)
                .filter_map(|x| x.user.as_ref())
                .map(|u| u.chars().count() as f64)
                .collect()
        };
        let tokens = |w: &Window| -> Vec<f64> {
            w.numbers
                .iter()
                .filter(|n| n.route == route && n.tokens_in > 0)
                .map(|n| n.tokens_in as f64)
                .collect()
        };
        distribution(
            &mut inputs,
            "input_length",
            &scope,
            (&lengths(r), &lengths(c)),
            (t.input_length_psi, t.input_length_wasserstein),
            min,
        );
        distribution(
            &mut inputs,
            "input_tokens",
            &scope,
            (&tokens(r), &tokens(c)),
            (t.input_tokens_psi, t.input_tokens_wasserstein),
            min,
        );
        inputs.push(languages(r, c, route, &scope, t.language_js, min));
        inputs.push(topics(
            r,
            c,
            route,
            &scope,
            t.topic_auc,
            min,
            i.vectors.as_ref(),
        ));
    }

    let mut outputs = Vec::new();
    let scopes: BTreeSet<&str> = r
        .numbers
        .iter()
        .chain(&c.numbers)
        .map(|n| n.scope.as_str())
        .chain(
            r.fallbacks
                .keys()
                .chain(c.fallbacks.keys())
                .map(String::as_str),
        )
        .chain(
            r.feedback
                .keys()
                .chain(c.feedback.keys())
                .map(String::as_str),
        )
        .chain(r.evals.keys().chain(c.evals.keys()).map(String::as_str))
        .collect();
    for scope in scopes {
        let completion = |w: &Window| -> Vec<f64> {
            w.numbers
                .iter()
                .filter(|n| n.scope == scope && n.ok && n.tokens_out > 0)
                .map(|n| n.tokens_out as f64)
                .collect()
        };
        distribution(
            &mut outputs,
            "output_length",
            scope,
            (&completion(r), &completion(c)),
            (t.output_length_psi, t.output_length_wasserstein),
            min,
        );
        let refusals = |w: &Window| -> (usize, usize) {
            let answers: Vec<bool> = w
                .texts
                .iter()
                .filter(|x| x.scope == scope)
                .filter_map(|x| x.refusal)
                .collect();
            (answers.len(), answers.iter().filter(|x| **x).count())
        };
        let (rr, cr) = (refusals(r), refusals(c));
        outputs.push(stats::rate_change(
            "refusal_rate",
            scope,
            Worse::Up,
            (rr.1, cr.1),
            (rr.0, cr.0),
            t.refusal_rate,
            min,
        ));
        for (name, counts, worse, threshold) in [
            (
                "fallback_rate",
                (&r.fallbacks, &c.fallbacks),
                Worse::Up,
                t.fallback_rate,
            ),
            (
                "guardrail_rate",
                (&r.guardrails, &c.guardrails),
                Worse::Up,
                t.guardrail_rate,
            ),
            (
                "feedback_score",
                (&r.feedback, &c.feedback),
                Worse::Down,
                t.feedback_score,
            ),
            (
                "online_eval_pass_rate",
                (&r.evals, &c.evals),
                Worse::Down,
                t.online_eval_pass_rate,
            ),
        ] {
            let (a, b) = (get(counts.0, scope), get(counts.1, scope));
            if a.0 + b.0 == 0 && matches!(name, "feedback_score" | "online_eval_pass_rate") {
                // No feedback or online evals at all for this scope: nothing to say.
                continue;
            }
            outputs.push(stats::rate_change(
                name,
                scope,
                worse,
                (a.1, b.1),
                (a.0, b.0),
                threshold,
                min,
            ));
        }
    }

    let providers = providers(i.seen);
    let drifted = inputs
        .iter()
        .chain(&outputs)
        .chain(&providers.signals)
        .filter(|s| s.drifted())
        .count();
    Report {
        object: "drift_report",
        generated_at_ms: i.now_ms,
        route: i.route,
        reference: WindowInfo {
            start_ms: i.spans.0.start_ms,
            end_ms: i.spans.0.end_ms,
            requests: r.requests,
        },
        current: WindowInfo {
            start_ms: i.spans.1.start_ms,
            end_ms: i.spans.1.end_ms,
            requests: c.requests,
        },
        topic_features: i.vectors.as_ref().map_or_else(
            || "tfidf".to_string(),
            |v| format!("embeddings ({})", v.embedder),
        ),
        drifted,
        inputs,
        outputs,
        providers,
    }
}

fn get(counts: &Counts, scope: &str) -> (usize, usize) {
    counts.get(scope).copied().unwrap_or((0, 0))
}

/// PSI and normed Wasserstein of one number (`{prefix}_psi`, `{prefix}_wasserstein`).
fn distribution(
    out: &mut Vec<Signal>,
    prefix: &str,
    scope: &str,
    samples: (&[f64], &[f64]),
    thresholds: (f64, f64),
    min: usize,
) {
    let major =
        stats::psi(samples.0, samples.1).is_some_and(|v| v >= stats::distribution::PSI_MAJOR);
    out.push(stats::distance(
        &format!("{prefix}_psi"),
        scope,
        "psi",
        samples,
        stats::psi,
        thresholds.0,
        min,
        if major {
            "major shift (PSI ≥ 0.2)".into()
        } else {
            String::new()
        },
    ));
    let mean = |s: &[f64]| s.iter().sum::<f64>() / s.len().max(1) as f64;
    out.push(stats::distance(
        &format!("{prefix}_wasserstein"),
        scope,
        "wasserstein_normed",
        samples,
        stats::wasserstein_normed,
        thresholds.1,
        min,
        format!("mean {:.1} → {:.1}", mean(samples.0), mean(samples.1)),
    ));
}

fn languages(
    r: &Window,
    c: &Window,
    route: &str,
    scope: &str,
    threshold: f64,
    min: usize,
) -> Signal {
    let mix = |w: &Window| -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for text in w
            .texts
            .iter()
            .filter(|x| x.route == route)
            .filter_map(|x| x.user.as_deref())
        {
            *m.entry(stats::language(text)).or_default() += 1;
        }
        m
    };
    let (a, b) = (mix(r), mix(c));
    let n = (a.values().sum(), b.values().sum());
    let top = |m: &BTreeMap<String, usize>| -> String {
        let total = m.values().sum::<usize>().max(1) as f64;
        let mut v: Vec<_> = m.iter().collect();
        v.sort_by(|x, y| y.1.cmp(x.1).then(x.0.cmp(y.0)));
        v.iter()
            .take(3)
            .map(|(k, n)| format!("{k} {:.0}%", **n as f64 / total * 100.0))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let detail = format!("{} → {}", top(&a), top(&b));
    stats::verdict(
        "language_js",
        scope,
        "jensen_shannon",
        stats::jensen_shannon(&a, &b),
        threshold,
        n,
        min,
        detail,
    )
}

/// Topic drift: the domain classifier, on embeddings when the report has them for every
/// text of the route, else on TF-IDF. Drifted when the AUC is at or above the threshold and
/// above what random scores reach (the 95th percentile).
fn topics(
    r: &Window,
    c: &Window,
    route: &str,
    scope: &str,
    threshold: f64,
    min: usize,
    vectors: Option<&Vectors>,
) -> Signal {
    let (a, b) = (route_texts(r, route), route_texts(c, route));
    let n = (a.len(), b.len());
    let method = "domain_classifier_auc";
    if n.0 < min || n.1 < min {
        return Signal::not_enough("topic_auc", scope, method, threshold, n, min);
    }
    let embedded = vectors.and_then(|v| {
        let pick = |idx: &[(usize, &str)], all: &[Option<Vec<f32>>]| -> Option<Vec<Vec<f32>>> {
            idx.iter()
                .map(|(i, _)| all.get(*i).cloned().flatten())
                .collect()
        };
        Some((pick(&a, &v.reference)?, pick(&b, &v.current)?))
    });
    let result = match &embedded {
        Some((x, y)) => stats::domain_classifier_vectors(x, y, SEED),
        None => {
            let x: Vec<&str> = a.iter().map(|(_, t)| *t).collect();
            let y: Vec<&str> = b.iter().map(|(_, t)| *t).collect();
            stats::domain_classifier_texts(&x, &y, SEED)
        }
    };
    let Some(dc) = result else {
        return Signal::not_enough("topic_auc", scope, method, threshold, n, min);
    };
    let drifted = dc.auc >= threshold && dc.auc > dc.random_p95;
    Signal {
        name: "topic_auc".into(),
        scope: scope.into(),
        method: method.into(),
        value: Some(dc.auc),
        threshold,
        status: if drifted { Status::Drifted } else { Status::Ok },
        reference_n: n.0,
        current_n: n.1,
        detail: format!(
            "{} features; random classifiers reach {:.3} (95th percentile); trained on {}, tested on {}",
            dc.features, dc.random_p95, dc.train, dc.test
        ),
    }
}

/// The route's user texts in a window, with their places in `Window::texts`.
fn route_texts<'w>(w: &'w Window, route: &str) -> Vec<(usize, &'w str)> {
    w.texts
        .iter()
        .enumerate()
        .filter(|(_, x)| x.route == route)
        .filter_map(|(i, x)| Some((i, x.user.as_deref()?)))
        .collect()
}

/// Provider pairs, their changes, and a signal per target.
fn providers(seen: Vec<Seen>) -> Providers {
    let mut signals = Vec::new();
    let mut changes = Vec::new();
    let targets: BTreeSet<String> = seen.iter().map(|s| s.target.clone()).collect();
    for target in targets {
        let pairs: Vec<&Seen> = seen.iter().filter(|s| s.target == target).collect();
        // `seen` is ordered by first sight.
        for w in pairs.windows(2) {
            changes.push(Change {
                target: target.clone(),
                at_ms: w[1].first_seen_ms,
                from: pair(w[0]),
                to: pair(w[1]),
            });
        }
        let scope = format!("target:{target}");
        let in_ref = pairs.iter().filter(|s| s.in_reference).count();
        let in_cur = pairs.iter().filter(|s| s.in_current).count();
        let method = "new_model_fingerprint";
        if in_ref == 0 || in_cur == 0 {
            signals.push(Signal::not_enough(
                "provider_fingerprint",
                &scope,
                method,
                1.0,
                (in_ref, in_cur),
                1,
            ));
            continue;
        }
        let new: Vec<&&Seen> = pairs
            .iter()
            .filter(|s| s.in_current && !s.in_reference)
            .collect();
        let describe = |s: &Seen| {
            format!(
                "model {}, system_fingerprint {}",
                s.model.as_deref().unwrap_or("-"),
                s.system_fingerprint.as_deref().unwrap_or("-")
            )
        };
        let detail = if new.is_empty() {
            format!("{in_cur} pair(s) in the current window, all seen in the reference window")
        } else {
            format!(
                "new in the current window: {}",
                new.iter()
                    .map(|s| describe(s))
                    .collect::<Vec<_>>()
                    .join("; ")
            )
        };
        signals.push(Signal {
            name: "provider_fingerprint".into(),
            scope,
            method: method.into(),
            value: Some(new.len() as f64),
            threshold: 1.0,
            status: if new.is_empty() {
                Status::Ok
            } else {
                Status::Drifted
            },
            reference_n: in_ref,
            current_n: in_cur,
            detail,
        });
    }
    Providers {
        signals,
        seen,
        changes,
    }
}

fn pair(s: &Seen) -> Pair {
    Pair {
        model: s.model.clone(),
        system_fingerprint: s.system_fingerprint.clone(),
    }
}
