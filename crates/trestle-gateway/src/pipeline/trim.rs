//! Budget: a route's `max_input_tokens`. The request's messages (and tool definitions) are
//! counted with the tokenizer of every distinct model family in the chain that will serve —
//! the larger count of each message is used, so the trimmed request fits whichever target
//! answers — and, over the budget, either trimmed (`trim = "oldest_turns"`) or refused
//! (`trim = "reject"`). A route without `max_input_tokens` counts nothing.
//!
//! Trimming keeps every system and developer message and the newest turns that fit, dropping
//! the oldest first. A turn starts at a user message and runs to the next one, so an
//! assistant's tool calls and the tool results that answer them always stay or go together;
//! the newest turn (the last user message and what follows it) always stays.

use std::sync::Arc;

use trestle_core::budget::TrimPolicy;
use trestle_core::openai::{ChatRequest, Message, Role};

use crate::error::GatewayError;
use crate::metrics;
use crate::runtime::{Route, Target};
use crate::store::InputBudget;
use crate::tokens::{REPLY_PRIMING, Tokenizer};

/// What the budget does to a conversation.
#[derive(Debug, PartialEq, Eq)]
pub enum Fit {
    /// Within the budget as it is.
    Fits { tokens: u64 },
    /// Within the budget once the messages not in `keep` are dropped.
    Trimmed {
        keep: Vec<bool>,
        before: u64,
        after: u64,
    },
    /// Over the budget, and the policy is to refuse.
    Rejected { tokens: u64 },
    /// Over the budget even with only the system messages and the newest turn.
    TooLong { tokens: u64, least: u64 },
}

/// Fits a conversation to `limit` tokens. `costs[i]` is message `i`'s tokens; `fixed` is what
/// every request costs besides its messages (reply priming, tool definitions).
pub fn fit(messages: &[Message], costs: &[u64], fixed: u64, limit: u64, policy: TrimPolicy) -> Fit {
    let tokens = fixed + costs.iter().sum::<u64>();
    if tokens <= limit {
        return Fit::Fits { tokens };
    }
    if policy == TrimPolicy::Reject {
        return Fit::Rejected { tokens };
    }
    let pinned = |m: &Message| matches!(m.role, Role::System | Role::Developer);
    let turns = turns(messages);
    let cost = |range: &std::ops::Range<usize>| -> u64 {
        range
            .clone()
            .filter(|&i| !pinned(&messages[i]))
            .map(|i| costs[i])
            .sum()
    };
    let system: u64 = (0..messages.len())
        .filter(|&i| pinned(&messages[i]))
        .map(|i| costs[i])
        .sum();
    let newest = turns.last().map_or(0, &cost);
    let least = fixed + system + newest;
    if least > limit {
        return Fit::TooLong { tokens, least };
    }
    let mut keep: Vec<bool> = messages.iter().map(pinned).collect();
    let mut after = least;
    for (n, turn) in turns.iter().enumerate().rev() {
        let c = cost(turn);
        // The newest turn always stays; older ones while they fit, newest first, and none
        // older than the first that does not (no gaps in the conversation).
        if n + 1 != turns.len() {
            if after + c > limit {
                break;
            }
            after += c;
        }
        for i in turn.clone() {
            keep[i] = true;
        }
    }
    Fit::Trimmed {
        keep,
        before: tokens,
        after,
    }
}

