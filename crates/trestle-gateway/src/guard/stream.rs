//! Output guardrails on a stream, without buffering it: each choice's text is released as it
//! arrives up to the last plain word (lower-case letters followed by a space); what follows
//! could still be part of a finding (a phone number, a card, a name, an address split over
//! chunks) and is held until a plain word closes it, or until more than [`HOLD_MAX`]
//! characters wait, when all but the last [`HOLD`] go. Findings in the text about to be
//! released are redacted first, including ones that span chunks; a `block` ends the stream
//! with an error event. Guardrails that need the whole answer (`json_schema`, `moderation`,
//! `grounding`) run when the stream ends, before `[DONE]`.

use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use tokio::time::Instant;
use trestle_core::guard::{GuardAction, OnError};
use trestle_guard::Finding;

use super::{Context, GuardRecord, Guardrail, by_entity};
use crate::providers::{Chunk, ChunkStream, ProviderError};

/// Characters always held when the held text grows past [`HOLD_MAX`].
pub const HOLD: usize = 64;
/// The most characters held while waiting for a plain word.
pub const HOLD_MAX: usize = 256;
/// Characters of released text a scan looks back over, so a finding that began there is seen.
const LOOK_BACK: usize = 64;

/// What a guarded stream reports to the trace when it ends.
pub type Records = Arc<Mutex<Vec<GuardRecord>>>;

/// One choice's text: what was released, and what is held.
#[derive(Default)]
struct Text {
    released: String,
    held: String,
    /// Per guardrail: findings so far, whether it was violated, findings by entity.
    seen: Vec<(u32, bool, std::collections::BTreeMap<String, u32>)>,
}

struct State {
    guards: Vec<Arc<Guardrail>>,
    ctx: Arc<Context>,
    texts: Vec<Text>,
    records: Records,
    started: Instant,
    done: bool,
}

/// Wraps `first` and `rest` so every chunk's text passes `guards` before it is sent.
pub fn guarded(
    first: Chunk,
    rest: ChunkStream,
    guards: Vec<Arc<Guardrail>>,
    ctx: Arc<Context>,
    records: Records,
) -> ChunkStream {
    let n = guards.len();
    let state = State {
        guards,
        ctx,
        texts: Vec::new(),
        records,
        started: Instant::now(),
        done: false,
    };
    let input = futures_util::stream::iter([Ok(first)]).chain(rest);
    futures_util::stream::unfold((state, input, n), |(mut st, mut input, n)| async move {
        if st.done {
            return None;
        }
        match input.next().await {
            Some(Ok(chunk)) => {
                let out = st.pass(chunk);
                if out.is_err() {
                    st.done = true;
                    st.finish_records();
                }
                Some((out, (st, input, n)))
            }
            Some(Err(e)) => {
                st.done = true;
                st.finish_records();
                Some((Err(e), (st, input, n)))
            }
            None => {
                st.done = true;
                let out = st.end().await;
                out.map(|item| (item, (st, input, n)))
            }
        }
    })
    .boxed()
}

impl State {
    fn text(&mut self, index: usize) -> &mut Text {
        while self.texts.len() <= index {
            self.texts.push(Text {
                seen: vec![(0, false, Default::default()); self.guards.len()],
                ..Default::default()
            });
        }
        &mut self.texts[index]
    }

    /// Takes a chunk in; sends it on with its text replaced by what may be released now.
    fn pass(&mut self, mut chunk: Chunk) -> Result<Chunk, ProviderError> {
        let mut changed = false;
        for c in 0..chunk.chunk.choices.len() {
            let index = chunk.chunk.choices[c].index as usize;
            let finishing = chunk.chunk.choices[c].finish_reason.is_some();
            let delta = chunk.chunk.choices[c].delta.content.take();
            if delta.is_none() && !finishing {
                continue;
            }
            changed = true;
            let text = self.text(index);
            text.held.push_str(delta.as_deref().unwrap_or(""));
            let release = self.release(index, finishing)?;
            chunk.chunk.choices[c].delta.content =
                (!release.is_empty() || delta.is_some()).then_some(release);
        }
        if changed {
            chunk.raw = None;
        }
        Ok(chunk)
    }

