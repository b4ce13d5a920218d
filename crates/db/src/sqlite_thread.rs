//! SQLite connections driven synchronously, each on a thread of its own.
//!
//! Why not sqlx here: sqlx's SQLite driver runs every statement on a worker thread and hands the
//! statement, and then each row, across threads. On the embedded write path a batch of a few
//! statements therefore cost several wake-ups and context switches, which weighed more than
//! SQLite's own work (perf: ~15 % of all CPU in switches and wake-ups, ~9 % in the JSON
//! functions that multi-row inserts needed to keep the statement count down). A connection
//! owned by one thread and given whole jobs (a group commit, a receive, a batch of postings)
//! costs one hop per job, and binds every row directly with a cached prepared statement.
//!
//! sqlx stays for migrations and for the concurrent readers; both drivers link the same
//! SQLite library, so they share its file locking.

use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use rusqlite::Connection;
use tokio::sync::oneshot;

use crate::{redact, DbError};

/// How long a statement waits for another connection's write lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Opens the SQLite file of a `sqlite://PATH` URL with the settings of [`crate::open_sqlite`]:
/// WAL, `synchronous = FULL` (a commit is on disk before it returns), foreign keys, a busy
/// timeout. Its page cache is 4 MB rather than 16: a writer appends to the right edge of its
/// B-trees (time-ordered ids), so a bigger cache only fills up with pages it will not touch
/// again, and three writers filled 48 MB of a `serve` that must stay under 150 MB. The file must exist (migrate it through sqlx first); in-memory URLs are refused,
/// since a second connection would see another database.
pub fn open_sqlite_sync(url: &str) -> Result<Connection, DbError> {
    let path = sqlite_path(url).ok_or_else(|| DbError::UnsupportedUrl(redact(url)))?;
    let conn = Connection::open(path).map_err(DbError::Sqlite)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(DbError::Sqlite)?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0)).map_err(DbError::Sqlite)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(DbError::UnsupportedUrl(format!("{} (journal mode {mode}, expected wal)", redact(url))));
    }
    conn.execute_batch(
        "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA temp_store = memory; PRAGMA cache_size = -4000;",
    )
    .map_err(DbError::Sqlite)?;
    Ok(conn)
}

/// The file path of a `sqlite://PATH` or `sqlite:PATH` URL, without its `?options`; `None` for
/// an in-memory database.
fn sqlite_path(url: &str) -> Option<&str> {
    let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or(rest);
    (!path.is_empty() && path != ":memory:").then_some(path)
}

type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// One connection on its own thread, running the jobs it is given in order.
///
/// The thread ends, closing the connection, when the last clone is dropped.
#[derive(Clone)]
pub struct SqliteThread {
    name: &'static str,
    jobs: std_mpsc::Sender<Job>,
}

/// The connection's thread has ended (it panicked, or could not be started).
#[derive(Debug, thiserror::Error)]
#[error("the SQLite thread `{0}` has stopped")]
pub struct ThreadStopped(pub &'static str);

impl SqliteThread {
    /// Starts a thread named `name` that owns `conn`.
    pub fn spawn(name: &'static str, mut conn: Connection) -> Result<Self, DbError> {
        let (jobs, queue) = std_mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                while let Ok(job) = queue.recv() {
                    job(&mut conn);
                }
            })
            .map_err(|e| DbError::Thread(e.to_string()))?;
        Ok(Self { name, jobs })
    }

    /// Runs `job` on the connection's thread and waits for its result without blocking the
    /// runtime.
    pub async fn run<R, F>(&self, job: F) -> Result<R, ThreadStopped>
    where
        F: FnOnce(&mut Connection) -> R + Send + 'static,
        R: Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Box::new(move |conn| {
                // A caller that stopped waiting no longer needs the answer.
                let _ = reply.send(job(conn));
            }))
            .map_err(|_| ThreadStopped(self.name))?;
        answer.await.map_err(|_| ThreadStopped(self.name))
    }
}

/// Whether `e` is a UNIQUE or PRIMARY KEY violation whose message names `column`
/// (`table.column`).
pub fn is_unique_violation_on(e: &rusqlite::Error, column: &str) -> bool {
    match e {
        rusqlite::Error::SqliteFailure(failure, Some(message)) => {
            matches!(
                failure.extended_code,
                rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE | rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
            ) && message.contains(column)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_url_names_its_path_and_memory_is_refused() {
        assert_eq!(sqlite_path("sqlite://data/ledger.db"), Some("data/ledger.db"));
        assert_eq!(sqlite_path("sqlite:///tmp/x.db?mode=rwc"), Some("/tmp/x.db"));
        assert_eq!(sqlite_path("sqlite:data.db"), Some("data.db"));
        assert_eq!(sqlite_path("sqlite::memory:"), None);
        assert_eq!(sqlite_path("postgres://x"), None);
    }

    #[tokio::test]
    async fn jobs_run_in_order_on_a_durable_wal_connection() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let conn = open_sqlite_sync(&url).unwrap();
        let thread = SqliteThread::spawn("test-sqlite", conn).unwrap();
        thread.run(|c| c.execute_batch("CREATE TABLE t (x INTEGER PRIMARY KEY)")).await.unwrap().unwrap();
        for x in 0..3 {
            thread.run(move |c| c.execute("INSERT INTO t (x) VALUES (?1)", [x])).await.unwrap().unwrap();
        }
        let duplicate = thread.run(|c| c.execute("INSERT INTO t (x) VALUES (1)", [])).await.unwrap().unwrap_err();
        assert!(is_unique_violation_on(&duplicate, "t.x"), "{duplicate}");
        let (sum, sync): (i64, i64) = thread
            .run(|c| {
                let sum = c.query_row("SELECT SUM(x) FROM t", [], |r| r.get(0))?;
                let sync = c.query_row("PRAGMA synchronous", [], |r| r.get(0))?;
                Ok::<_, rusqlite::Error>((sum, sync))
            })
            .await
            .unwrap()
            .unwrap();
        assert_eq!((sum, sync), (3, 2), "2 is FULL");
    }
}
