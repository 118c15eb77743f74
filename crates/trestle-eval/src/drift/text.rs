//! Text signals: the language of a text, whether an answer is a refusal, and topic drift
//! measured by a domain classifier (as Evidently measures text drift): a model is trained to
//! tell reference texts from current ones; when it can (its ROC AUC on held-out texts is
//! well above what random scores reach), the topics moved.
//!
//! The classifier: the texts of both windows are shuffled (a fixed seed) and split in half,
//! train and test, as Evidently does. Features are the texts' embeddings when the caller has
//! them (standardized per dimension), else TF-IDF over hashed word unigrams and bigrams
//! (2^18 buckets, sublinear term frequency, smoothed IDF fitted on the training half, terms
//! in more than half the training texts dropped, L2-normalized rows). A logistic regression
//! is fitted by SGD (10 epochs, decaying step, seeded order) and scored on the test half.

use rand::Rng;
use rand::SeedableRng;
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

/// The language of a text: its ISO 639-3 code (`eng`, `fra`, `deu`, …) as `whatlang`
/// detects it, or `und` when it cannot tell (no letters, too short).
pub fn language(text: &str) -> String {
    match whatlang::detect(text) {
        Some(info) => info.lang().code().to_string(),
        None => "und".to_string(),
    }
}

/// Phrases that open a refusal, lower-cased with plain apostrophes.
const REFUSALS: &[&str] = &[
    "i can't help with",
    "i cannot help with",
    "i can't assist with",
    "i cannot assist with",
    "i can't provide",
    "i cannot provide",
    "i can't comply",
    "i cannot comply",
    "i'm not able to help",
    "i am not able to help",
    "i'm unable to",
    "i am unable to",
    "i won't be able to",
    "i'm sorry, but i can't",
    "i'm sorry, but i cannot",
    "sorry, i can't",
    "as an ai language model, i cannot",
    "i must decline",
];

/// Whether an answer reads as a refusal: one of the usual refusal phrases in its first 300
/// characters (the `refusal` field of an OpenAI answer is checked by the caller).
pub fn is_refusal(text: &str) -> bool {
    let head: String = text
        .chars()
        .take(300)
        .map(|c| if c == '\u{2019}' { '\'' } else { c })
        .collect::<String>()
        .to_lowercase();
    REFUSALS.iter().any(|p| head.contains(p))
}

/// What the domain classifier found.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DomainClassifier {
    /// ROC AUC on the held-out half: 0.5 when reference and current cannot be told apart.
    pub auc: f64,
    /// The 95th percentile of the AUC that random scores reach on the same held-out labels
    /// (1000 draws): above it, the AUC is not luck.
    pub random_p95: f64,
    pub train: usize,
    pub test: usize,
    /// `embeddings` or `tfidf`.
    pub features: String,
}

/// How many random classifiers the luck threshold is drawn from (Evidently's default).
const RANDOM_DRAWS: usize = 1000;
const HASH_BITS: u32 = 18;
const EPOCHS: usize = 10;

/// A sparse row: (feature, value).
type Row = Vec<(u32, f64)>;

/// Topic drift over texts, with TF-IDF features. `None` when either side has fewer than 4
/// texts or a split lacks one of the sides.
pub fn domain_classifier_texts(
    reference: &[&str],
    current: &[&str],
    seed: u64,
) -> Option<DomainClassifier> {
    let docs: Vec<Vec<u32>> = reference.iter().chain(current).map(|t| terms(t)).collect();
    let (train, test) = split(reference.len(), current.len(), seed)?;
    let idf = fit_idf(&docs, &train);
    let rows: Vec<Row> = docs.iter().map(|d| tfidf(d, &idf)).collect();
    classify(
        &rows,
        1 << HASH_BITS,
        reference.len(),
        &train,
        &test,
        seed,
        "tfidf",
    )
}

