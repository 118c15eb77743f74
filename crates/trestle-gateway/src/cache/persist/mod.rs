//! Caches that survive a restart (`[cache] persist`, on by default while the store is):
//! the exact cache, the semantic index's vectors (kept with the answers they point at) and
//! the tool cache are kept in the store ([`store`]: the SQLite file, or PostgreSQL), and
//! loaded at start.
//!
//! **Writing.** [`ExactCache::store`](super::exact::ExactCache::store) (for routes whose
//! cache stores answers; not for answers kept only for the `cache` fallback level) and the
//! tool cache's writes and deletes hand a change to [`Persist`], which queues it without
//! waiting; a full queue drops the change, counts it
//! (`trestle_cache_persist_total{result="dropped"}`) and logs it. A writer thread commits
//! what is queued in batches (up to [`BATCH`] changes, or [`LINGER`] after the first), so
//! what a `kill -9` loses is the last moment's entries. A batch the store refuses is tried
//! again a few times, then counted as `failed`. Every [`PRUNE_EVERY`] the writer deletes
//! expired rows and those beyond each cache's capacity (newest kept). Shutdown ([`close`])
//! writes what is queued.
//!
//! **Snapshots.** At shutdown ([`close`]) each semantic scope's HNSW graph is saved with
//! the keys of its nodes (fast-hnsw's own format, through a file in a scratch folder: the
//! store's folder, or the system's temporary folder with PostgreSQL), because inserting into
//! an HNSW graph costs about a quarter of a millisecond per 384-dimension vector (100,000
//! take tens of seconds) while loading a saved graph takes a fraction of a second.
//!
//! **Loading.** [`start`] reads the live rows (expiring after now), newest first, up to
//! `max_entries` answers and `tool_max_entries` tool results, and puts them back with their
//! age, so TTLs run on from where they were: answers into moka, tool results into the tool
//! cache. The semantic index is put back on a background thread (scopes in parallel, on
//! half the cores), once the writer has read the saved graphs: from a scope's saved graph
//! plus the vectors stored after it, or, without a usable graph (after a crash), rebuilt
//! from the loaded vectors. The gateway serves meanwhile; a semantic lookup misses what is
//! not indexed yet (docs/caching.md).
//!
//! Entries a gateway read from Redis (`[state] kind = "redis"`) are not written again.

pub mod store;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use trestle_core::config::CacheConfig;

use super::exact::{Answer, Entry};
use super::remote::{ExactValue, ToolValue};
use super::semantic::{SemanticIndex, Snapshot};
use super::tool::ToolEntry;
use crate::db::Db;
use crate::resilience::Registry;
use store::{AnswerRow, Change, Loaded, SemanticPart, Store, ToolRow};

/// Changes waiting for the writer; beyond this they are dropped (and counted).
pub const QUEUE: usize = 16_384;
/// Most changes written in one transaction.
pub const BATCH: usize = 512;
/// How long the writer gathers changes after the first before committing.
pub const LINGER: Duration = Duration::from_millis(50);
/// How often expired rows, and rows beyond the caches' capacity, are deleted.
pub const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// Tries of a batch the store refuses, before it is counted as failed.
const TRIES: u32 = 4;

enum Op {
    Answer {
        key: u64,
        entry: Arc<Entry>,
        stored_ms: i64,
        expires_ms: i64,
    },
    Tool(ToolRow),
    ToolDelete {
        namespace: String,
        key: String,
    },
    /// The semantic scopes' graphs, at shutdown.
    Graphs(Vec<Snapshot>),
    Close,
}

/// What happened to the changes handed to the writer.
#[derive(Debug, Default)]
pub struct PersistStats {
    pub written: AtomicU64,
    /// Dropped because the queue was full or the writer had stopped.
    pub dropped: AtomicU64,
    /// Lost because the store refused their batch.
    pub failed: AtomicU64,
}

/// The bounded queue to the writer: a list channel (blocks allocated as changes arrive, freed
/// as the writer takes them) and a count of what waits. A bounded channel would hold all its
/// slots from the start: 16,384 of them are about 2 MB resident in an idle gateway.
pub(crate) struct Queue {
    tx: mpsc::Sender<Op>,
    waiting: Arc<AtomicUsize>,
    bound: usize,
}

