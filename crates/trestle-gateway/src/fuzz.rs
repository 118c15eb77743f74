//! Fuzz targets for what reads hostile bytes: the chat request parser, the Anthropic front
//! door's request parser and stream translation, each provider's stream parser (after the
//! bounded SSE framer) and the config loader. Each must answer
//! with an error, never a panic, whatever it is fed.
//!
//! Under `cargo test` each target replays its corpus (`src/__fuzz__/fuzz__NAME/corpus`),
//! then mutations of every corpus entry (truncations, byte flips, inserted structure), then
//! random inputs: a few seconds in all. A long run uses a coverage-guided
//! engine through cargo-bolero (see docs/resilience.md, "Hostile input"):
//! `cargo bolero test -p trestle-gateway fuzz::chat_request --engine libfuzzer -T 10min`.

use bytes::Bytes;
use futures_util::StreamExt;
use trestle_core::Config;

use crate::pipeline::ingress;
use crate::providers::http::sse_parse;
use crate::providers::{anthropic, gemini, openai};

/// Random inputs per target under `cargo test`.
const ITERATIONS: usize = 20_000;
const MAX_LEN: usize = 8 * 1024;
/// Mutations of each corpus entry under `cargo test`.
const MUTATIONS: u64 = 400;

/// Runs `target` on mutations of every entry of `name`'s corpus, deterministically.
fn mutated(name: &str, target: impl Fn(&[u8])) {
    use rand::{Rng, SeedableRng};
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/__fuzz__")
        .join(format!("fuzz__{name}"))
        .join("corpus");
    let mut seeds: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    seeds.sort();
    assert!(!seeds.is_empty(), "corpus {} is empty", dir.display());
    const SPICE: [&[u8]; 10] = [
        b"\n", b"\n\n", b"\"", b"{", b"[", b"}", b"-1", b"1e999", b"\\u0000", b"data: ",
    ];
    for path in seeds {
        let seed = std::fs::read(&path).unwrap_or_default();
        target(&seed);
        for i in 0..MUTATIONS {
            let mut rng = rand::rngs::SmallRng::seed_from_u64(i);
            let mut m = seed.clone();
            for _ in 0..rng.random_range(1..4) {
                let at = if m.is_empty() {
                    0
                } else {
                    rng.random_range(0..m.len())
                };
                match rng.random_range(0..5) {
                    0 => m.truncate(at),
                    1 if !m.is_empty() => m[at] ^= 1 << rng.random_range(0..8),
                    2 => {
                        let spice = SPICE[rng.random_range(0..SPICE.len())];
                        m.splice(at..at, spice.iter().copied());
                    }
                    3 => {
                        let end = (at + rng.random_range(1..16)).min(m.len());
                        m.drain(at..end);
                    }
                    _ => {
                        let end = (at + rng.random_range(1..32)).min(m.len());
                        let copy = m[at..end].to_vec();
                        m.splice(at..at, copy);
                    }
                }
            }
            target(&m);
        }
    }
}

/// Splits `bytes` into pieces at the positions its first bytes pick, the way a network
/// might deliver them.
fn pieces(bytes: &[u8]) -> Vec<Result<Bytes, crate::providers::ProviderError>> {
    let cut = bytes.first().map_or(7, |b| usize::from(*b % 16) + 1);
    bytes
        .chunks(cut)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect()
}

/// Every SSE event in `bytes`, framed with small limits so the bounds are exercised too.
fn events(bytes: &[u8]) -> Vec<(String, String)> {
    let framed = sse_parse(futures_util::stream::iter(pieces(bytes)), 4_096, 1_024);
    futures_util::FutureExt::now_or_never(framed.collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .filter_map(Result::ok)
        .map(|e| (e.event, e.data))
        .collect()
}

fn chat_request_target(bytes: &[u8]) {
    if let Ok(req) = ingress::parse_chat(bytes) {
        // What a parsed request feeds downstream must hold too.
        let _ = req.last_user_text();
        let _ = openai::request_body("m", &req, true);
        let _ = anthropic::request::build_request("m", &req, true);
        let _ = gemini::request::request_body(&req);
    }
}

#[test]
fn chat_request() {
    mutated("chat_request", chat_request_target);
    bolero::check!()
        .with_iterations(ITERATIONS)
        .with_max_len(MAX_LEN)
        .for_each(chat_request_target);
}

fn messages_request_target(bytes: &[u8]) {
    use crate::frontdoor::anthropic::request;
    if let Ok(req) = request::parse(bytes, false) {
        // Both translations: towards any target, and carrying markers to Anthropic.
        for keep in [false, true] {
            if let Ok(t) = request::to_chat(req.clone(), keep) {
                let _ = openai::request_body("m", &t.chat, true);
                let _ = anthropic::request::build_request("m", &t.chat, true);
            }
        }
    }
}

#[test]
fn messages_request() {
    mutated("messages_request", messages_request_target);
    bolero::check!()
        .with_iterations(ITERATIONS)
        .with_max_len(MAX_LEN)
        .for_each(messages_request_target);
}

fn sse_front_door_target(bytes: &[u8]) {
    use crate::frontdoor::anthropic::stream::{Events, Frames};
    let mut frames = Frames::default();
    let mut events = Events::new("m", vec!["END".into()]);
    let mut out = bytes::BytesMut::new();
    for piece in pieces(bytes).into_iter().flatten() {
        for data in frames.push(&piece) {
            events.on_data(&data, &mut out);
        }
    }
    events.finish(&mut out);
}

#[test]
fn sse_front_door() {
    mutated("sse_front_door", sse_front_door_target);
    bolero::check!()
        .with_iterations(ITERATIONS)
        .with_max_len(MAX_LEN)
        .for_each(sse_front_door_target);
}

fn sse_openai_target(bytes: &[u8]) {
    for (_, data) in events(bytes) {
        let _ = openai::parse_chunk(&data);
    }
}

#[test]
fn sse_openai() {
    mutated("sse_openai", sse_openai_target);
    bolero::check!()
        .with_iterations(ITERATIONS)
        .with_max_len(MAX_LEN)
        .for_each(sse_openai_target);
}

fn sse_anthropic_target(bytes: &[u8]) {
    let mut state = anthropic::stream::StreamState::new();
    for (event, data) in events(bytes) {
        if state.on_event(&event, &data).is_err() {
            break;
        }
    }
}

#[test]
fn sse_anthropic() {
    mutated("sse_anthropic", sse_anthropic_target);
    bolero::check!()
        .with_iterations(ITERATIONS)
        .with_max_len(MAX_LEN)
        .for_each(sse_anthropic_target);
}

fn sse_gemini_target(bytes: &[u8]) {
    let mut state = gemini::stream::StreamState::new("m");
    for (_, data) in events(bytes) {
        if state.on_data(&data).is_err() {
            break;
        }
    }
    let _ = state.finish();
}

#[test]
fn sse_gemini() {
    mutated("sse_gemini", sse_gemini_target);
    bolero::check!()
        .with_iterations(ITERATIONS)
        .with_max_len(MAX_LEN)
        .for_each(sse_gemini_target);
}

fn config_target(bytes: &[u8]) {
    if let Ok(text) = std::str::from_utf8(bytes) {
        let _ = Config::parse(text, &|_| None);
    }
}

#[test]
fn config() {
    mutated("config", config_target);
    bolero::check!()
        .with_iterations(ITERATIONS)
        .with_max_len(MAX_LEN)
        .for_each(config_target);
}
