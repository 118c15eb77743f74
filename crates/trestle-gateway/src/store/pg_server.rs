//! A private PostgreSQL server for tests: `initdb` in a temporary folder, `postgres` on a
//! free loopback port with trust authentication, one per test process, and a fresh database
//! per test. A small watcher stops the server and removes its folder when the test process
//! ends. PostgreSQL refuses to run as root, so as root it runs as the `postgres` user.
//!
//! Binaries are looked for in `TRESTLE_PG_BIN`, then `/usr/lib/postgresql/*/bin` (Debian's
//! `postgresql` package). Without them a test fails with a message saying what to install,
//! unless `TRESTLE_SKIP_POSTGRES=1`, when it is skipped.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

struct Server {
    port: u16,
}

static SERVER: OnceLock<Result<Server, String>> = OnceLock::new();
static NEXT_DB: AtomicUsize = AtomicUsize::new(0);

/// A URL to a new, empty database on the test server; `None` when PostgreSQL is missing
/// and `TRESTLE_SKIP_POSTGRES=1`.
pub fn database() -> Option<String> {
    let server = match SERVER.get_or_init(start) {
        Ok(s) => s,
        Err(e) if std::env::var("TRESTLE_SKIP_POSTGRES").as_deref() == Ok("1") => {
            eprintln!("skipping a PostgreSQL test (TRESTLE_SKIP_POSTGRES=1): {e}");
            return None;
        }
        Err(e) => panic!(
            "{e}\nInstall PostgreSQL (Debian: apt-get install postgresql), point TRESTLE_PG_BIN \
             at its bin folder, or set TRESTLE_SKIP_POSTGRES=1 to skip these tests."
        ),
    };
    let name = format!(
        "t{}_{}",
        std::process::id(),
        NEXT_DB.fetch_add(1, Ordering::Relaxed)
    );
    let admin = format!("postgres://postgres@127.0.0.1:{}/postgres", server.port);
    // Tests call this from inside async tests too, where the sync client cannot run.
    crate::db::off_runtime(|| {
        let mut client = postgres::Client::connect(&admin, postgres::NoTls)
            .unwrap_or_else(|e| panic!("test PostgreSQL at port {}: {e}", server.port));
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
    });
    Some(format!(
        "postgres://postgres@127.0.0.1:{}/{name}",
        server.port
    ))
}

fn bin_dir() -> Result<PathBuf, String> {
    if let Ok(dir) = std::env::var("TRESTLE_PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|_| "PostgreSQL server binaries not found (/usr/lib/postgresql)".to_string())?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists() && p.join("pg_ctl").exists())
        .collect();
    found.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    found
        .pop()
        .ok_or_else(|| "no initdb and pg_ctl under /usr/lib/postgresql/*/bin".to_string())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Runs a PostgreSQL binary, as the `postgres` user when we are root.
fn run(root: bool, program: &Path, args: &[&str]) -> Result<(), String> {
    let mut cmd = if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    };
    let out = cmd
        .args(args)
        .output()
        .map_err(|e| format!("{}: {e}", program.display()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{} {}: {}{}",
            program.display(),
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn start() -> Result<Server, String> {
    let dir = std::env::temp_dir().join(format!("trestle-pg-{}", std::process::id()));
    start_in(&dir).inspect_err(|_| {
        let _ = std::fs::remove_dir_all(&dir);
    })
}

fn start_in(dir: &Path) -> Result<Server, String> {
    let bin = bin_dir()?;
    let root = is_root();
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if root {
        let ok = Command::new("chown")
            .args(["postgres:postgres"])
            .arg(dir)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            return Err(format!(
                "cannot give {} to the postgres user (is there one?)",
                dir.display()
            ));
        }
    }
    let data = dir.join("data");
    let data_s = data.display().to_string();
    run(
        root,
        &bin.join("initdb"),
        &[
            "-D",
            &data_s,
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ],
    )?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("no free port: {e}"))?
        .port();
    let options = format!(
        "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off \
         -c full_page_writes=off -c max_connections=200",
        dir.display()
    );
    let log = dir.join("server.log").display().to_string();
    run(
        root,
        &bin.join("pg_ctl"),
        &["-D", &data_s, "-o", &options, "-l", &log, "-w", "start"],
    )?;
    // Stop the server and remove its folder once this test process is gone.
    let stop = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; \
         {as_pg} {pg_ctl} -D {data_s} -m immediate stop >/dev/null 2>&1; rm -rf {dir}",
        pid = std::process::id(),
        as_pg = if root { "runuser -u postgres --" } else { "" },
        pg_ctl = bin.join("pg_ctl").display(),
        dir = dir.display(),
    );
    Command::new("sh")
        .args(["-c", &stop])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start the test server's watcher: {e}"))?;
    Ok(Server { port })
}
