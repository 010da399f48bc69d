//! Throw-away stores for the tests: a SQLite file in a temp dir, or a fresh
//! database on the PostgreSQL server named by `DROVER_TEST_POSTGRES_URL`.

#![allow(dead_code)]

use drover_store::{Store, StoreOptions};
use sqlx::{Connection, Executor};

/// A store and what keeps it alive.
pub struct Fixture {
    pub store: Store,
    pub url: String,
    _dir: Option<tempfile::TempDir>,
}

pub async fn sqlite() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/state.db", dir.path().display());
    let store = Store::open(&url, StoreOptions::default()).await.unwrap();
    Fixture {
        store,
        url,
        _dir: Some(dir),
    }
}

/// A new, empty database on the test PostgreSQL server.
pub async fn postgres() -> Fixture {
    let base = std::env::var("DROVER_TEST_POSTGRES_URL")
        .expect("DROVER_TEST_POSTGRES_URL must be set for the PostgreSQL tests");
    let name = format!("drover_test_{}", rand_suffix());
    let mut admin = sqlx::PgConnection::connect(&base).await.unwrap();
    admin
        .execute(format!("CREATE DATABASE {name}").as_str())
        .await
        .unwrap();
    let _ = admin.close().await;
    let mut url = url::Url::parse(&base).unwrap();
    url.set_path(&format!("/{name}"));
    let url = url.to_string();
    let store = Store::open(&url, StoreOptions::default()).await.unwrap();
    Fixture {
        store,
        url,
        _dir: None,
    }
}

fn rand_suffix() -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{}_{}", std::process::id(), nanos % 1_000_000_000_000)
}

/// Run this test binary again as a child process that runs the ignored test
/// `name` with the given environment.
pub fn spawn_child(name: &str, env: &[(&str, &str)]) -> std::process::Child {
    let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
    cmd.args([
        name,
        "--exact",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdout(std::process::Stdio::piped());
    cmd.spawn().unwrap()
}
