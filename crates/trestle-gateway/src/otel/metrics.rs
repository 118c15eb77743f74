//! The GenAI client metrics of the OpenTelemetry conventions, aggregated from the upstream
//! calls on traces: `gen_ai.client.operation.duration` (seconds) and
//! `gen_ai.client.token.usage` (tokens, by `gen_ai.token.type`), explicit-bucket histograms
//! with the conventions' advised boundaries, cumulative since the gateway started.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Histogram, HistogramDataPoint, Metric, metric,
};

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};

use super::spans::{Providers, attempt_error_type, is_call, serving};
use crate::store::Trace;

const DURATION_BOUNDS: &[f64] = &[
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
];
const TOKEN_BOUNDS: &[f64] = &[
    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0,
    16777216.0, 67108864.0,
];

/// Distinct attribute sets kept per metric; past it, points go to one overflow series
/// (`otel.metric.overflow = true`), as the OpenTelemetry SDKs do.
const MAX_SERIES: usize = 1000;

/// The attributes of one series.
#[derive(Debug, Clone, PartialEq, Default)]
struct Key {
    provider: Option<String>,
    request_model: String,
    response_model: Option<String>,
    address: Option<String>,
    port: Option<i64>,
    error_type: Option<String>,
    token_type: Option<&'static str>,
    overflow: bool,
}

/// A series' attributes as a call has them: looked up without allocating; copied into a
/// [`Key`] only the first time.
#[derive(Debug, Clone, Copy, Hash)]
struct KeyRef<'a> {
    provider: Option<&'a str>,
    request_model: &'a str,
    response_model: Option<&'a str>,
    address: Option<&'a str>,
    port: Option<i64>,
    error_type: Option<&'a str>,
    token_type: Option<&'static str>,
    overflow: bool,
}

impl KeyRef<'_> {
    fn hash64(&self) -> u64 {
        let mut h = Fx(0);
        self.hash(&mut h);
        h.finish()
    }

    fn is(&self, k: &Key) -> bool {
        self.request_model == k.request_model
            && self.provider == k.provider.as_deref()
            && self.response_model == k.response_model.as_deref()
            && self.address == k.address.as_deref()
            && self.port == k.port
            && self.error_type == k.error_type.as_deref()
            && self.token_type == k.token_type
            && self.overflow == k.overflow
    }

    fn owned(&self) -> Key {
        Key {
            provider: self.provider.map(str::to_string),
            request_model: self.request_model.to_string(),
            response_model: self.response_model.map(str::to_string),
            address: self.address.map(str::to_string),
            port: self.port,
            error_type: self.error_type.map(str::to_string),
            token_type: self.token_type,
            overflow: self.overflow,
        }
    }
}

/// A fast non-cryptographic hash (the Fx hash of rustc) for series lookups: the keys are
/// model and provider names, and their number is capped.
struct Fx(u64);