/// Topic drift over embeddings (one vector per text, all the same length).
pub fn domain_classifier_vectors(
    reference: &[Vec<f32>],
    current: &[Vec<f32>],
    seed: u64,
) -> Option<DomainClassifier> {
    let dim = reference.first().or(current.first())?.len();
    let all: Vec<&Vec<f32>> = reference.iter().chain(current).collect();
    if dim == 0 || all.iter().any(|v| v.len() != dim) {
        return None;
    }
    let (train, test) = split(reference.len(), current.len(), seed)?;
    // Standardize each dimension on the training half; rows come out with norm about 1.
    let n = train.len() as f64;
    let mut mean = vec![0.0f64; dim];
    let mut var = vec![0.0f64; dim];
    for &i in &train {
        for (m, x) in mean.iter_mut().zip(all[i]) {
            *m += f64::from(*x) / n;
        }
    }
    for &i in &train {
        for ((v, m), x) in var.iter_mut().zip(&mean).zip(all[i]) {
            *v += (f64::from(*x) - m).powi(2) / n;
        }
    }
    let scale = 1.0 / (dim as f64).sqrt();
    let rows: Vec<Row> = all
        .iter()
        .map(|v| {
            v.iter()
                .enumerate()
                .map(|(j, x)| {
                    let sd = var[j].sqrt().max(1e-9);
                    (j as u32, (f64::from(*x) - mean[j]) / sd * scale)
                })
                .collect()
        })
        .collect();
    classify(
        &rows,
        dim,
        reference.len(),
        &train,
        &test,
        seed,
        "embeddings",
    )
}

/// Shuffles the indices of both sides (reference first) and halves them; both halves must
/// hold both sides.
fn split(n_ref: usize, n_cur: usize, seed: u64) -> Option<(Vec<usize>, Vec<usize>)> {
    if n_ref < 4 || n_cur < 4 {
        return None;
    }
    let mut order: Vec<usize> = (0..n_ref + n_cur).collect();
    order.shuffle(&mut SmallRng::seed_from_u64(seed));
    let test = order.split_off(order.len() / 2);
    let both = |idx: &[usize]| idx.iter().any(|i| *i < n_ref) && idx.iter().any(|i| *i >= n_ref);
    (both(&order) && both(&test)).then_some((order, test))
}

fn classify(
    rows: &[Row],
    dim: usize,
    n_ref: usize,
    train: &[usize],
    test: &[usize],
    seed: u64,
    features: &str,
) -> Option<DomainClassifier> {
    let label = |i: usize| if i >= n_ref { 1.0 } else { 0.0 };
    let (weights, bias) = fit_logistic(rows, dim, train, &label, seed);
    let scores: Vec<f64> = test
        .iter()
        .map(|&i| {
            bias + rows[i]
                .iter()
                .map(|(j, x)| weights[*j as usize] * x)
                .sum::<f64>()
        })
        .collect();
    let labels: Vec<bool> = test.iter().map(|&i| i >= n_ref).collect();
    let auc = roc_auc(&scores, &labels)?;
    Some(DomainClassifier {
        auc,
        random_p95: random_auc_percentile(&labels, 0.95, seed),
        train: train.len(),
        test: test.len(),
        features: features.to_string(),
    })
}

/// Logistic regression by SGD over the training rows.
fn fit_logistic(
    rows: &[Row],
    dim: usize,
    train: &[usize],
    label: &dyn Fn(usize) -> f64,
    seed: u64,
) -> (Vec<f64>, f64) {
    let mut w = vec![0.0f64; dim];
    let mut b = 0.0f64;
    let mut order = train.to_vec();
    let mut rng = SmallRng::seed_from_u64(seed ^ 0x10f1);
    for epoch in 0..EPOCHS {
        order.shuffle(&mut rng);
        let step = 0.5 / (1.0 + epoch as f64 * 0.5);
        for &i in &order {
            let z = b + rows[i].iter().map(|(j, x)| w[*j as usize] * x).sum::<f64>();
            let g = sigmoid(z) - label(i);
            for (j, x) in &rows[i] {
                w[*j as usize] -= step * g * x;
            }
            b -= step * g;
        }
    }
    (w, b)
}

fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

/// The hashed unigram and bigram terms of a text (words: runs of two or more letters or
/// digits, lower-cased, as scikit-learn's default token pattern).
fn terms(text: &str) -> Vec<u32> {
    let lower = text.to_lowercase();
    let words: Vec<&str> = lower
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.chars().count() >= 2)
        .collect();
    let mut out: Vec<u32> = words.iter().map(|w| bucket(&[w])).collect();
    out.extend(words.windows(2).map(bucket));
    out
}

