//! Crash safety of the trace store: `kill -9` under load leaves a SQLite store that opens,
//! passes its integrity check, and lost only what was waiting for the next group commit; a
//! full disk stops no answer, shows in `/ready`, and writing resumes when space returns.

// Test code: a failed expectation is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashSet;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use futures_util::StreamExt;

fn config(up: &Proc, extra: &str) -> String {
    format!(
        r#"
{extra}
[providers.up]
kind = "openai"
base_url = "{}/v1"
[routes.chat]
targets = ["up/m1"]
"#,
        up.url()
    )
}

/// Sends requests at `rate` per second (open loop, at most 256 in flight) until `stop`
/// passes; returns the trace ids of the answers received.
async fn load(url: String, rate: u32, run_for: Duration) -> Vec<String> {
    let client = client();
    let started = Instant::now();
    let period = Duration::from_secs(1) / rate;
    let ticks = futures_util::stream::unfold(0u64, move |i| async move {
        let at = started + period * (i as u32);
        tokio::time::sleep_until(at.into()).await;
        (started.elapsed() < run_for).then_some((i, i + 1))
    });
    ticks
        .map(|i| {
            let client = client.clone();
            let url = url.clone();
            async move {
                let r = client
                    .post(format!("{url}/v1/chat/completions"))
                    .json(&chat_body("chat", &format!("crash {i}"), false))
                    .send()
                    .await
                    .ok()?;
                if r.status() != 200 {
                    return None;
                }
                let id = r
                    .headers()
                    .get("x-trestle-trace-id")?
                    .to_str()
                    .ok()?
                    .to_string();
                // Acknowledged: the whole answer arrived.
                r.bytes().await.ok()?;
                Some(id)
            }
        })
        .buffer_unordered(256)
        .filter_map(|id| async move { id })
        .collect()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_loses_at_most_the_flush_interval() {
    const RATE: u32 = 2_000;
    const FLUSH_MS: u64 = 20;
    let up = mock(&[]);
    let mut gw = gateway(
        &config(&up, &format!("[store]\nflush_interval_ms = {FLUSH_MS}")),
        &[],
    );
    let url = gw.url();
    let pid = gw.child.id();
    let loader = tokio::spawn(load(url.clone(), RATE, Duration::from_secs(4)));
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let killed_at = Instant::now();
    Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    let _ = gw.child.wait();
    let acknowledged = loader.await.unwrap();
    assert!(
        acknowledged.len() > 1_000,
        "the load reached {} answers",
        acknowledged.len()
    );

    let db_path = gw.dir.join(".trestle/trestle.db");
    let db = rusqlite::Connection::open(&db_path).unwrap();
    let check: String = db
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    let stored: HashSet<String> = db
        .prepare("SELECT trace_id FROM requests")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    drop(db);
    let lost = acknowledged
        .iter()
        .filter(|id| !stored.contains(*id))
        .count();
    // What can be lost: the traces waiting for the next commit (one flush interval at the
    // arrival rate) plus the batch being written; allow four intervals for a loaded machine.
    let bound = (u64::from(RATE) * FLUSH_MS * 4 / 1000) as usize;
    eprintln!(
        "kill -9 at {RATE} req/s: {} answers acknowledged, {} traces stored, {lost} lost \
         (bound {bound}); killed {:?} into the load",
        acknowledged.len(),
        stored.len(),
        killed_at.elapsed()
    );
    assert!(
        lost <= bound,
        "{lost} acknowledged traces lost (bound {bound})"
    );

    // The store opens again and takes new traces.
    let gw2 = {
        let port = free_port();
        let mut child = Command::new(BIN)
            .args([
                "serve",
                "--config",
                "trestle.toml",
                "--listen",
                &format!("127.0.0.1:{port}"),
            ])
            .current_dir(&gw.dir)
            .env("RUST_LOG", "warn")
            .spawn()
            .unwrap();
        wait_ready(port, &mut child).unwrap_or_else(|status| panic!("restart exited: {status}"));
        Proc {
            child,
            port,
            dir: gw.dir.clone(),
        }
    };
    let r = post_with(&gw2, &chat_body("chat", "after the crash", false), &[]).await;
    assert_eq!(r.status(), 200);
    assert_trace_kept(&gw2, &r).await;
}

/// The answer's trace is readable from the store.
async fn assert_trace_kept(gw: &Proc, r: &reqwest::Response) {
    let id = r.headers()["x-trestle-trace-id"]
        .to_str()
        .unwrap()
        .to_string();
    let t = trace(gw, &id).await;
    assert_eq!(t["trace_id"], id.as_str());
}

/// Mounts a tmpfs of `size` at `dir` (the suite runs as root, as CI does).
fn mount_tmpfs(dir: &std::path::Path, size: &str) {
    std::fs::create_dir_all(dir).unwrap();
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(dir)
        .status()
        .unwrap()
        .success();
    assert!(ok, "mounting a tmpfs needs root; run the suite as CI does");
}

struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_stops_no_answer_and_writing_resumes_when_space_returns() {
    let up = mock(&[]);
    let mount = temp_dir("disk-full").join("store");
    mount_tmpfs(&mount, "600k");
    let _unmount = Unmount(mount.clone());
    let gw = gateway(
        &config(
            &up,
            &format!(
                "[store]\npath = \"{}\"\nflush_interval_ms = 5",
                mount.join("trestle.db").display()
            ),
        ),
        &[],
    );
    let url = gw.url();
    // Fill the disk: large request bodies are kept on the traces.
    let filler = "x".repeat(16 * 1024);
    let mut answered = 0;
    let mut store_error = serde_json::Value::Null;
    for i in 0..400 {
        let r = post_with(
            &gw,
            &chat_body("chat", &format!("{i} {filler}"), false),
            &[],
        )
        .await;
        assert_eq!(r.status(), 200, "serving goes on with a full disk");
        answered += 1;
        if i % 10 == 9 {
            let ready = get_json(&format!("{url}/ready")).await;
            if !ready["traces"]["store_error"].is_null() {
                store_error = ready["traces"]["store_error"].clone();
                break;
            }
        }
    }
    assert!(
        !store_error.is_null(),
        "the store never reported the full disk after {answered} answers"
    );
    eprintln!("after {answered} answers /ready reports {store_error}");
    assert!(
        store_error["error"].as_str().unwrap().contains("full"),
        "{store_error}"
    );
    let metrics = get_text(&format!("{url}/metrics")).await;
    assert!(metrics.contains("trestle_trace_store_up 0"), "{metrics}");

    // Space returns: the writer resumes by itself and new traces are written.
    let ok = Command::new("mount")
        .args(["-o", "remount,size=64m"])
        .arg(&mount)
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ready = get_json(&format!("{url}/ready")).await;
        if ready["traces"]["store_error"].is_null() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the writer never resumed: {ready}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = post_with(&gw, &chat_body("chat", "space is back", false), &[]).await;
    assert_trace_kept(&gw, &r).await;
    let ready = get_json(&format!("{url}/ready")).await;
    eprintln!("after space returned: {}", ready["traces"]);
    assert_eq!(ready["traces"]["dropped"], 0);
}