impl Hasher for Fx {
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x517c_c1b7_2722_0a95;
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            let mut b = [0u8; 8];
            b.copy_from_slice(w);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(b)).wrapping_mul(K);
        }
        for &b in words.remainder() {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(K);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

impl Key {
    fn attributes(&self) -> Attrs {
        let mut a = Attrs::with_capacity(8);
        if self.overflow {
            a.bool("otel.metric.overflow", true);
            return a;
        }
        a.str("gen_ai.operation.name", "chat");
        if let Some(p) = &self.provider {
            a.str("gen_ai.provider.name", p);
        }
        a.str("gen_ai.request.model", &self.request_model);
        if let Some(m) = &self.response_model {
            a.str("gen_ai.response.model", m);
        }
        if let Some(h) = &self.address {
            a.str("server.address", h);
        }
        if let Some(p) = self.port {
            a.int("server.port", p);
        }
        if let Some(e) = &self.error_type {
            a.str("error.type", e);
        }
        if let Some(t) = self.token_type {
            a.str("gen_ai.token.type", t);
        }
        a
    }
}

/// Attributes as `opentelemetry-proto` messages (metrics and the resource: built a few
/// times a minute, unlike spans).
pub struct Attrs(pub Vec<KeyValue>);

impl Attrs {
    pub fn with_capacity(n: usize) -> Self {
        Attrs(Vec::with_capacity(n))
    }

    fn put(&mut self, key: &str, value: any_value::Value) {
        self.0.push(KeyValue {
            key: key.to_string(),
            value: Some(AnyValue { value: Some(value) }),
        });
    }

    pub fn str(&mut self, key: &str, value: &str) {
        self.put(key, any_value::Value::StringValue(value.to_string()));
    }

    pub fn int(&mut self, key: &str, value: i64) {
        self.put(key, any_value::Value::IntValue(value));
    }

    pub fn bool(&mut self, key: &str, value: bool) {
        self.put(key, any_value::Value::BoolValue(value));
    }
}

#[derive(Debug, Clone)]
struct Hist {
    counts: Vec<u64>,
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
}

impl Hist {
    fn new(bounds: &[f64]) -> Self {
        Hist {
            counts: vec![0; bounds.len() + 1],
            count: 0,
            sum: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
        }
    }

    fn record(&mut self, bounds: &[f64], v: f64) {
        // Buckets are (previous bound, bound]: the first bound not below the value.
        let i = bounds.partition_point(|b| *b < v);
        self.counts[i] += 1;
        self.count += 1;
        self.sum += v;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
    }
}

/// One histogram metric's series, by the hash of their attributes.
#[derive(Debug, Clone)]
struct Series {
    bounds: &'static [f64],
    by_hash: HashMap<u64, Vec<(Key, Hist)>>,
    len: usize,
}

impl Series {
    fn new(bounds: &'static [f64]) -> Self {
        Series {
            bounds,
            by_hash: HashMap::new(),
            len: 0,
        }
    }

    fn record(&mut self, key: KeyRef<'_>, v: f64) {
        let bounds = self.bounds;
        let h = key.hash64();
        if let Some((_, hist)) = self
            .by_hash
            .get_mut(&h)
            .and_then(|b| b.iter_mut().find(|(k, _)| key.is(k)))
        {
            hist.record(bounds, v);
            return;
        }
        if self.len >= MAX_SERIES && !key.overflow {
            let overflow = KeyRef {
                provider: None,
                request_model: "",
                response_model: None,
                address: None,
                port: None,
                error_type: None,
                token_type: None,
                overflow: true,
            };
            return self.record(overflow, v);
        }
        let mut hist = Hist::new(bounds);
        hist.record(bounds, v);
        self.by_hash.entry(h).or_default().push((key.owned(), hist));
        self.len += 1;
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn metric(&self, name: &str, description: &str, unit: &str, start: u64, now: u64) -> Metric {
        let data_points = self
            .by_hash
            .values()
            .flatten()
            .map(|(key, h)| HistogramDataPoint {
                attributes: key.attributes().0,
                start_time_unix_nano: start,
                time_unix_nano: now,
                count: h.count,
                sum: Some(h.sum),
                bucket_counts: h.counts.clone(),
                explicit_bounds: self.bounds.to_vec(),
                min: Some(h.min),
                max: Some(h.max),
                ..Default::default()
            })
            .collect();
        Metric {
            name: name.into(),
            description: description.into(),
            unit: unit.into(),
            data: Some(metric::Data::Histogram(Histogram {
                data_points,
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
            })),
            ..Default::default()
        }
    }
}

/// The GenAI client metrics, cumulative since `start`.
#[derive(Debug, Clone)]
pub struct Aggregator {
    start: u64,
    duration: Series,
    tokens: Series,
}

impl Aggregator {
    /// `start`: Unix nanoseconds the cumulative figures count from.
    pub fn new(start: u64) -> Self {
        Aggregator {
            start,
            duration: Series::new(DURATION_BOUNDS),
            tokens: Series::new(TOKEN_BOUNDS),
        }
    }

    /// Counts every upstream call of a trace.
    pub fn record(&mut self, t: &Trace, providers: &Providers) {
        let served = serving(t);
        for a in t
            .attempts
            .iter()
            .filter(|a| is_call(a) && a.status != "cancelled")
        {
            let p = providers.get(&a.provider);
            let is_serving = served.is_some_and(|s| std::ptr::eq(s, a));
            let error_type = attempt_error_type(a);
            let key = KeyRef {
                provider: p.map(|p| p.name.as_str()),
                request_model: &a.model,
                response_model: is_serving.then(|| t.response_model.as_deref().unwrap_or(&a.model)),
                address: p.and_then(|p| p.address.as_deref()),
                port: p.and_then(|p| p.port),
                error_type: error_type.as_deref(),
                token_type: None,
                overflow: false,
            };
            if a.status == "ok" && (a.tokens_in > 0 || a.tokens_out > 0) {
                let tokens = KeyRef {
                    error_type: None,
                    ..key
                };
                let input = KeyRef {
                    token_type: Some("input"),
                    ..tokens
                };
                self.tokens.record(input, a.tokens_in as f64);
                let output = KeyRef {
                    token_type: Some("output"),
                    ..tokens
                };
                self.tokens.record(output, a.tokens_out as f64);
            }
            self.duration.record(key, a.latency_ms / 1000.0);
        }
    }

    /// Whether anything was recorded yet.
    pub fn is_empty(&self) -> bool {
        self.duration.is_empty() && self.tokens.is_empty()
    }

    /// The metrics as of `now` (Unix nanoseconds).
    pub fn metrics(&self, now: u64) -> Vec<Metric> {
        let mut out = vec![self.duration.metric(
            "gen_ai.client.operation.duration",
            "GenAI operation duration: one call to an upstream model.",
            "s",
            self.start,
            now,
        )];
        if !self.tokens.is_empty() {
            out.push(self.tokens.metric(
                "gen_ai.client.token.usage",
                "Number of input and output tokens used.",
                "{token}",
                self.start,
                now,
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otel::spans::ProviderInfo;

    fn trace() -> Trace {
        let mut t = crate::store::sample_trace("t", "s", "c");
        let mut ok = t.attempts[0].clone();
        ok.status = "ok".into();
        ok.http_status = None;
        ok.error = None;
        ok.latency_ms = 300.0;
        ok.tokens_in = 100;
        ok.tokens_out = 20;
        t.attempts.push(ok);
        t.response_model = Some("m1-v2".into());
        t
    }

    fn providers() -> Providers {
        Providers::from([(
            "up".to_string(),
            ProviderInfo {
                name: "openai".into(),
                address: Some("127.0.0.1".into()),
                port: Some(9101),
            },
        )])
    }

    fn attr(p: &HistogramDataPoint, key: &str) -> Option<String> {
        p.attributes.iter().find(|kv| kv.key == key).and_then(|kv| {
            match kv.value.as_ref()?.value.as_ref()? {
                any_value::Value::StringValue(s) => Some(s.clone()),
                other => Some(format!("{other:?}")),
            }
        })
    }

    fn points(m: &Metric) -> &[HistogramDataPoint] {
        match &m.data {
            Some(metric::Data::Histogram(h)) => {
                assert_eq!(
                    h.aggregation_temporality,
                    AggregationTemporality::Cumulative as i32
                );
                &h.data_points
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn calls_are_counted_by_outcome_and_token_type() {
        let mut a = Aggregator::new(5);
        assert!(a.is_empty());
        a.record(&trace(), &providers());
        a.record(&trace(), &providers());
        let m = a.metrics(9);
        assert_eq!(m[0].name, "gen_ai.client.operation.duration");
        assert_eq!(m[0].unit, "s");
        let d = points(&m[0]);
        assert_eq!(d.len(), 2);
        let failed = d.iter().find(|p| attr(p, "error.type").is_some()).unwrap();
        assert_eq!(attr(failed, "error.type").as_deref(), Some("500"));
        assert_eq!(attr(failed, "gen_ai.response.model"), None);
        let ok = d.iter().find(|p| attr(p, "error.type").is_none()).unwrap();
        assert_eq!(ok.count, 2);
        assert_eq!(ok.sum, Some(0.6));
        // 0.3 s falls in (0.16, 0.32].
        assert_eq!(ok.bucket_counts[5], 2);
        assert_eq!(ok.bucket_counts.len(), ok.explicit_bounds.len() + 1);
        assert_eq!((ok.start_time_unix_nano, ok.time_unix_nano), (5, 9));
        assert_eq!(attr(ok, "gen_ai.provider.name").as_deref(), Some("openai"));
        assert_eq!(attr(ok, "gen_ai.response.model").as_deref(), Some("m1-v2"));
        assert_eq!(attr(ok, "server.address").as_deref(), Some("127.0.0.1"));

        assert_eq!(m[1].name, "gen_ai.client.token.usage");
        let t = points(&m[1]);
        let input = t
            .iter()
            .find(|p| attr(p, "gen_ai.token.type").as_deref() == Some("input"))
            .unwrap();
        assert_eq!((input.count, input.sum), (2, Some(200.0)));
        // 100 tokens fall in (64, 256].
        assert_eq!(input.bucket_counts[4], 2);
    }

    #[test]
    fn series_past_the_limit_overflow_into_one() {
        let mut a = Aggregator::new(0);
        let mut t = trace();
        for i in 0..(MAX_SERIES + 10) {
            t.attempts[0].model = format!("m{i}");
            a.record(&t, &providers());
        }
        let m = a.metrics(1);
        let d = points(&m[0]);
        assert_eq!(d.len(), MAX_SERIES + 1);
        let overflow = d
            .iter()
            .find(|p| attr(p, "otel.metric.overflow").is_some())
            .unwrap();
        // 999 failed-call series and the served one fill the table; 11 more overflow.
        assert_eq!(overflow.count, 11);
    }
}