/// The writer's end of a [`Queue`].
pub(crate) struct Taken {
    rx: Receiver<Op>,
    waiting: Arc<AtomicUsize>,
}

/// A queue of at most `bound` changes (the shutdown's graphs and close are not counted).
pub(crate) fn queue(bound: usize) -> (Queue, Taken) {
    let (tx, rx) = mpsc::channel();
    let waiting = Arc::new(AtomicUsize::new(0));
    (
        Queue {
            tx,
            waiting: waiting.clone(),
            bound: bound.max(1),
        },
        Taken { rx, waiting },
    )
}

impl Queue {
    /// Queues `op`, or says why it was not (it is dropped): `true` when the queue is full,
    /// `false` when the writer stopped.
    fn try_send(&self, op: Op) -> Result<(), bool> {
        if self.waiting.fetch_add(1, Ordering::Relaxed) >= self.bound {
            self.waiting.fetch_sub(1, Ordering::Relaxed);
            return Err(true);
        }
        self.tx.send(op).map_err(|_| {
            self.waiting.fetch_sub(1, Ordering::Relaxed);
            false
        })
    }

    /// Sends past the bound: the shutdown's graphs and close.
    fn send_control(&self, op: Op) {
        let _ = self.tx.send(op);
    }
}

impl Taken {
    fn took(&self, op: Op) -> Op {
        if !matches!(op, Op::Graphs(_) | Op::Close) {
            self.waiting.fetch_sub(1, Ordering::Relaxed);
        }
        op
    }

    fn recv_timeout(&self, wait: Duration) -> Result<Op, RecvTimeoutError> {
        self.rx.recv_timeout(wait).map(|op| self.took(op))
    }

    fn try_recv(&self) -> Option<Op> {
        self.rx.try_recv().ok().map(|op| self.took(op))
    }
}

/// The queue to the writer thread.
pub struct Persist {
    tx: Queue,
    writer: Mutex<Option<JoinHandle<()>>>,
    stats: Arc<PersistStats>,
    last_drop_log: Mutex<Option<Instant>>,
    /// Where graphs go through a file on their way to and from the store.
    scratch: PathBuf,
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Unix ms when something stored `age` ago was stored.
fn stored_ms(age: Duration) -> i64 {
    crate::store::now_ms().saturating_sub(ms(age))
}

impl Persist {
    fn new(
        tx: Queue,
        writer: Option<JoinHandle<()>>,
        stats: Arc<PersistStats>,
        scratch: PathBuf,
    ) -> Self {
        Persist {
            tx,
            writer: Mutex::new(writer),
            stats,
            last_drop_log: Mutex::new(None),
            scratch,
        }
    }

    /// Queues an exact-cache entry that may be served for `keep` after it was stored.
    pub(crate) fn answer(&self, key: u64, entry: &Arc<Entry>, keep: Duration) {
        let stored_ms = stored_ms(entry.stored_at.elapsed());
        self.send(Op::Answer {
            key,
            entry: entry.clone(),
            stored_ms,
            expires_ms: stored_ms.saturating_add(ms(keep)),
        });
    }

    /// Queues a tool result.
    pub(crate) fn tool(&self, namespace: &str, key: &str, entry: &ToolEntry) {
        self.send(Op::Tool(ToolRow {
            namespace: namespace.to_string(),
            key: key.to_string(),
            value: ToolValue {
                value: entry.value.clone(),
                content_type: entry.content_type.clone(),
                stored_ms: stored_ms(entry.stored_at.elapsed()),
                ttl: entry.ttl,
            },
        }));
    }

    /// Queues the deletion of a tool result.
    pub(crate) fn tool_delete(&self, namespace: &str, key: &str) {
        self.send(Op::ToolDelete {
            namespace: namespace.to_string(),
            key: key.to_string(),
        });
    }

    /// Queues without waiting; a full or closed queue drops the change, counted and logged.
    fn send(&self, op: Op) {
        let Err(full) = self.tx.try_send(op) else {
            return;
        };
        let dropped = self.stats.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        metrics::counter!("trestle_cache_persist_total", "result" => "dropped").increment(1);
        let Ok(mut last) = self.last_drop_log.lock() else {
            return;
        };
        if last.is_none_or(|t| t.elapsed() > Duration::from_secs(1)) {
            *last = Some(Instant::now());
            let why = if full { "queue full" } else { "writer stopped" };
            tracing::warn!(
                dropped_total = dropped,
                "cache store: {why}: an entry was dropped (it will not survive a restart)"
            );
        }
    }

