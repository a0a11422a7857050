//! A schema of a test's own on the real PostgreSQL of `DATABASE_URL`, dropped at the end.

use outbox::sqlx::{self, PgPool};
use outbox::{PostgresOutbox, TimeOffset};

pub fn url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

#[allow(dead_code)]
pub struct TestDb {
    pub outbox: PostgresOutbox,
    pub offset: TimeOffset,
    pub schema: String,
    /// `DATABASE_URL` with this schema as the search path (for processes the test starts).
    pub url: String,
    admin: PgPool,
}

impl TestDb {
    pub async fn new(name: &str) -> Self {
        let admin = PgPool::connect(&url()).await.unwrap_or_else(|e| {
            panic!(
                "PostgreSQL is not reachable at {} ({e}); run `cargo xtask test`, which starts it",
                url()
            )
        });
        let schema = testkit::unique("t_outbox", name).replace(':', "_");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
            .execute(&admin)
            .await
            .unwrap();
        let sep = if url().contains('?') { '&' } else { '?' };
        let url = format!("{}{sep}options=-csearch_path%3D{schema}", url());
        let offset = TimeOffset::new();
        let outbox = PostgresOutbox::connect(&url)
            .await
            .unwrap()
            .with_time_offset(offset.clone());
        outbox.migrate().await.unwrap();
        Self {
            outbox,
            offset,
            schema,
            url,
            admin,
        }
    }

    pub async fn drop(self) {
        self.outbox.pool().close().await;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA {} CASCADE",
            self.schema
        )))
        .execute(&self.admin)
        .await
        .unwrap();
    }
}