/// FNV-1a over the words (a space between), folded into the feature space.
fn bucket(words: &[&str]) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (k, w) in words.iter().enumerate() {
        if k > 0 {
            h = (h ^ u64::from(b' ')).wrapping_mul(0x0100_0000_01b3);
        }
        for byte in w.bytes() {
            h = (h ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    (h & ((1u64 << HASH_BITS) - 1)) as u32
}

/// Smoothed IDF per term from the training documents; terms in more than half of them get
/// 0 (dropped, as `max_df = 0.5`).
fn fit_idf(docs: &[Vec<u32>], train: &[usize]) -> std::collections::HashMap<u32, f64> {
    let mut df: std::collections::HashMap<u32, usize> = std::collections::HashMap::new();
    for &i in train {
        let mut seen: Vec<u32> = docs[i].clone();
        seen.sort_unstable();
        seen.dedup();
        for t in seen {
            *df.entry(t).or_default() += 1;
        }
    }
    let n = train.len() as f64;
    df.into_iter()
        .map(|(t, d)| {
            let idf = if d as f64 > 0.5 * n {
                0.0
            } else {
                ((1.0 + n) / (1.0 + d as f64)).ln() + 1.0
            };
            (t, idf)
        })
        .collect()
}

/// A document's TF-IDF row: (1 + ln tf) · idf, L2-normalized; terms unseen in training drop.
fn tfidf(doc: &[u32], idf: &std::collections::HashMap<u32, f64>) -> Row {
    let mut tf: std::collections::BTreeMap<u32, usize> = std::collections::BTreeMap::new();
    for t in doc {
        *tf.entry(*t).or_default() += 1;
    }
    let mut row: Row = tf
        .into_iter()
        .filter_map(|(t, n)| {
            let w = idf.get(&t).copied().unwrap_or(0.0);
            (w > 0.0).then(|| (t, (1.0 + (n as f64).ln()) * w))
        })
        .collect();
    let norm = row.iter().map(|(_, x)| x * x).sum::<f64>().sqrt();
    if norm > 0.0 {
        row.iter_mut().for_each(|(_, x)| *x /= norm);
    }
    row
}

/// ROC AUC of scores against labels (true = positive), ties counted half (the Mann-Whitney
/// statistic). `None` without both labels.
pub fn roc_auc(scores: &[f64], labels: &[bool]) -> Option<f64> {
    let pos = labels.iter().filter(|l| **l).count();
    let neg = labels.len() - pos;
    if pos == 0 || neg == 0 || scores.len() != labels.len() {
        return None;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|a, b| scores[*a].total_cmp(&scores[*b]));
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        // Ranks i+1 ..= j+1 share their mean.
        let mean_rank = (i + j) as f64 / 2.0 + 1.0;
        rank_sum += mean_rank * order[i..=j].iter().filter(|k| labels[**k]).count() as f64;
        i = j + 1;
    }
    let (p, n) = (pos as f64, neg as f64);
    Some((rank_sum - p * (p + 1.0) / 2.0) / (p * n))
}

/// The `q` quantile (linear interpolation) of the AUCs uniform random scores reach on
/// `labels`.
fn random_auc_percentile(labels: &[bool], q: f64, seed: u64) -> f64 {
    let mut rng = SmallRng::seed_from_u64(seed ^ 0xa0c);
    let mut aucs: Vec<f64> = (0..RANDOM_DRAWS)
        .filter_map(|_| {
            let scores: Vec<f64> = labels.iter().map(|_| rng.random::<f64>()).collect();
            roc_auc(&scores, labels)
        })
        .collect();
    aucs.sort_by(f64::total_cmp);
    quantile(&aucs, q)
}

/// numpy's default (linear) quantile of a sorted sample.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    match sorted.len() {
        0 => f64::NAN,
        n => {
            let pos = q * (n - 1) as f64;
            let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
            sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHIPPING: &[&str] = &[
        "where is my parcel",
        "my order has not arrived",
        "tracking number for delivery",
        "when will the package ship",
        "courier lost my box",
        "delivery is late again",
    ];
    const BILLING: &[&str] = &[
        "refund my payment",
        "charged twice on my card",
        "invoice is wrong",
        "cancel my subscription billing",
        "update my credit card",
        "why was I billed",
    ];
    const EXTRAS: &[&str] = &[
        "please", "today", "urgent", "thanks", "hello", "again", "now", "quickly",
    ];

    /// Texts drawn from topics with the given weights (seeded).
    fn texts(seed: u64, n: usize, billing_share: f64) -> Vec<String> {
        let mut rng = SmallRng::seed_from_u64(seed);
        (0..n)
            .map(|_| {
                let pool = if rng.random::<f64>() < billing_share {
                    BILLING
                } else {
                    SHIPPING
                };
                let a = pool[rng.random_range(0..pool.len())];
                let e = EXTRAS[rng.random_range(0..EXTRAS.len())];
                format!("{a} {e}")
            })
            .collect()
    }

    fn refs(v: &[String]) -> Vec<&str> {
        v.iter().map(String::as_str).collect()
    }

    #[test]
    fn topic_shift_is_flagged_and_null_is_not() {
        let reference = texts(1, 400, 0.2);
        let same = texts(2, 400, 0.2);
        let shifted = texts(3, 400, 0.8);
        let null = domain_classifier_texts(&refs(&reference), &refs(&same), 42).unwrap();
        let shift = domain_classifier_texts(&refs(&reference), &refs(&shifted), 42).unwrap();
        assert!(
            null.auc < 0.55 || null.auc <= null.random_p95,
            "null {null:?}"
        );
        assert!(
            shift.auc > 0.7 && shift.auc > shift.random_p95,
            "shift {shift:?}"
        );
        assert_eq!(shift.features, "tfidf");
        assert_eq!(shift.train + shift.test, 800);
    }

    #[test]
    fn the_classifier_is_deterministic() {
        let a = texts(4, 100, 0.5);
        let b = texts(5, 100, 0.5);
        assert_eq!(
            domain_classifier_texts(&refs(&a), &refs(&b), 7),
            domain_classifier_texts(&refs(&a), &refs(&b), 7)
        );
        assert_eq!(domain_classifier_texts(&["a b"; 3], &["c d"; 10], 7), None);
    }

    #[test]
    fn embeddings_shift_is_flagged_and_null_is_not() {
        let mut rng = SmallRng::seed_from_u64(11);
        let mut cloud = |n: usize, centre: f32| -> Vec<Vec<f32>> {
            (0..n)
                .map(|_| {
                    (0..16)
                        .map(|d| if d == 0 { centre } else { 0.0 } + rng.random::<f32>() - 0.5)
                        .collect()
                })
                .collect()
        };
        let reference = cloud(300, 0.0);
        let same = cloud(300, 0.0);
        let moved = cloud(300, 0.4);
        let null = domain_classifier_vectors(&reference, &same, 42).unwrap();
        let shift = domain_classifier_vectors(&reference, &moved, 42).unwrap();
        assert!(null.auc <= null.random_p95.max(0.55), "null {null:?}");
        assert!(
            shift.auc > 0.7 && shift.auc > shift.random_p95,
            "shift {shift:?}"
        );
        assert_eq!(shift.features, "embeddings");
    }

    #[test]
    fn auc_counts_ties_half() {
        assert_eq!(roc_auc(&[0.1, 0.9], &[false, true]), Some(1.0));
        assert_eq!(roc_auc(&[0.9, 0.1], &[false, true]), Some(0.0));
        assert_eq!(roc_auc(&[0.5, 0.5], &[false, true]), Some(0.5));
        assert_eq!(
            roc_auc(&[0.1, 0.4, 0.35, 0.8], &[false, false, true, true]),
            Some(0.75)
        );
        assert_eq!(roc_auc(&[0.1], &[true]), None);
        // Random scores on 200 labels: the 95th percentile sits a little above 0.5.
        let labels: Vec<bool> = (0..200).map(|i| i % 2 == 0).collect();
        let p95 = random_auc_percentile(&labels, 0.95, 1);
        assert!((0.53..0.6).contains(&p95), "{p95}");
    }

    #[test]
    fn languages_and_refusals() {
        assert_eq!(
            language("Where is my parcel? It should have arrived two days ago."),
            "eng"
        );
        assert_eq!(
            language("Où est mon colis ? Il aurait dû arriver il y a deux jours."),
            "fra"
        );
        assert_eq!(
            language("Wo ist mein Paket? Es hätte vor zwei Tagen ankommen sollen."),
            "deu"
        );
        assert_eq!(language("1234 !!"), "und");
        assert!(is_refusal("I’m sorry, but I can’t help with that request."));
        assert!(is_refusal("I cannot assist with creating malware."));
        assert!(!is_refusal(
            "Your parcel ships tomorrow; I can help with tracking."
        ));
    }
}