    /// Runs the windowed guardrails over choice `index`'s held text (with a look-back into
    /// what was released) and returns what can go out: everything on `all`, else all but the
    /// last `HOLD` characters and any finding still growing into them.
    fn release(&mut self, index: usize, all: bool) -> Result<String, ProviderError> {
        let guards = self.guards.clone();
        let ctx = self.ctx.clone();
        let text = self.text(index);
        let back: String = {
            let n = text.released.chars().count();
            text.released
                .chars()
                .skip(n.saturating_sub(LOOK_BACK))
                .collect()
        };
        let back_len = back.chars().count();
        let held_len = text.held.chars().count();
        let mut cut = if all {
            held_len
        } else {
            release_point(&text.held, held_len)
        };
        let window = format!("{back}{}", text.held);
        let mut redact: Vec<Finding> = Vec::new();
        for (g, guard) in guards.iter().enumerate() {
            if guard.needs_whole_text() {
                continue;
            }
            let verdict = match guard.kind {
                // Length counts everything sent so far.
                trestle_core::guard::GuardKind::MaxLength => {
                    let whole = format!("{}{}", text.released, text.held);
                    guard.check_now(&whole, &ctx)
                }
                _ => guard.check_now(&window, &ctx),
            };
            let verdict = match verdict {
                Ok(v) => v,
                Err(e) if guard.on_error == OnError::Allow => {
                    tracing::warn!(guardrail = %guard.name, error = %e, "guardrail failed; allowed");
                    continue;
                }
                Err(e) => return Err(blocked(guard, &format!("the guardrail failed: {e}"))),
            };
            // Only findings that end in the held text are new; those still growing into the
            // hold are left for the next chunk.
            let settled: Vec<&Finding> = verdict
                .findings
                .iter()
                .filter(|f| f.end > back_len && (all || f.end - back_len <= cut))
                .collect();
            for f in verdict
                .findings
                .iter()
                .filter(|f| f.end > back_len && f.start >= back_len)
            {
                if !all && f.end - back_len > cut {
                    cut = cut.min(f.start - back_len);
                }
            }
            // A block need not wait for a finding to stop growing: any new one blocks now.
            let settled: Vec<&Finding> = if guard.action == GuardAction::Redact {
                settled
            } else {
                verdict
                    .findings
                    .iter()
                    .filter(|f| f.end > back_len)
                    .collect()
            };
            let violated = verdict.violated && (!settled.is_empty() || verdict.findings.is_empty());
            if !violated {
                continue;
            }
            text.seen[g].0 += settled.len() as u32;
            for (e, n) in by_entity(&settled.iter().map(|f| (*f).clone()).collect::<Vec<_>>()) {
                *text.seen[g].2.entry(e).or_insert(0) += n;
            }
            text.seen[g].1 = true;
            match guard.action {
                GuardAction::Redact => redact.extend(
                    settled
                        .into_iter()
                        .filter(|f| f.start >= back_len)
                        .map(|f| {
                            Finding::new(
                                f.entity.clone(),
                                f.start - back_len,
                                f.end - back_len,
                                f.score,
                            )
                        }),
                ),
                GuardAction::Block | GuardAction::Reask => {
                    let why = verdict
                        .detail
                        .clone()
                        .unwrap_or_else(|| format!("found {}", entity_list(&verdict.findings)));
                    return Err(blocked(guard, &why));
                }
                GuardAction::Flag => {}
            }
        }
        let held = std::mem::take(&mut text.held);
        let cut_byte = held.char_indices().nth(cut).map_or(held.len(), |(b, _)| b);
        let (out, keep) = held.split_at(cut_byte);
        let redact: Vec<Finding> = redact.into_iter().filter(|f| f.end <= cut).collect();
        let out = trestle_guard::redact(out, &redact);
        text.held = keep.to_string();
        text.released.push_str(&out);
        Ok(out)
    }

