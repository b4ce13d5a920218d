#![allow(clippy::unwrap_used, clippy::expect_used)]
//! SQLite plumbing against real files.

use cashflow_db::{migrate_sqlite, open_sqlite, MigrationSource};

const MIGRATIONS: &[MigrationSource] = &[
    MigrationSource { version: 1, description: "things", sql: "CREATE TABLE things (x INTEGER)" },
    MigrationSource { version: 2, description: "more things", sql: "CREATE TABLE more_things (y TEXT)" },
];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn processes_migrating_a_fresh_file_at_once_all_succeed() {
    for _ in 0..5 {
        // Given a fresh file and four stores opening it at the same time
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("store.db").display());
        let mut openers = tokio::task::JoinSet::new();
        for _ in 0..4 {
            let url = url.clone();
            openers.spawn(async move {
                let pool = open_sqlite(&url, 1).await.unwrap();
                migrate_sqlite(&pool, MIGRATIONS).await
            });
        }

        // Then every one of them gets a migrated database
        for result in openers.join_all().await {
            result.unwrap();
        }
        let pool = open_sqlite(&url, 1).await.unwrap();
        let applied: Vec<i64> =
            sqlx::query_scalar("SELECT version FROM _sqlx_migrations ORDER BY version").fetch_all(&pool).await.unwrap();
        assert_eq!(applied, [1, 2]);
    }
}