    pub fn stats(&self) -> &PersistStats {
        &self.stats
    }

    /// Saves `index`'s graphs, writes everything queued and stops the writer. Blocks until
    /// it has.
    pub fn close_blocking(&self, index: &SemanticIndex) {
        let graphs = index.snapshots(&self.scratch);
        if !graphs.is_empty() {
            self.tx.send_control(Op::Graphs(graphs));
        }
        self.tx.send_control(Op::Close);
        let handle = self.writer.lock().ok().and_then(|mut w| w.take());
        if let Some(handle) = handle
            && handle.join().is_err()
        {
            tracing::error!("cache store writer panicked");
        }
    }
}

/// At shutdown: saves the semantic index's graphs and writes everything queued for the
/// store, off the async runtime, waiting at most `deadline`. Nothing when the caches are
/// not kept in the store.
pub async fn close(registry: Arc<Registry>, deadline: Duration) {
    let Some(persist) = registry.caches.persisted().cloned() else {
        return;
    };
    let closing = tokio::task::spawn_blocking(move || {
        persist.close_blocking(&registry.caches.semantic);
        persist
    });
    match tokio::time::timeout(deadline, closing).await {
        Ok(Ok(persist)) => {
            let s = persist.stats();
            tracing::info!(
                written = s.written.load(Ordering::Relaxed),
                dropped = s.dropped.load(Ordering::Relaxed),
                failed = s.failed.load(Ordering::Relaxed),
                "cache store closed"
            );
        }
        Ok(Err(e)) => tracing::error!(error = %e, "closing the cache store failed"),
        Err(_) => tracing::error!("cache store writer did not finish within {deadline:?}"),
    }
}

/// What [`start`] loaded.
#[derive(Debug)]
pub struct Started {
    /// Answers put back into the exact cache.
    pub answers: usize,
    /// Their vectors, being indexed.
    pub vectors: usize,
    pub scopes: usize,
    /// Tool results put back.
    pub tools: usize,
    /// Rows left out: unreadable, or older than this machine's monotonic clock can say.
    pub skipped: usize,
    /// How long opening, reading and filling the exact and tool caches took.
    pub took: Duration,
    /// The thread putting the semantic index back (the gateway lets it run; tests join it).
    pub indexing: Option<JoinHandle<Indexed>>,
}

/// How the semantic index came back.
#[derive(Debug, Clone, PartialEq)]
pub struct Indexed {
    pub vectors: usize,
    pub scopes: usize,
    /// Scopes put back from the graph saved at the last clean stop (the others were rebuilt
    /// from their vectors).
    pub from_saved_graphs: usize,
    pub took: Duration,
}

/// Opens the cache tables in `db`, loads them into `registry`'s caches (the semantic index
/// in the background) and keeps every change from now on. Blocks while loading; PostgreSQL
/// is only called from the writer thread.
pub fn start(registry: &Arc<Registry>, db: Db, cfg: &CacheConfig) -> anyhow::Result<Started> {
    start_with(registry, db, cfg, QUEUE)
}

fn start_with(
    registry: &Arc<Registry>,
    db: Db,
    cfg: &CacheConfig,
    queue: usize,
) -> anyhow::Result<Started> {
    let began = Instant::now();
    let (tx, rx) = self::queue(queue);
    let (ready_tx, ready_rx) = mpsc::sync_channel::<anyhow::Result<Loaded>>(1);
    let (graphs_tx, graphs_rx) = mpsc::sync_channel::<Vec<Snapshot>>(1);
    let stats = Arc::new(PersistStats::default());
    let writer_stats = stats.clone();
    let limits = (cfg.max_entries, cfg.tool_max_entries);
    let scratch = scratch_dir(&db);
    let writer = std::thread::Builder::new()
        .name("trestle-cache-writer".into())
        .spawn(move || {
            let opened = Store::open(&db).and_then(|mut store| {
                let loaded = store.load(crate::store::now_ms(), limits.0, limits.1)?;
                Ok((store, loaded))
            });
            match opened {
                Ok((mut store, loaded)) => {
                    let live: HashSet<u64> = loaded
                        .answers
                        .iter()
                        .filter_map(|a| a.semantic.as_ref().map(|s| s.scope))
                        .collect();
                    // The caches fill while the graphs (large) are read.
                    let _ = ready_tx.send(Ok(loaded));
                    let _ = graphs_tx.send(saved_graphs(&mut store, &live));
                    write_loop(store, &rx, &writer_stats, limits);
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            }
        })?;
    let loaded = ready_rx
        .recv()
        .map_err(|_| anyhow::anyhow!("cache store: the writer stopped while loading"))?
        .map_err(|e| anyhow::anyhow!("cache store: {e:#}"))?;
    let mut started = restore(registry, loaded, graphs_rx, scratch.clone());
    started.took = began.elapsed();
    let persist = Arc::new(Persist::new(tx, Some(writer), stats, scratch));
    registry.caches.persist_to(persist);
    let rebuilding = if started.vectors > 0 {
        "; the semantic index is put back in the background"
    } else {
        ""
    };
    tracing::info!(
        answers = started.answers,
        vectors = started.vectors,
        scopes = started.scopes,
        tools = started.tools,
        skipped = started.skipped,
        took_ms = started.took.as_millis() as u64,
        "caches loaded from the store{rebuilding}"
    );
    Ok(started)
}

/// Where graphs go through a file: next to the SQLite file, or the temporary folder.
fn scratch_dir(db: &Db) -> PathBuf {
    match db.sqlite_path().and_then(Path::parent) {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        Some(_) => PathBuf::from("."),
        None => std::env::temp_dir(),
    }
}

/// The graphs saved for the scopes in `live`; those of other scopes (no answers left) are
/// deleted. A graph that cannot be read is left out (its scope is rebuilt).
fn saved_graphs(store: &mut Store, live: &HashSet<u64>) -> Vec<Snapshot> {
    let scopes = match store.graph_scopes() {
        Ok(scopes) => scopes,
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "cache store: cannot list saved graphs");
            return Vec::new();
        }
    };
    let (keep, stale): (Vec<u64>, Vec<u64>) = scopes.into_iter().partition(|s| live.contains(s));
    let forget: Vec<Change> = stale.into_iter().map(Change::ForgetGraph).collect();
    if let Err(e) = store.write(&forget) {
        tracing::warn!(error = %format!("{e:#}"), "cache store: cannot delete unused graphs");
    }
    keep.into_iter()
        .filter_map(|scope| {
            store
                .graph(scope)
                .map_err(|e| tracing::warn!(error = %format!("{e:#}"), "cache store: cannot read a saved graph"))
                .ok()
                .flatten()
        })
        .collect()
}