    /// The stream ended: release what is held, run the whole-text guardrails, and report.
    async fn end(&mut self) -> Option<Result<Chunk, ProviderError>> {
        let mut tail = Vec::new();
        for i in 0..self.texts.len() {
            if self.texts[i].held.is_empty() {
                continue;
            }
            match self.release(i, true) {
                Ok(t) if !t.is_empty() => tail.push((i, t)),
                Ok(_) => {}
                Err(e) => {
                    self.finish_records();
                    return Some(Err(e));
                }
            }
        }
        let guards = self.guards.clone();
        for (g, guard) in guards
            .iter()
            .enumerate()
            .filter(|(_, g)| g.needs_whole_text())
        {
            for i in 0..self.texts.len() {
                let whole = self.texts[i].released.clone();
                let verdict = match guard.check(&whole, &self.ctx).await {
                    Ok(v) => v,
                    Err(_) if guard.on_error == OnError::Allow => continue,
                    Err(e) => {
                        self.finish_records();
                        return Some(Err(blocked(guard, &format!("the guardrail failed: {e}"))));
                    }
                };
                if verdict.violated {
                    let t = &mut self.texts[i];
                    t.seen[g].1 = true;
                    t.seen[g].0 += verdict.findings.len() as u32;
                    for (e, n) in by_entity(&verdict.findings) {
                        *t.seen[g].2.entry(e).or_insert(0) += n;
                    }
                    if matches!(guard.action, GuardAction::Block | GuardAction::Reask) {
                        self.finish_records();
                        let why = verdict
                            .detail
                            .unwrap_or_else(|| entity_list(&verdict.findings));
                        return Some(Err(blocked(guard, &why)));
                    }
                }
            }
        }
        self.finish_records();
        if tail.is_empty() {
            return None;
        }
        // What was held when the upstream ended without a finishing chunk.
        let choices = tail
            .into_iter()
            .map(|(i, t)| trestle_core::openai::ChunkChoice {
                index: i as u32,
                delta: trestle_core::openai::Delta {
                    content: Some(t),
                    ..Default::default()
                },
                finish_reason: None,
                extra: Default::default(),
            })
            .collect();
        Some(Ok(Chunk::from(trestle_core::openai::ChatChunk {
            id: String::new(),
            object: "chat.completion.chunk".into(),
            created: 0,
            model: String::new(),
            choices,
            usage: None,
            extra: Default::default(),
        })))
    }

    /// Hands each guardrail's outcome to the trace.
    fn finish_records(&mut self) {
        let latency_ms = self.started.elapsed().as_secs_f64() * 1000.0;
        let Ok(mut records) = self.records.lock() else {
            return;
        };
        for (g, guard) in self.guards.iter().enumerate() {
            let (violated, entities) = self.texts.iter().fold(
                (false, std::collections::BTreeMap::new()),
                |(v, mut e), t| {
                    for (k, c) in &t.seen[g].2 {
                        *e.entry(k.clone()).or_insert(0) += c;
                    }
                    (v || t.seen[g].1, e)
                },
            );
            let outcome = match (violated, guard.action) {
                (false, _) => "pass",
                (true, GuardAction::Redact) => "redacted",
                (true, GuardAction::Flag) => "flagged",
                (true, _) => "blocked",
            };
            crate::metrics::guardrail(&guard.name, "output", guard.action.as_str(), outcome);
            records.push(GuardRecord {
                guardrail: guard.name.clone(),
                kind: guard.kind.as_str().into(),
                stage: "output".into(),
                action: guard.action.as_str().into(),
                outcome: outcome.into(),
                entities,
                detail: None,
                latency_ms,
            });
        }
    }
}

/// Where held text can be cut: just after the last plain word and its space — a word of
/// lower-case letters (with trailing punctuation), which no entity continues through. With
/// none, nothing goes until more than `HOLD_MAX` characters wait.
fn release_point(held: &str, held_len: usize) -> usize {
    let chars: Vec<char> = held.chars().collect();
    let mut i = chars.len();
    while i > 0 {
        i -= 1;
        if !chars[i].is_whitespace() || i == 0 {
            continue;
        }
        // The word that ends at `i`.
        let mut start = i;
        while start > 0 && !chars[start - 1].is_whitespace() {
            start -= 1;
        }
        let word: String = chars[start..i].iter().collect();
        let bare = word.trim_end_matches([',', '.', ';', '!', '?', ':', ')', '"']);
        if !bare.is_empty()
            && bare
                .chars()
                .all(|c| c.is_lowercase() || c == '\'' || c == '-')
        {
            return i + 1;
        }
    }
    if held_len > HOLD_MAX {
        held_len - HOLD
    } else {
        0
    }
}

fn entity_list(findings: &[Finding]) -> String {
    by_entity(findings)
        .into_iter()
        .map(|(e, n)| format!("{e} ×{n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn blocked(guard: &Guardrail, why: &str) -> ProviderError {
    ProviderError::Blocked {
        guardrail: guard.name.clone(),
        message: format!(
            "the answer was blocked by guardrail `{}`: {why}",
            guard.name
        ),
    }
}
