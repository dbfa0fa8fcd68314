//! A throwaway PostgreSQL database per test, dropped when the handle is.
//!
//! The server is `MEND_TEST_DATABASE_URL` (a URL without a database name), by default
//! `postgres://postgres@127.0.0.1:5432`; `scripts/test-all` starts it when it is not answering.

use std::sync::atomic::{AtomicU32, Ordering::Relaxed};

use tokio_postgres::NoTls;

use super::postgres::PgError;

/// The server tests run against, without a database name.
pub fn server_url() -> String {
    std::env::var("MEND_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned())
        .trim_end_matches('/')
        .to_owned()
}

/// A database created for one test.
#[derive(Debug)]
pub struct TestDatabase {
    name: String,
    url: String,
}

async fn admin(statement: &str) -> Result<(), PgError> {
    let (client, connection) = format!("{}/postgres", server_url())
        .parse::<tokio_postgres::Config>()
        .map_err(|_| PgError::Url)?
        .connect(NoTls)
        .await?;
    let driver = tokio::spawn(connection);
    let result = client.batch_execute(statement).await;
    drop(client);
    let _ = driver.await;
    Ok(result?)
}

impl TestDatabase {
    /// Creates an empty database with a name no other test uses.
    pub async fn create() -> Result<TestDatabase, PgError> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!(
            "mend_test_{}_{}_{nanos}",
            std::process::id(),
            NEXT.fetch_add(1, Relaxed)
        );
        admin(&format!("CREATE DATABASE {name}")).await?;
        let url = format!("{}/{name}", server_url());
        Ok(TestDatabase { name, url })
    }

    /// Its URL.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // Drop may run inside a runtime; a thread of its own can block on the statement.
        let statement = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime
                .block_on(admin(&statement))
                .map_err(std::io::Error::other)
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop test database {}", self.name);
        }
    }
}
