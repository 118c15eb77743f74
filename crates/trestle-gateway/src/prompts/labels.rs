//! Where prompt labels point (docs/prompts.md): the file sets them, the API and the CLI move
//! them, and every move is recorded in the store (`[store]`: the SQLite file, or PostgreSQL),
//! so a restart, a reload and every gateway sharing the database agree on them.
//!
//! Both backends keep the same two tables: `prompt_versions` (the hash a version was first
//! served with, so an edited version is refused) and `prompt_label_moves` (every move, who
//! and when). Reading what is recorded, deciding what a sync changes, and writing it are
//! separate steps: the decision is made once, for both backends.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use rusqlite::{Connection, params};
use serde::Serialize;
use trestle_core::experiment::PromptRef;

use super::Prompts;
use crate::db::{Db, PgPool};

/// A prompt and one of its labels.
type Key = (String, String);

/// How often a gateway on PostgreSQL reads the labels other gateways moved.
pub const REFRESH: Duration = Duration::from_secs(5);

/// Where labels point now: the file's, moved by API, every move recorded (in the store when
/// there is one). Outlives reloads.
pub struct PromptLabels {
    shared: Arc<Shared>,
    place: Option<Place>,
}

/// What the refresher thread shares with the labels.
#[derive(Default)]
struct Shared {
    current: RwLock<HashMap<Key, u32>>,
    /// The versions of each prompt at the last sync: a label is only pointed at one of them.
    versions: RwLock<HashMap<String, HashSet<u32>>>,
}

enum Place {
    Sqlite(PathBuf),
    Postgres {
        pool: Arc<PgPool>,
        /// Set once the tables are known to exist.
        migrated: AtomicBool,
    },
}

/// One move of a label.
#[derive(Debug, Clone, Serialize)]
pub struct LabelMove {
    pub prompt: String,
    pub label: String,
    pub from: Option<u32>,
    pub to: u32,
    pub at_ms: i64,
    pub by: String,
    pub source: String,
}

