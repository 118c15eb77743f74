//! Inference: the route's target chain. Each target gets `retries` extra tries on retryable
//! errors (exponential backoff with full jitter, `Retry-After` honoured), then the next target
//! serves. A stream is committed once its first chunk arrives; before that, any failure falls
//! through invisibly.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use rand::Rng;
use tokio::time::Instant;
use trestle_core::openai::ChatRequest;

use super::ingress::new_span_id;
use crate::error::GatewayError;
use crate::metrics;
use crate::providers::{Chunk, ChunkStream, Completion, ProviderError};
use crate::runtime::{Route, Target};
use crate::store::Attempt;

/// What the chain produced.
pub enum Served {
    Complete(Completion),
    Stream { first: Chunk, rest: ChunkStream },
}

/// The chain's result with everything the trace needs.
pub struct Inference {
    pub result: Result<Served, GatewayError>,
    pub attempts: Vec<Attempt>,
    /// Index of the serving target in the chain (0 = primary).
    pub level: usize,
    pub target: Option<Arc<Target>>,
    /// Time spent waiting on upstreams and backoff before the answer was ready.
    pub waited: Duration,
}

impl Inference {
    pub fn fallback_level(&self) -> &'static str {
        if self.level == 0 { "primary" } else { "model" }
    }
}

/// Runs the chain for one request. `started` is when the request arrived.
pub async fn run(route: &Route, req: &ChatRequest, stream: bool, started: Instant) -> Inference {
    let cfg = &route.config;
    let deadline = started + Duration::from_millis(cfg.total_timeout_ms());
    let ttft_limit = cfg.first_token_timeout_ms().map(Duration::from_millis);
    let mut attempts = Vec::new();
    let mut waited = Duration::ZERO;
    let mut failures: Vec<String> = Vec::new();
    let mut timed_out = false;

    'targets: for (level, target) in route.targets.iter().enumerate() {
        for try_index in 0..=cfg.retries {
            let now = Instant::now();
            if now >= deadline {
                timed_out = true;
                failures.push(format!(
                    "{}: route deadline of {} ms reached",
                    target.name,
                    cfg.total_timeout_ms()
                ));
                break 'targets;
            }
            let remaining = cfg.attempt_timeout_ms.map_or(deadline - now, |a| {
                Duration::from_millis(a).min(deadline - now)
            });
            let cold = target.touch();
            let result = if stream {
                open_stream(target, req, remaining, ttft_limit)
                    .await
                    .map(|(first, rest)| Served::Stream { first, rest })
            } else {
                match tokio::time::timeout(remaining, target.provider.chat(&target.model, req))
                    .await
                {
                    Ok(r) => r.map(Served::Complete),
                    Err(_) => Err(ProviderError::Timeout(
                        "waiting for the response (route deadline)",
                    )),
                }
            };
            let latency = now.elapsed();
            waited += latency;
            let status = match &result {
                Ok(_) => "ok".to_string(),
                Err(e) => e.label(),
            };
            metrics::attempt(&route.name, &target.name, &status, latency, cold);
            attempts.push(attempt_record(target, &result, started, now, latency, cold));
            let error = match result {
                Ok(served) => {
                    return Inference {
                        result: Ok(served),
                        attempts,
                        level,
                        target: Some(target.clone()),
                        waited,
                    };
                }
                Err(e) => e,
            };
            tracing::debug!(route = %route.name, target = %target.name, attempt = try_index + 1, error = %error, "attempt failed");
            failures.push(format!("{} (try {}): {error}", target.name, try_index + 1));
            if error.is_client_error() {
                let status = match error {
                    ProviderError::Status { status, .. } => status,
                    _ => 400,
                };
                return Inference {
                    result: Err(GatewayError::UpstreamRejected {
                        status,
                        message: format!("{} rejected the request: {error}", target.name),
                    }),
                    attempts,
                    level,
                    target: Some(target.clone()),
                    waited,
                };
            }
            timed_out = matches!(error, ProviderError::Timeout(_));
            if !error.is_retryable() || try_index == cfg.retries {
                continue 'targets;
            }
            let Some(pause) = backoff(&error, try_index, cfg.backoff_ms, cfg.backoff_max_ms) else {
                continue 'targets;
            };
            if Instant::now() + pause >= deadline {
                continue 'targets;
            }
            tokio::time::sleep(pause).await;
            waited += pause;
        }
    }
    let tried = failures.join("; ");
    Inference {
        result: Err(GatewayError::UpstreamFailed {
            message: format!("every target of route `{}` failed: {tried}", route.name),
            timed_out,
        }),
        attempts,
        level: 0,
        target: None,
        waited,
    }
}