/// The conversation's turns, oldest first, as index ranges: each starts at a user message
/// (or the first message) and runs to the next user message. A tool result whose call sits in
/// an earlier turn (a user message between them) merges the turns between, so a call and its
/// results are never split. System and developer messages lie inside turns but are kept
/// apart by [`fit`].
fn turns(messages: &[Message]) -> Vec<std::ops::Range<usize>> {
    let mut starts: Vec<usize> = Vec::new();
    let mut calls: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for (i, m) in messages.iter().enumerate() {
        if i == 0 || m.role == Role::User {
            starts.push(i);
        }
        for id in m
            .tool_calls
            .iter()
            .flatten()
            .filter_map(|c| c.id.as_deref())
        {
            calls.insert(id, starts.len() - 1);
        }
        if m.role == Role::Tool
            && let Some(&turn) = m.tool_call_id.as_deref().and_then(|id| calls.get(id))
            && turn + 1 < starts.len()
        {
            // Merge every turn after the call's into it.
            starts.truncate(turn + 1);
            for t in calls.values_mut() {
                *t = (*t).min(turn);
            }
        }
    }
    let mut out = Vec::with_capacity(starts.len());
    for (n, &s) in starts.iter().enumerate() {
        let end = starts.get(n + 1).copied().unwrap_or(messages.len());
        out.push(s..end);
    }
    out
}

/// Requests with more text than this are counted on the blocking pool, not on the worker
/// that serves other requests.
const INLINE_BYTES: usize = 32 * 1024;

/// Applies the route's `max_input_tokens` to the request, for the chain `targets`. Returns
/// what the trace records (none when the route has no budget) and, when the request cannot
/// be served within it, the 400 to answer.
pub async fn apply(
    route: &Route,
    targets: &[Arc<Target>],
    req: &mut ChatRequest,
) -> (Option<InputBudget>, Option<GatewayError>) {
    let Some(limit) = route.config.max_input_tokens else {
        return (None, None);
    };
    let policy = route.config.trim.unwrap_or_default();
    // One count per distinct tokenizer in the chain.
    let mut tokenizers: Vec<Tokenizer> = Vec::new();
    for t in targets {
        if !tokenizers.iter().any(|k| k.name() == t.tokenizer.name()) {
            tokenizers.push(t.tokenizer.clone());
        }
    }
    if tokenizers.is_empty() {
        tokenizers.push(Tokenizer::Estimate);
    }
    let bytes: usize = req
        .messages
        .iter()
        .map(|m| m.content.as_ref().map_or(0, |c| c.text_len()))
        .sum();
    let messages = std::mem::take(&mut req.messages);
    let tools = req.tools.take();
    let count = move || {
        let costs = costs(&tokenizers, &messages);
        let fixed = REPLY_PRIMING
            + tokenizers
                .iter()
                .map(|k| k.tools(tools.as_deref().unwrap_or_default()))
                .max()
                .unwrap_or(0);
        let names: Vec<&str> = tokenizers.iter().map(Tokenizer::name).collect();
        (messages, tools, costs, fixed, names.join(","))
    };
    let counted = if bytes > INLINE_BYTES {
        tokio::task::spawn_blocking(count).await
    } else {
        Ok(count())
    };
    let Ok((messages, tools, costs, fixed, tokenizer)) = counted else {
        return (
            None,
            Some(GatewayError::Internal(
                "counting input tokens failed".into(),
            )),
        );
    };
    req.tools = tools;
    req.messages = messages;
    let fitted = fit(&req.messages, &costs, fixed, u64::from(limit), policy);
    let record = |before: u64, after: u64, trimmed: u32| InputBudget {
        tokenizer: tokenizer.clone(),
        tokens_before: before,
        tokens_after: after,
        trimmed_messages: trimmed,
    };
    let key = format!("routes.{}.max_input_tokens", route.name);
    match fitted {
        Fit::Fits { tokens } => (Some(record(tokens, tokens, 0)), None),
        Fit::Trimmed {
            keep,
            before,
            after,
        } => {
            let all = std::mem::take(&mut req.messages);
            let dropped = keep.iter().filter(|k| !**k).count() as u32;
            req.messages = all
                .into_iter()
                .zip(keep)
                .filter_map(|(m, k)| k.then_some(m))
                .collect();
            metrics::context_trimmed(&route.name);
            (Some(record(before, after, dropped)), None)
        }
        Fit::Rejected { tokens } => (
            Some(record(tokens, tokens, 0)),
            Some(too_long(format!(
                "the request has {tokens} input tokens ({tokenizer}), over the route's limit \
                 of {limit} ({key}); shorten the conversation, or set trim = \"oldest_turns\" \
                 to have the oldest turns dropped"
            ))),
        ),
        Fit::TooLong { tokens, least } => (
            Some(record(tokens, tokens, 0)),
            Some(too_long(format!(
                "the request has {tokens} input tokens ({tokenizer}); even the system messages \
                 and the last user turn alone take {least}, over the route's limit of {limit} \
                 ({key}); shorten the last message or the system prompt"
            ))),
        ),
    }
}