/// A scope's loaded vectors with their exact-cache keys, oldest first.
type Vectors = Vec<(u64, Arc<[f32]>)>;

/// A scope to put back: its loaded vectors and its saved graph, if any.
type Scope = (u64, Vectors, Option<Snapshot>);

/// Puts loaded rows back, oldest first (so the newest are the most recently used), each
/// with its age; starts putting the semantic index back.
fn restore(
    registry: &Arc<Registry>,
    loaded: Loaded,
    graphs: Receiver<Vec<Snapshot>>,
    scratch: PathBuf,
) -> Started {
    let caches = &registry.caches;
    let now = tokio::time::Instant::now();
    let mut skipped = loaded.unreadable;
    let mut answers = 0;
    let mut scopes: HashMap<u64, Vectors> = HashMap::new();
    for row in loaded.answers.into_iter().rev() {
        let age = super::remote::age(row.value.stored_ms);
        // Older than the monotonic clock reaches (a machine up for less than the entry's
        // age): left out rather than served as younger than it is.
        let Some(stored_at) = now.checked_sub(age) else {
            skipped += 1;
            continue;
        };
        let (embedding, query, scope) = match row.semantic {
            Some(SemanticPart {
                scope,
                vector,
                query,
            }) => {
                scopes
                    .entry(scope)
                    .or_default()
                    .push((row.key, vector.clone()));
                (Some(vector), Some(query), Some(scope))
            }
            None => (None, None, None),
        };
        caches.exact.put(
            row.key,
            Entry {
                answer: Answer::Raw(row.value.answer),
                served_by: row.value.served_by,
                stored_at,
                cost_usd: row.value.cost_usd,
                embedding,
                query,
                scope,
            },
        );
        answers += 1;
    }
    let mut tools = 0;
    for row in loaded.tools.into_iter().rev() {
        let age = super::remote::age(row.value.stored_ms);
        let Some(stored_at) = now.checked_sub(age).filter(|_| age <= row.value.ttl) else {
            skipped += 1;
            continue;
        };
        let ToolValue {
            value,
            content_type,
            ttl,
            ..
        } = row.value;
        caches.tools.restore(
            &row.namespace,
            &row.key,
            ToolEntry {
                value,
                content_type,
                stored_at,
                ttl,
            },
        );
        tools += 1;
    }
    let vectors = scopes.values().map(Vec::len).sum();
    let scope_count = scopes.len();
    let indexing = (!scopes.is_empty())
        .then(|| {
            let registry = registry.clone();
            std::thread::Builder::new()
                .name("trestle-cache-index".into())
                .spawn(move || {
                    let mut saved: HashMap<u64, Snapshot> = graphs
                        .recv()
                        .unwrap_or_default()
                        .into_iter()
                        .map(|g| (g.scope, g))
                        .collect();
                    let work = scopes
                        .into_iter()
                        .map(|(scope, entries)| (scope, entries, saved.remove(&scope)))
                        .collect();
                    rebuild(&registry.caches.semantic, work, &scratch)
                })
                .map_err(
                    |e| tracing::error!(error = %e, "cannot start putting the semantic index back"),
                )
                .ok()
        })
        .flatten();
    Started {
        answers,
        vectors,
        scopes: scope_count,
        tools,
        skipped,
        took: Duration::ZERO,
        indexing,
    }
}

