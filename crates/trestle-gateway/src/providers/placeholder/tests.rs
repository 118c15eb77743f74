//! The placeholder model: determinism, caps, tools, JSON modes and pacing.

use std::time::Duration;

use futures_util::StreamExt;
use trestle_core::config::{Dist, DistSpec, PlaceholderConfig, TextMode};
use trestle_core::openai::ChatRequest;

use super::*;

fn req(json: &str) -> ChatRequest {
    serde_json::from_str(json).unwrap()
}

#[test]
fn echo_repeats_the_last_user_message_within_the_cap() {
    let p = Placeholder::new(PlaceholderConfig::default()).unwrap();
    let r = req(r#"{"model":"m","messages":[{"role":"user","content":"one two three four"}]}"#);
    let plan = p.plan(&r);
    assert_eq!(plan.text(), "one two three four");
    assert_eq!(plan.finish_reason, "stop");
    assert_eq!(plan.usage.completion_tokens, 4);
    let r = req(
        r#"{"model":"m","max_tokens":2,"messages":[{"role":"user","content":"one two three four"}]}"#,
    );
    let plan = p.plan(&r);
    assert_eq!(plan.text(), "one two");
    assert_eq!(plan.finish_reason, "length");
}

#[test]
fn the_same_seed_gives_the_same_reply() {
    let config = PlaceholderConfig {
        mode: TextMode::Lorem,
        seed: 7,
        ..Default::default()
    };
    let r = req(r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#);
    let a = Placeholder::new(config.clone()).unwrap().plan(&r).text();
    let b = Placeholder::new(config).unwrap().plan(&r).text();
    assert_eq!(a, b);
    assert_eq!(split_tokens(&a).len(), 48);
}

#[test]
fn stop_sequences_cut_the_reply() {
    let p = Placeholder::new(PlaceholderConfig::default()).unwrap();
    let r = req(
        r#"{"model":"m","stop":"three","messages":[{"role":"user","content":"one two three four"}]}"#,
    );
    assert_eq!(p.plan(&r).text(), "one two ");
}

#[test]
fn tools_are_called_until_a_result_comes_back() {
    let p = Placeholder::new(PlaceholderConfig::default()).unwrap();
    let tools = r#""tools":[{"type":"function","function":{"name":"get_weather","parameters":
        {"type":"object","properties":{"city":{"type":"string"},"days":{"type":"integer"},
        "unit":{"enum":["c","f"]}},"required":["city"]}}}]"#;
    let r = req(&format!(
        r#"{{"model":"m",{tools},"messages":[{{"role":"user","content":"weather?"}}]}}"#
    ));
    let plan = p.plan(&r);
    let (name, args) = plan.tool_call.clone().unwrap();
    assert_eq!(name, "get_weather");
    let args: serde_json::Value = serde_json::from_str(&args).unwrap();
    assert!(args["city"].is_string());
    assert!(args["days"].is_i64());
    assert_eq!(args["unit"], "c");
    assert_eq!(plan.finish_reason, "tool_calls");
    let c = completion(&plan, "chatcmpl-1", "m");
    assert!(c.choices[0].message.content.is_none());

    let r = req(&format!(
        r#"{{"model":"m",{tools},"messages":[{{"role":"user","content":"weather?"}},
        {{"role":"assistant","tool_calls":[{{"id":"c","type":"function","function":{{"name":"get_weather","arguments":"{{}}"}}}}]}},
        {{"role":"tool","tool_call_id":"c","content":"sunny"}}]}}"#
    ));
    assert!(p.plan(&r).tool_call.is_none());
    let r = req(&format!(
        r#"{{"model":"m",{tools},"tool_choice":"none","messages":[{{"role":"user","content":"x"}}]}}"#
    ));
    assert!(p.plan(&r).tool_call.is_none());
}

#[test]
fn json_modes_produce_json() {
    let p = Placeholder::new(PlaceholderConfig::default()).unwrap();
    let r = req(
        r#"{"model":"m","response_format":{"type":"json_object"},"messages":[{"role":"user","content":"hi"}]}"#,
    );
    let v: serde_json::Value = serde_json::from_str(&p.plan(&r).text()).unwrap();
    assert_eq!(v["reply"], "hi");
    let r = req(
        r#"{"model":"m","response_format":{"type":"json_schema","json_schema":{"name":"x","schema":
        {"type":"object","properties":{"tags":{"type":"array","items":{"type":"string"}},"ok":{"type":"boolean"}}}}},
        "messages":[{"role":"user","content":"hi"}]}"#,
    );
    let v: serde_json::Value = serde_json::from_str(&p.plan(&r).text()).unwrap();
    assert!(v["tags"][0].is_string());
    assert_eq!(v["ok"], true);
}