fn too_long(message: String) -> GatewayError {
    GatewayError::InvalidRequest {
        message,
        param: Some("messages".into()),
        code: "context_length_exceeded",
    }
}

/// Each message's tokens: the largest count among the tokenizers.
fn costs(tokenizers: &[Tokenizer], messages: &[Message]) -> Vec<u64> {
    messages
        .iter()
        .map(|m| tokenizers.iter().map(|k| k.message(m)).max().unwrap_or(0))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use trestle_core::openai::{FunctionCall, ToolCall};

    fn msg(role: Role, text: &str) -> Message {
        Message::new(role, text)
    }

    fn call(ids: &[&str]) -> Message {
        Message {
            role: Role::Assistant,
            content: None,
            tool_calls: Some(
                ids.iter()
                    .map(|id| ToolCall {
                        id: Some(id.to_string()),
                        kind: "function".into(),
                        function: FunctionCall {
                            name: "lookup".into(),
                            arguments: "{}".into(),
                        },
                    })
                    .collect(),
            ),
            ..Default::default()
        }
    }

    fn result(id: &str) -> Message {
        Message {
            role: Role::Tool,
            content: Some(trestle_core::openai::Content::Text("42".into())),
            tool_call_id: Some(id.into()),
            ..Default::default()
        }
    }

    /// Each message costs 10 tokens; no fixed part.
    fn kept(messages: &[Message], limit: u64) -> Fit {
        let costs = vec![10; messages.len()];
        fit(messages, &costs, 0, limit, TrimPolicy::OldestTurns)
    }

    fn keep_of(f: &Fit) -> Vec<usize> {
        match f {
            Fit::Trimmed { keep, .. } => (0..keep.len()).filter(|&i| keep[i]).collect(),
            other => panic!("not trimmed: {other:?}"),
        }
    }

    #[test]
    fn a_conversation_within_the_budget_is_left_alone() {
        let m = [msg(Role::System, "s"), msg(Role::User, "u")];
        assert_eq!(kept(&m, 20), Fit::Fits { tokens: 20 });
    }

    #[test]
    fn the_oldest_turns_go_first_and_the_system_prompt_stays() {
        let m = [
            msg(Role::System, "s"),     // 0
            msg(Role::User, "u1"),      // 1
            msg(Role::Assistant, "a1"), // 2
            msg(Role::User, "u2"),      // 3
            msg(Role::Assistant, "a2"), // 4
            msg(Role::Developer, "d"),  // 5: pinned where it is
            msg(Role::User, "u3"),      // 6
        ];
        let f = kept(&m, 50);
        assert_eq!(
            f,
            Fit::Trimmed {
                keep: vec![true, false, false, true, true, true, true],
                before: 70,
                after: 50
            }
        );
        // One token less and the turn of u2 goes too; the system and developer messages stay.
        assert_eq!(keep_of(&kept(&m, 49)), vec![0, 5, 6]);
    }

    #[test]
    fn turns_go_whole_and_newest_first_without_gaps() {
        let m = [
            msg(Role::User, "u1"),
            msg(Role::User, "u2"),
            msg(Role::Assistant, "a2"),
            msg(Role::Assistant, "a2 again"),
            msg(Role::User, "u3"),
        ];
        // Turn u2 (30) does not fit beside u3 (10) in 25; u1 (10) would, but is older: dropped.
        assert_eq!(keep_of(&kept(&m, 25)), vec![4]);
        assert_eq!(keep_of(&kept(&m, 40)), vec![1, 2, 3, 4]);
    }

    #[test]
    fn a_tool_call_is_never_kept_without_its_results_nor_a_result_without_its_call() {
        let m = [
            msg(Role::System, "s"),    // 0
            msg(Role::User, "u1"),     // 1
            call(&["c1", "c2"]),       // 2
            result("c1"),              // 3
            result("c2"),              // 4
            msg(Role::Assistant, "a"), // 5
            msg(Role::User, "u2"),     // 6
        ];
        // The first turn (u1, call, 2 results, answer: 50) fits whole or not at all.
        assert_eq!(keep_of(&kept(&m, 60)), vec![0, 6]);
        assert_eq!(keep_of(&kept(&m, 69)), vec![0, 6]);
        assert!(matches!(kept(&m, 70), Fit::Fits { .. }));
        // A result separated from its call by a user message still goes with its call.
        let odd = [
            msg(Role::User, "u1"),
            call(&["c1"]),
            msg(Role::User, "u2"),
            result("c1"),
            msg(Role::User, "u3"),
        ];
        assert_eq!(turns(&odd), vec![0..4, 4..5]);
        assert_eq!(keep_of(&kept(&odd, 49)), vec![4]);
    }

    #[test]
    fn the_last_user_message_and_what_follows_it_always_stay() {
        // An agent step: the last user message, a call and its result are the newest turn.
        let m = [
            msg(Role::System, "s"),
            msg(Role::User, "old"),
            msg(Role::Assistant, "old answer"),
            msg(Role::User, "now"),
            call(&["c9"]),
            result("c9"),
        ];
        assert_eq!(keep_of(&kept(&m, 40)), vec![0, 3, 4, 5]);
        // Even the system prompt and the newest turn do not fit: refused with both counts.
        assert_eq!(
            kept(&m, 39),
            Fit::TooLong {
                tokens: 60,
                least: 40
            }
        );
    }

    #[test]
    fn reject_mode_refuses_instead_of_trimming() {
        let m = [msg(Role::User, "u1"), msg(Role::User, "u2")];
        let costs = [10, 10];
        assert_eq!(
            fit(&m, &costs, 3, 22, TrimPolicy::Reject),
            Fit::Rejected { tokens: 23 }
        );
        assert_eq!(
            fit(&m, &costs, 3, 23, TrimPolicy::Reject),
            Fit::Fits { tokens: 23 }
        );
    }

    #[test]
    fn the_fixed_part_counts_against_the_budget() {
        let m = [msg(Role::User, "u1"), msg(Role::User, "u2")];
        let f = fit(&m, &[10, 10], 5, 19, TrimPolicy::OldestTurns);
        assert_eq!(
            f,
            Fit::Trimmed {
                keep: vec![false, true],
                before: 25,
                after: 15
            }
        );
    }

    #[test]
    fn counts_are_exact_with_tiktoken_and_the_larger_family_wins() {
        use trestle_core::budget::Encoding;
        // Reference counts from OpenAI's Python tiktoken 0.14.0: "Bonjour 🌍 — ça va?" is 7
        // tokens in o200k_base and 8 in cl100k_base; "user" is 1 in both.
        let m = [msg(Role::User, "Bonjour 🌍 — ça va?")];
        let o = Tokenizer::Tiktoken(Encoding::O200kBase);
        let c = Tokenizer::Tiktoken(Encoding::Cl100kBase);
        assert_eq!(costs(std::slice::from_ref(&o), &m), vec![3 + 1 + 7]);
        assert_eq!(costs(&[o, c], &m), vec![3 + 1 + 8]);
    }
}