/// Puts every loaded scope back, the largest first, on half the cores (rounded up): the
/// other half keeps serving. A scope with a saved graph of which at least half the nodes
/// point at loaded answers adopts it (and inserts the vectors stored after it); any other is
/// rebuilt from its vectors.
fn rebuild(index: &SemanticIndex, mut scopes: Vec<Scope>, scratch: &Path) -> Indexed {
    let began = Instant::now();
    let vectors: usize = scopes.iter().map(|(_, v, _)| v.len()).sum();
    scopes.sort_by_key(|(_, v, _)| std::cmp::Reverse(v.len()));
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get().div_ceil(2))
        .clamp(1, scopes.len().max(1));
    let next = AtomicUsize::new(0);
    let adopted = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                while let Some((scope, entries, graph)) =
                    scopes.get(next.fetch_add(1, Ordering::Relaxed))
                {
                    let usable = graph.as_ref().filter(|g| {
                        let loaded: HashSet<u64> = entries.iter().map(|(k, _)| *k).collect();
                        let live = g.keys.iter().filter(|k| loaded.contains(k)).count();
                        live * 2 >= g.keys.len()
                    });
                    if usable.is_some_and(|g| index.adopt(g, entries, scratch)) {
                        adopted.fetch_add(1, Ordering::Relaxed);
                    } else {
                        index.restore(*scope, entries);
                    }
                }
            });
        }
    });
    let indexed = Indexed {
        vectors,
        scopes: scopes.len(),
        from_saved_graphs: adopted.load(Ordering::Relaxed),
        took: began.elapsed(),
    };
    tracing::info!(
        vectors,
        scopes = indexed.scopes,
        from_saved_graphs = indexed.from_saved_graphs,
        workers,
        took_ms = indexed.took.as_millis() as u64,
        "semantic index put back from the store"
    );
    indexed
}