#[test]
fn stream_chunks_carry_role_tokens_finish_and_usage() {
    let p = Placeholder::new(PlaceholderConfig::default()).unwrap();
    let plan = p.plan(&req(
        r#"{"model":"m","messages":[{"role":"user","content":"a b"}]}"#,
    ));
    let all = chunks(&plan, "chatcmpl-x", "m", true);
    assert_eq!(all.len(), 5);
    assert_eq!(all[0].choices[0].delta.role.as_deref(), Some("assistant"));
    assert_eq!(all[1].choices[0].delta.content.as_deref(), Some("a"));
    assert_eq!(all[2].choices[0].delta.content.as_deref(), Some(" b"));
    assert_eq!(all[3].choices[0].finish_reason.as_deref(), Some("stop"));
    assert!(all[4].choices.is_empty());
    assert_eq!(all[4].usage.unwrap().completion_tokens, 2);
    assert_eq!(chunks(&plan, "chatcmpl-x", "m", false).len(), 4);
}

#[tokio::test(start_paused = true)]
async fn streams_are_paced_by_ttft_and_rate() {
    let config = PlaceholderConfig {
        ttft_ms: Dist::Fixed(300.0),
        tokens_per_sec: Dist::Spec(DistSpec::Fixed { value: 10.0 }),
        ..Default::default()
    };
    let p = Placeholder::new(config).unwrap();
    let r = req(r#"{"model":"m","messages":[{"role":"user","content":"a b c d"}]}"#);
    let start = tokio::time::Instant::now();
    let mut stream = p.chat_stream("m", &r).await.unwrap();
    let mut at = Vec::new();
    while let Some(c) = stream.next().await {
        c.unwrap();
        at.push(start.elapsed());
    }
    // role+first token at 300 ms, then 100 ms per token; finish and usage right after.
    assert_eq!(at[0], Duration::from_millis(300));
    assert_eq!(at[1], Duration::from_millis(300));
    assert_eq!(at[4], Duration::from_millis(600));
    assert_eq!(at[6], Duration::from_millis(600));
}

#[test]
fn distributions_sample_in_range() {
    use rand::SeedableRng;
    let mut rng = rand::rngs::SmallRng::seed_from_u64(1);
    for _ in 0..1000 {
        let v = sample(
            &Dist::Spec(DistSpec::Uniform {
                min: 10.0,
                max: 20.0,
            }),
            &mut rng,
        );
        assert!((10.0..20.0).contains(&v));
        assert!(
            sample(
                &Dist::Spec(DistSpec::Normal {
                    mean: 5.0,
                    std: 10.0
                }),
                &mut rng
            ) >= 0.0
        );
    }
    let mut s: Vec<f64> = (0..2001)
        .map(|_| {
            sample(
                &Dist::Spec(DistSpec::Lognormal {
                    median: 100.0,
                    sigma: 0.5,
                }),
                &mut rng,
            )
        })
        .collect();
    s.sort_by(f64::total_cmp);
    assert!((80.0..125.0).contains(&s[1000]), "median {}", s[1000]);
}

#[test]
fn pseudo_embeddings_are_unit_vectors() {
    let v = render::pseudo_embedding("Hello world", 32);
    let norm: f32 = v.iter().map(|x| x * x).sum();
    assert!((norm - 1.0).abs() < 1e-5);
    assert_eq!(v, render::pseudo_embedding("hello WORLD", 32));
}

#[test]
fn a_script_answers_by_the_first_matching_rule() {
    let script = "{\"match\": \"(?i)refund\", \"reply\": \"Within 30 days.\"}\n\n{\"match\": \"ship\", \"reply\": \"3-5 days.\"}\n";
    let replies = Replies::parse(TextMode::Script, script).unwrap();
    let config = PlaceholderConfig {
        mode: TextMode::Script,
        ..Default::default()
    };
    let ask = |text: &str| {
        let r = req(&format!(
            r#"{{"model":"m","messages":[{{"role":"user","content":"{text}"}}]}}"#
        ));
        plan(&config, &replies, "m", &r, 0).text()
    };
    assert_eq!(ask("Can I get a REFUND on shipping?"), "Within 30 days.");
    assert_eq!(ask("how long does shipping take"), "3-5 days.");
    assert_eq!(ask("hello there"), "hello there", "no rule: an echo");
    let e = Replies::parse(TextMode::Script, "{\"match\": \"(\", \"reply\": \"x\"}").unwrap_err();
    assert!(e.contains("line 1") && e.contains("regex"), "{e}");
    assert!(Replies::parse(TextMode::Script, "{\"reply\": \"x\"}").is_err());
}