/// Opens a stream and waits for its first chunk within the first-token limit.
async fn open_stream(
    target: &Target,
    req: &ChatRequest,
    remaining: Duration,
    ttft_limit: Option<Duration>,
) -> Result<(Chunk, ChunkStream), ProviderError> {
    let started = Instant::now();
    let first_deadline = started + ttft_limit.map_or(remaining, |t| t.min(remaining));
    let what = if ttft_limit.is_some_and(|t| t < remaining) {
        "waiting for the first token (ttft_timeout_ms)"
    } else {
        "waiting for the first token (route deadline)"
    };
    let mut stream = match tokio::time::timeout_at(
        first_deadline,
        target.provider.chat_stream(&target.model, req),
    )
    .await
    {
        Ok(r) => r?,
        Err(_) => return Err(ProviderError::Timeout(what)),
    };
    match tokio::time::timeout_at(first_deadline, stream.next()).await {
        Err(_) => Err(ProviderError::Timeout(what)),
        Ok(None) => Err(ProviderError::Stream(
            "the upstream ended the stream before any chunk".into(),
        )),
        Ok(Some(Err(e))) => Err(e),
        Ok(Some(Ok(first))) => Ok((first, stream)),
    }
}

/// The pause before the next try of the same target, or `None` to move to the next target
/// (the upstream asked for a longer wait than the route allows).
fn backoff(error: &ProviderError, try_index: u32, base_ms: u64, max_ms: u64) -> Option<Duration> {
    let max = Duration::from_millis(max_ms);
    if let Some(after) = error.retry_after() {
        return (after <= max).then_some(after);
    }
    let ceiling = base_ms
        .saturating_mul(1u64 << try_index.min(16))
        .min(max_ms);
    let jittered = rand::rng().random_range(0..=ceiling);
    Some(Duration::from_millis(jittered))
}

fn attempt_record(
    target: &Target,
    result: &Result<Served, ProviderError>,
    started: Instant,
    at: Instant,
    latency: Duration,
    cold: bool,
) -> Attempt {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let (status, http_status, error, retryable) = match result {
        Ok(_) => ("ok", None, None, false),
        Err(e) => (
            "error",
            match e {
                ProviderError::Status { status, .. } => Some(*status),
                _ => None,
            },
            Some(e.to_string()),
            e.is_retryable(),
        ),
    };
    let usage = match result {
        Ok(Served::Complete(c)) => c.body.usage.unwrap_or_default(),
        _ => Default::default(),
    };
    Attempt {
        span_id: new_span_id(),
        target: target.name.clone(),
        provider: target.provider_name.clone(),
        model: target.model.clone(),
        offset_ms: ms(at.duration_since(started)),
        latency_ms: ms(latency),
        ttft_ms: matches!(result, Ok(Served::Stream { .. })).then(|| ms(latency)),
        status: status.to_string(),
        http_status,
        error,
        retryable,
        cold_start: cold,
        tokens_in: usage.prompt_tokens,
        tokens_out: usage.completion_tokens,
        tokens_cached: usage.cached_tokens(),
        cost_usd: target.price.map(|p| p.cost(&usage)).unwrap_or(0.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_honours_retry_after() {
        let e = ProviderError::Status {
            status: 503,
            message: String::new(),
            retry_after: None,
        };
        for _ in 0..100 {
            assert!(backoff(&e, 0, 50, 2000).unwrap() <= Duration::from_millis(50));
            assert!(backoff(&e, 3, 50, 2000).unwrap() <= Duration::from_millis(400));
            assert!(backoff(&e, 10, 50, 2000).unwrap() <= Duration::from_millis(2000));
        }
        let e = ProviderError::Status {
            status: 429,
            message: String::new(),
            retry_after: Some(Duration::from_secs(1)),
        };
        assert_eq!(backoff(&e, 0, 50, 2000), Some(Duration::from_secs(1)));
        assert_eq!(backoff(&e, 0, 50, 500), None);
    }
}