/// The writer: batches of changes, committed in order; expired and surplus rows pruned
/// every [`PRUNE_EVERY`]; on `Close` (or when every sender is gone) what is queued is
/// written and the thread ends.
fn write_loop(mut store: Store, rx: &Taken, stats: &PersistStats, limits: (u64, u64)) {
    let mut pending: Vec<Op> = Vec::with_capacity(BATCH);
    // The first prune comes a period after start: loading has just skipped expired rows.
    let mut next_prune = Instant::now() + PRUNE_EVERY;
    let mut closing = false;
    while !closing {
        if Instant::now() >= next_prune {
            prune(&mut store, limits);
            next_prune = Instant::now() + PRUNE_EVERY;
        }
        match rx.recv_timeout(next_prune.saturating_duration_since(Instant::now())) {
            Ok(Op::Close) | Err(RecvTimeoutError::Disconnected) => closing = true,
            Ok(op) => pending.push(op),
            Err(RecvTimeoutError::Timeout) => continue,
        }
        let first = Instant::now();
        while !closing && pending.len() < BATCH {
            match rx.recv_timeout(LINGER.saturating_sub(first.elapsed())) {
                Ok(Op::Close) | Err(RecvTimeoutError::Disconnected) => closing = true,
                Ok(op) => pending.push(op),
                Err(RecvTimeoutError::Timeout) => break,
            }
        }
        if closing {
            while let Some(op) = rx.try_recv() {
                if !matches!(op, Op::Close) {
                    pending.push(op);
                }
            }
        }
        flush(&mut store, &mut pending, stats, !closing);
    }
}

/// The rows a queued change becomes (encoding a parsed answer happens here, off the request
/// path).
fn changes(op: Op, out: &mut Vec<Change>) {
    if let Op::Graphs(graphs) = op {
        out.extend(graphs.into_iter().map(Change::Graph));
    } else if let Some(change) = change(op) {
        out.push(change);
    }
}

fn change(op: Op) -> Option<Change> {
    Some(match op {
        Op::Answer {
            key,
            entry,
            stored_ms,
            expires_ms,
        } => {
            let answer = entry.answer.json()?;
            let semantic = match (entry.scope, &entry.embedding, &entry.query) {
                (Some(scope), Some(vector), Some(query)) => Some(SemanticPart {
                    scope,
                    vector: vector.clone(),
                    query: query.clone(),
                }),
                _ => None,
            };
            Change::Answer(AnswerRow {
                key,
                expires_ms,
                value: ExactValue {
                    answer,
                    served_by: entry.served_by.clone(),
                    cost_usd: entry.cost_usd,
                    stored_ms,
                },
                semantic,
            })
        }
        Op::Tool(row) => Change::Tool(row),
        Op::ToolDelete { namespace, key } => Change::ToolDelete { namespace, key },
        Op::Graphs(_) | Op::Close => return None,
    })
}

/// Writes `pending`, trying a refused batch again with backoff (once only when `retry` is
/// false, as at shutdown).
fn flush(store: &mut Store, pending: &mut Vec<Op>, stats: &PersistStats, retry: bool) {
    if pending.is_empty() {
        return;
    }
    let mut batch = Vec::with_capacity(pending.len());
    for op in pending.drain(..) {
        changes(op, &mut batch);
    }
    let n = batch.len() as u64;
    let mut pause = Duration::from_millis(100);
    let mut tries = 1;
    loop {
        match store.write(&batch) {
            Ok(()) => {
                stats.written.fetch_add(n, Ordering::Relaxed);
                metrics::counter!("trestle_cache_persist_total", "result" => "written")
                    .increment(n);
                return;
            }
            Err(e) if retry && tries < TRIES => {
                tracing::warn!(error = %format!("{e:#}"), "cache store refused a batch; trying again");
                std::thread::sleep(pause);
                pause *= 2;
                tries += 1;
            }
            Err(e) => {
                stats.failed.fetch_add(n, Ordering::Relaxed);
                metrics::counter!("trestle_cache_persist_total", "result" => "failed").increment(n);
                tracing::error!(changes = n, error = %format!("{e:#}"),
                    "cache store refused a batch; those entries will not survive a restart");
                return;
            }
        }
    }
}

fn prune(store: &mut Store, (answers, tools): (u64, u64)) {
    match store.prune(crate::store::now_ms(), answers, tools) {
        Ok(0) => {}
        Ok(n) => tracing::debug!(rows = n, "cache store: expired and surplus rows deleted"),
        Err(e) => tracing::warn!(error = %format!("{e:#}"), "cache store: pruning failed"),
    }
}