const SQLITE_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS prompt_versions (
    prompt TEXT NOT NULL, version INTEGER NOT NULL, hash TEXT NOT NULL, first_seen_ms INTEGER NOT NULL,
    PRIMARY KEY (prompt, version)
);
CREATE TABLE IF NOT EXISTS prompt_label_moves (
    prompt TEXT NOT NULL, label TEXT NOT NULL, from_version INTEGER, to_version INTEGER NOT NULL,
    at_ms INTEGER NOT NULL, moved_by TEXT NOT NULL, source TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS prompt_label_moves_by ON prompt_label_moves (prompt, label, at_ms);
";

/// The PostgreSQL steps of component `prompts`; `id` orders moves made in the same
/// millisecond, as SQLite's rowid does.
const PG_MIGRATIONS: &[(i32, &str)] = &[(
    1,
    "
CREATE TABLE IF NOT EXISTS prompt_versions (
    prompt TEXT NOT NULL, version BIGINT NOT NULL, hash TEXT NOT NULL, first_seen_ms BIGINT NOT NULL,
    PRIMARY KEY (prompt, version)
);
CREATE TABLE IF NOT EXISTS prompt_label_moves (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    prompt TEXT NOT NULL, label TEXT NOT NULL, from_version BIGINT, to_version BIGINT NOT NULL,
    at_ms BIGINT NOT NULL, moved_by TEXT NOT NULL, source TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS prompt_label_moves_by ON prompt_label_moves (prompt, label, at_ms);
",
)];

/// Brings the PostgreSQL tables of prompt labels up to date (also done on first use).
pub fn migrate(pool: &PgPool) -> anyhow::Result<i32> {
    pool.migrate("prompts", PG_MIGRATIONS)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// What the store holds, read in one go.
#[derive(Default)]
struct Recorded {
    /// The hash each served version had when first seen.
    hashes: HashMap<(String, u32), String>,
    /// The version each label was last moved to.
    latest: HashMap<Key, u32>,
    /// The version the config file last moved each label to.
    last_config: HashMap<Key, u32>,
}

impl Recorded {
    /// Takes moves oldest first: the last one of a label wins.
    fn add_move(&mut self, prompt: String, label: String, to: u32, source: &str) {
        let key = (prompt, label);
        if source == "config" {
            self.last_config.insert(key.clone(), to);
        }
        self.latest.insert(key, to);
    }
}

/// What a sync writes, and where labels point after it.
#[derive(Default)]
struct Plan {
    /// (prompt, version, hash) not recorded yet.
    versions: Vec<(String, u32, String)>,
    moves: Vec<LabelMove>,
    current: HashMap<Key, u32>,
    notes: Vec<String>,
}

/// Brings labels in line with the prompt files, given what the store holds: a version
/// whose content changed under the same number is refused; a label the file moved is moved
/// (recorded as by `config`); other labels stay where the API last put them.
fn plan(prompts: &Prompts, rec: &Recorded, now: i64) -> Result<Plan, String> {
    let mut out = Plan::default();
    for p in prompts.by_name.values() {
        for v in p.versions.values() {
            match rec.hashes.get(&(p.name.clone(), v.number)) {
                Some(h) if *h != v.hash => {
                    return Err(format!(
                        "{}: version {} of prompt {} changed since it was first served (hash {h}, now {}); versions are immutable: add a new version instead",
                        p.path.display(),
                        v.number,
                        p.name,
                        v.hash
                    ));
                }
                Some(_) => {}
                None => out
                    .versions
                    .push((p.name.clone(), v.number, v.hash.clone())),
            }
        }
        for (label, &file_version) in &p.labels {
            let key = (p.name.clone(), label.clone());
            let latest = rec.latest.get(&key).copied();
            if rec.last_config.get(&key) == Some(&file_version) {
                out.current.insert(key, latest.unwrap_or(file_version));
                continue;
            }
            if latest.is_some() && latest != Some(file_version) {
                out.notes.push(format!(
                    "prompt {}: label {label} moved to version {file_version} by the config file",
                    p.name
                ));
            }
            out.moves.push(LabelMove {
                prompt: p.name.clone(),
                label: label.clone(),
                from: latest,
                to: file_version,
                at_ms: now,
                by: "config file".into(),
                source: "config".into(),
            });
            out.current.insert(key, file_version);
        }
    }
    // Labels only the API set (none in the file) stay too, while their version exists.
    for ((prompt, label), &v) in &rec.latest {
        let key = (prompt.clone(), label.clone());
        if !out.current.contains_key(&key)
            && prompts
                .by_name
                .get(prompt)
                .is_some_and(|p| p.versions.contains_key(&v))
        {
            out.current.insert(key, v);
        }
    }
    Ok(out)
}

impl PromptLabels {
    /// Labels kept in `db` (`None`: only the files' labels, nothing recorded). On
    /// PostgreSQL a thread reads other gateways' moves every [`REFRESH`] while these
    /// labels live.
    pub fn new(db: Option<Db>) -> Self {
        let shared = Arc::new(Shared::default());
        let place = db.map(|db| match db {
            Db::Sqlite(path) => Place::Sqlite(path),
            Db::Postgres(pool) => {
                spawn_refresher(Arc::downgrade(&shared), pool.clone());
                Place::Postgres {
                    pool,
                    migrated: AtomicBool::new(false),
                }
            }
        });
        PromptLabels { shared, place }
    }

    /// Brings labels in line with the prompt files (at start and on reload); see [`plan`].
    /// Blocks on the store; may be called from inside the async runtime (PostgreSQL work
    /// then runs on a thread of its own).
    pub fn sync(&self, prompts: &Prompts) -> Result<Vec<String>, String> {
        let rec = match &self.place {
            None => Recorded::default(),
            Some(place) => on_plain_thread(|| place.read())??,
        };
        let plan = plan(prompts, &rec, now_ms())?;
        if let Some(place) = &self.place {
            on_plain_thread(|| place.write(&plan.versions, &plan.moves))??;
        }
        if let Ok(mut versions) = self.shared.versions.write() {
            *versions = prompts
                .by_name
                .values()
                .map(|p| (p.name.clone(), p.versions.keys().copied().collect()))
                .collect();
        }
        if let Ok(mut map) = self.shared.current.write() {
            *map = plan.current;
        }
        Ok(plan.notes)
    }

    /// Reads where the store says labels point now (moves made by other gateways or the
    /// CLI), for the prompts and versions of the last sync. Blocks: call it off the async
    /// runtime.
    pub fn refresh(&self) -> Result<(), String> {
        match &self.place {
            Some(place) => refresh(&self.shared, &place.read()?),
            None => Ok(()),
        }
    }

    /// The version a label points at.
    pub fn get(&self, prompt: &str, label: &str) -> Option<u32> {
        self.shared
            .current
            .read()
            .ok()?
            .get(&(prompt.to_string(), label.to_string()))
            .copied()
    }

    /// Every label of a prompt.
    pub fn of(&self, prompt: &str) -> BTreeMap<String, u32> {
        self.shared
            .current
            .read()
            .map(|m| {
                m.iter()
                    .filter(|((p, _), _)| p == prompt)
                    .map(|((_, l), v)| (l.clone(), *v))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Moves a label (by API or CLI); recorded with who and when. Blocks: call it off the
    /// async runtime.
    pub fn promote(
        &self,
        prompts: &Prompts,
        prompt: &str,
        label: &str,
        version: u32,
        by: &str,
    ) -> Result<LabelMove, String> {
        prompts.check(&PromptRef::Version(prompt.to_string(), version))?;
        let m = LabelMove {
            prompt: prompt.to_string(),
            label: label.to_string(),
            from: self.get(prompt, label),
            to: version,
            at_ms: now_ms(),
            by: by.to_string(),
            source: "api".into(),
        };
        if let Some(place) = &self.place {
            place.write(&[], std::slice::from_ref(&m))?;
        }
        if let Ok(mut map) = self.shared.current.write() {
            map.insert((prompt.to_string(), label.to_string()), version);
        }
        Ok(m)
    }

    /// The recorded moves of a prompt's labels, oldest first. Blocks: call it off the async
    /// runtime.
    pub fn history(&self, prompt: &str) -> Result<Vec<LabelMove>, String> {
        match &self.place {
            None => Ok(Vec::new()),
            Some(Place::Sqlite(path)) => sqlite_history(&open_sqlite(path)?, prompt),
            Some(place @ Place::Postgres { pool, .. }) => {
                place.ready()?;
                pool.with(|c| pg_history(c, prompt)).map_err(pg_error)
            }
        }
    }
}

/// Points the labels of known prompts at what the store last recorded.
fn refresh(shared: &Shared, rec: &Recorded) -> Result<(), String> {
    let versions = shared
        .versions
        .read()
        .map_err(|_| "prompt labels: lock poisoned".to_string())?;
    let mut current = shared
        .current
        .write()
        .map_err(|_| "prompt labels: lock poisoned".to_string())?;
    for (key, &v) in &rec.latest {
        if versions.get(&key.0).is_some_and(|known| known.contains(&v)) {
            current.insert(key.clone(), v);
        }
    }
    Ok(())
}

/// Every [`REFRESH`], reads the moves other gateways made, until the labels are dropped.
fn spawn_refresher(shared: Weak<Shared>, pool: Arc<PgPool>) {
    let place = Place::Postgres {
        pool,
        migrated: AtomicBool::new(false),
    };
    let spawned = std::thread::Builder::new()
        .name("trestle-prompt-labels".into())
        .spawn(move || {
            loop {
                std::thread::sleep(REFRESH);
                let Some(shared) = shared.upgrade() else {
                    return;
                };
                if let Err(e) = place.read().and_then(|rec| refresh(&shared, &rec)) {
                    tracing::warn!(error = %e, "prompt labels: cannot read other gateways' moves");
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "prompt labels: no refresher thread; moves made by other gateways show after a reload");
    }
}

/// Runs `f` on a thread of its own, so the PostgreSQL client never runs inside an async
/// task (the gateway builds its state, and syncs labels, on the runtime).
fn on_plain_thread<T: Send>(f: impl FnOnce() -> T + Send) -> Result<T, String> {
    std::thread::scope(|s| s.spawn(f).join())
        .map_err(|_| "prompt labels: the store thread panicked".to_string())
}

fn pg_error(e: anyhow::Error) -> String {
    format!("prompt labels (PostgreSQL): {e:#}")
}

fn sqlite_error(e: rusqlite::Error) -> String {
    format!("prompt labels: {e}")
}

impl Place {
    /// On PostgreSQL, makes sure the tables exist (once per process and place).
    fn ready(&self) -> Result<(), String> {
        if let Place::Postgres { pool, migrated } = self
            && !migrated.load(Ordering::Acquire)
        {
            migrate(pool).map_err(pg_error)?;
            migrated.store(true, Ordering::Release);
        }
        Ok(())
    }

    fn read(&self) -> Result<Recorded, String> {
        match self {
            Place::Sqlite(path) => sqlite_read(&open_sqlite(path)?).map_err(sqlite_error),
            Place::Postgres { pool, .. } => {
                self.ready()?;
                pool.with(pg_read).map_err(pg_error)
            }
        }
    }

    /// Records versions and moves, in one transaction.
    fn write(&self, versions: &[(String, u32, String)], moves: &[LabelMove]) -> Result<(), String> {
        if versions.is_empty() && moves.is_empty() {
            return Ok(());
        }
        match self {
            Place::Sqlite(path) => {
                sqlite_write(&mut open_sqlite(path)?, versions, moves).map_err(sqlite_error)
            }
            Place::Postgres { pool, .. } => {
                self.ready()?;
                pool.with(|c| pg_write(c, versions, moves))
                    .map_err(pg_error)
            }
        }
    }
}

fn open_sqlite(path: &Path) -> Result<Connection, String> {
    let conn = Connection::open(path).map_err(sqlite_error)?;
    conn.busy_timeout(Duration::from_secs(5))
        .map_err(sqlite_error)?;
    conn.execute_batch(SQLITE_SCHEMA).map_err(sqlite_error)?;
    Ok(conn)
}

fn sqlite_read(conn: &Connection) -> rusqlite::Result<Recorded> {
    let mut rec = Recorded::default();
    let mut st = conn.prepare("SELECT prompt, version, hash FROM prompt_versions")?;
    for row in st.query_map([], |r| Ok(((r.get(0)?, r.get(1)?), r.get(2)?)))? {
        let (key, hash) = row?;
        rec.hashes.insert(key, hash);
    }
    let mut st = conn.prepare(
        "SELECT prompt, label, to_version, source FROM prompt_label_moves ORDER BY at_ms, rowid",
    )?;
    let rows = st.query_map([], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get::<_, String>(3)?))
    })?;
    for row in rows {
        let (prompt, label, to, source) = row?;
        rec.add_move(prompt, label, to, &source);
    }
    Ok(rec)
}

fn sqlite_write(
    conn: &mut Connection,
    versions: &[(String, u32, String)],
    moves: &[LabelMove],
) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    for (prompt, version, hash) in versions {
        tx.execute(
            "INSERT INTO prompt_versions VALUES (?1, ?2, ?3, ?4)",
            params![prompt, version, hash, now_ms()],
        )?;
    }
    for m in moves {
        tx.execute(
            "INSERT INTO prompt_label_moves (prompt, label, from_version, to_version, at_ms, moved_by, source)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![m.prompt, m.label, m.from, m.to, m.at_ms, m.by, m.source],
        )?;
    }
    tx.commit()
}

fn sqlite_history(conn: &Connection, prompt: &str) -> Result<Vec<LabelMove>, String> {
    let mut st = conn
        .prepare("SELECT prompt, label, from_version, to_version, at_ms, moved_by, source FROM prompt_label_moves WHERE prompt = ?1 ORDER BY at_ms, rowid")
        .map_err(sqlite_error)?;
    let rows = st
        .query_map([prompt], |r| {
            Ok(LabelMove {
                prompt: r.get(0)?,
                label: r.get(1)?,
                from: r.get(2)?,
                to: r.get(3)?,
                at_ms: r.get(4)?,
                by: r.get(5)?,
                source: r.get(6)?,
            })
        })
        .map_err(sqlite_error)?;
    rows.collect::<Result<_, _>>().map_err(sqlite_error)
}

/// A version as PostgreSQL keeps it (BIGINT), back to a number; a row no gateway wrote
/// (out of range) is an error naming it.
fn version_of(v: i64, what: &str) -> anyhow::Result<u32> {
    u32::try_from(v).map_err(|_| anyhow::anyhow!("{what}: version {v} is out of range"))
}

fn pg_read(client: &mut postgres::Client) -> anyhow::Result<Recorded> {
    let mut rec = Recorded::default();
    for r in client.query("SELECT prompt, version, hash FROM prompt_versions", &[])? {
        let version = version_of(r.try_get(1)?, "prompt_versions")?;
        rec.hashes.insert((r.try_get(0)?, version), r.try_get(2)?);
    }
    let moves = client.query(
        "SELECT prompt, label, to_version, source FROM prompt_label_moves ORDER BY at_ms, id",
        &[],
    )?;
    for r in moves {
        let to = version_of(r.try_get(2)?, "prompt_label_moves")?;
        let source: &str = r.try_get(3)?;
        rec.add_move(r.try_get(0)?, r.try_get(1)?, to, source);
    }
    Ok(rec)
}

fn pg_write(
    client: &mut postgres::Client,
    versions: &[(String, u32, String)],
    moves: &[LabelMove],
) -> anyhow::Result<()> {
    let mut tx = client.transaction()?;
    for (prompt, version, hash) in versions {
        // Two gateways starting together may both record a version: the first one stays.
        tx.execute(
            "INSERT INTO prompt_versions (prompt, version, hash, first_seen_ms) VALUES ($1, $2, $3, $4)
             ON CONFLICT (prompt, version) DO NOTHING",
            &[prompt, &i64::from(*version), hash, &now_ms()],
        )?;
    }
    for m in moves {
        tx.execute(
            "INSERT INTO prompt_label_moves (prompt, label, from_version, to_version, at_ms, moved_by, source)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                &m.prompt,
                &m.label,
                &m.from.map(i64::from),
                &i64::from(m.to),
                &m.at_ms,
                &m.by,
                &m.source,
            ],
        )?;
    }
    tx.commit()?;
    Ok(())
}

fn pg_history(client: &mut postgres::Client, prompt: &str) -> anyhow::Result<Vec<LabelMove>> {
    let rows = client.query(
        "SELECT prompt, label, from_version, to_version, at_ms, moved_by, source
         FROM prompt_label_moves WHERE prompt = $1 ORDER BY at_ms, id",
        &[&prompt],
    )?;
    rows.iter()
        .map(|r| {
            Ok(LabelMove {
                prompt: r.try_get(0)?,
                label: r.try_get(1)?,
                from: r
                    .try_get::<_, Option<i64>>(2)?
                    .map(|v| version_of(v, "prompt_label_moves"))
                    .transpose()?,
                to: version_of(r.try_get(3)?, "prompt_label_moves")?,
                at_ms: r.try_get(4)?,
                by: r.try_get(5)?,
                source: r.try_get(6)?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::tests::{SUPPORT, tmp, write};
    use super::*;

    /// The SQLite file in `dir`.
    fn sqlite(dir: &Path) -> Option<Db> {
        Some(Db::Sqlite(dir.join("t.db")))
    }

    /// A fresh PostgreSQL database (`None`: skipped, TRESTLE_SKIP_POSTGRES=1).
    fn postgres(_dir: &Path) -> Option<Db> {
        let url = crate::store::pg_server::database()?;
        Some(Db::Postgres(Arc::new(PgPool::open(&url, 2).unwrap())))
    }

    fn labels_move_by_file_and_api_and_versions_stay_immutable(
        name: &str,
        open: fn(&Path) -> Option<Db>,
    ) {
        let dir = tmp(name);
        let Some(db) = open(&dir) else { return };
        write(&dir, "support-answer", SUPPORT);
        let labels = PromptLabels::new(Some(db.clone()));
        let prompts = Prompts::load(&dir).unwrap();
        labels.sync(&prompts).unwrap();
        assert_eq!(labels.get("support-answer", "production"), Some(1));
        let m = labels
            .promote(&prompts, "support-answer", "production", 2, "ana")
            .unwrap();
        assert_eq!((m.from, m.to), (Some(1), 2));
        // A restart (a new PromptLabels on the same store) keeps the API's move.
        let again = PromptLabels::new(Some(db.clone()));
        again.sync(&prompts).unwrap();
        assert_eq!(again.get("support-answer", "production"), Some(2));
        // The file moving the label wins, and is recorded.
        write(
            &dir,
            "support-answer",
            &SUPPORT.replace("production = 1", "production = 1\ncanary = 2"),
        );
        let prompts = Prompts::load(&dir).unwrap();
        again.sync(&prompts).unwrap();
        assert_eq!(again.get("support-answer", "canary"), Some(2));
        assert_eq!(
            again.get("support-answer", "production"),
            Some(2),
            "the file did not move production"
        );
        let history = again.history("support-answer").unwrap();
        assert_eq!(
            history
                .iter()
                .filter(|m| m.source == "api" && m.by == "ana")
                .count(),
            1
        );
        assert_eq!(history[0].source, "config");
        assert_eq!((history[1].from, history[1].to), (Some(1), 2));
        // A label only the API set survives a restart.
        again
            .promote(&prompts, "support-answer", "beta", 1, "bo")
            .unwrap();
        let third = PromptLabels::new(Some(db.clone()));
        third.sync(&prompts).unwrap();
        assert_eq!(third.get("support-answer", "beta"), Some(1));
        // Another gateway's move shows after a refresh.
        again
            .promote(&prompts, "support-answer", "beta", 2, "cy")
            .unwrap();
        assert_eq!(third.get("support-answer", "beta"), Some(1));
        third.refresh().unwrap();
        assert_eq!(third.get("support-answer", "beta"), Some(2));
        // Editing a served version is refused, and nothing is written.
        write(
            &dir,
            "support-answer",
            &SUPPORT.replace("helpful support agent", "friendly support agent"),
        );
        let e = again.sync(&Prompts::load(&dir).unwrap()).unwrap_err();
        assert!(
            e.contains("version 1 of prompt support-answer changed"),
            "{e}"
        );
        assert_eq!(
            again.history("support-answer").unwrap().len(),
            history.len() + 2
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn labels_on_sqlite() {
        labels_move_by_file_and_api_and_versions_stay_immutable("labels-sqlite", sqlite);
    }

    #[test]
    fn labels_on_postgres() {
        labels_move_by_file_and_api_and_versions_stay_immutable("labels-pg", postgres);
    }

    #[test]
    fn without_a_store_the_files_labels_hold_and_nothing_is_recorded() {
        let dir = tmp("labels-none");
        write(&dir, "support-answer", SUPPORT);
        let labels = PromptLabels::new(None);
        let prompts = Prompts::load(&dir).unwrap();
        labels.sync(&prompts).unwrap();
        assert_eq!(labels.get("support-answer", "production"), Some(1));
        labels
            .promote(&prompts, "support-answer", "production", 2, "ana")
            .unwrap();
        assert_eq!(labels.get("support-answer", "production"), Some(2));
        assert!(labels.history("support-answer").unwrap().is_empty());
        let _ = std::fs::remove_dir_all(dir);
    }

    /// The gateway syncs while it builds its state, on the async runtime: the PostgreSQL
    /// client must not run on the runtime's own threads.
    #[test]
    fn sync_on_postgres_works_inside_the_async_runtime() {
        let dir = tmp("labels-pg-rt");
        let Some(db) = postgres(&dir) else { return };
        write(&dir, "support-answer", SUPPORT);
        let prompts = Prompts::load(&dir).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let labels = rt.block_on(async {
            let labels = PromptLabels::new(Some(db));
            labels.sync(&prompts).unwrap();
            labels
        });
        assert_eq!(labels.get("support-answer", "production"), Some(1));
        let _ = std::fs::remove_dir_all(dir);
    }
}
