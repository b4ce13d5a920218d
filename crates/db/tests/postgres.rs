#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Postgres plumbing against a real server: one schema per store, test databases. Ignored
//! unless `CASHFLOW_TEST_POSTGRES_URL` names an admin URL (see `build.rs`).

use cashflow_db::{drop_postgres_database, migrate_postgres, open_postgres, DbError, MigrationSource, TestDatabase};

fn admin_url() -> String {
    std::env::var("CASHFLOW_TEST_POSTGRES_URL")
        .expect("CASHFLOW_TEST_POSTGRES_URL (an admin URL such as postgres://postgres@127.0.0.1:5432/postgres)")
}

const ALPHA: &[MigrationSource] =
    &[MigrationSource { version: 1, description: "alpha", sql: "CREATE TABLE things (alpha_value integer)" }];
const BETA: &[MigrationSource] =
    &[MigrationSource { version: 1, description: "beta", sql: "CREATE TABLE things (beta_value text)" }];

async fn columns_of_things(pool: &sqlx::PgPool) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT column_name::text FROM information_schema.columns
         WHERE table_schema = current_schema() AND table_name = 'things'",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

#[tokio::test]
#[cfg_attr(not(postgres_tests), ignore = "set CASHFLOW_TEST_POSTGRES_URL to run against Postgres")]
async fn stores_sharing_a_database_each_own_a_schema_and_its_migrations() {
    // Given one database and two stores whose migrations use the same names and versions
    let db = TestDatabase::create(&admin_url()).await.unwrap();
    let alpha = open_postgres(db.url(), 2, "alpha").await.unwrap();
    let beta = open_postgres(db.url(), 2, "beta").await.unwrap();

    // When each migrates, twice (a restart)
    for _ in 0..2 {
        migrate_postgres(&alpha, ALPHA).await.unwrap();
        migrate_postgres(&beta, BETA).await.unwrap();
    }

    // Then each sees only its own tables and its own migration history
    assert_eq!(columns_of_things(&alpha).await, ["alpha_value"]);
    assert_eq!(columns_of_things(&beta).await, ["beta_value"]);
    for (pool, description) in [(&alpha, "alpha"), (&beta, "beta")] {
        let applied: Vec<String> =
            sqlx::query_scalar("SELECT description FROM _sqlx_migrations").fetch_all(pool).await.unwrap();
        assert_eq!(applied, [description]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[cfg_attr(not(postgres_tests), ignore = "set CASHFLOW_TEST_POSTGRES_URL to run against Postgres")]
async fn processes_starting_together_both_get_the_schema() {
    let db = TestDatabase::create(&admin_url()).await.unwrap();
    for schema in ["s1", "s2", "s3"] {
        let (a, b, c) = tokio::join!(
            open_postgres(db.url(), 1, schema),
            open_postgres(db.url(), 1, schema),
            open_postgres(db.url(), 1, schema)
        );
        let (a, b, c) = (a.unwrap(), b.unwrap(), c.unwrap());
        let (ra, rb, rc) =
            tokio::join!(migrate_postgres(&a, ALPHA), migrate_postgres(&b, ALPHA), migrate_postgres(&c, ALPHA));
        ra.unwrap();
        rb.unwrap();
        rc.unwrap();
        assert_eq!(columns_of_things(&a).await, ["alpha_value"]);
    }
}

#[tokio::test]
#[cfg_attr(not(postgres_tests), ignore = "set CASHFLOW_TEST_POSTGRES_URL to run against Postgres")]
async fn a_test_database_is_dropped_with_its_guard_and_only_test_databases_can_be() {
    let admin = admin_url();
    let db = TestDatabase::create(&admin).await.unwrap();
    let name = db.url().rsplit('/').next().unwrap().split('?').next().unwrap().to_owned();
    assert!(name.starts_with("cf_test_"), "{name}");
    let pool = open_postgres(db.url(), 1, "anything").await.unwrap();

    drop(db); // while a connection is still open

    let admin_pool = sqlx::PgPool::connect(&admin).await.unwrap();
    let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM pg_database WHERE datname = $1")
        .bind(&name)
        .fetch_one(&admin_pool)
        .await
        .unwrap();
    assert_eq!(left, 0);
    drop(pool);

    let refused = drop_postgres_database(&admin, &admin).await;
    assert!(matches!(refused, Err(DbError::UnsupportedUrl(_))), "{refused:?}");
}

#[tokio::test]
async fn a_schema_must_be_a_plain_identifier_and_the_url_postgres() {
    // Checked before connecting: no server needed.
    let bad_schema = open_postgres("postgres://nobody@127.0.0.1:1/x", 1, "Robert'); DROP TABLE students;--").await;
    assert!(matches!(bad_schema, Err(DbError::InvalidSchema(_))), "{bad_schema:?}");
    let not_postgres = open_postgres("sqlite://x.db", 1, "ledger").await;
    assert!(matches!(not_postgres, Err(DbError::UnsupportedUrl(_))), "{not_postgres:?}");
    let not_sqlite = cashflow_db::open_sqlite("postgres://nobody@127.0.0.1:1/x", 1).await;
    assert!(matches!(not_sqlite, Err(DbError::UnsupportedUrl(_))), "{not_sqlite:?}");
}
