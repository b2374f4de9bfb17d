//! The database behind sea-orm: connecting (SQLite file or PostgreSQL URL),
//! migrating at start-up, and the entities.

pub mod entities;

use berth_migrations::{Migrator, MigratorTrait};
use sea_orm::{ConnectOptions, Database, DatabaseConnection};
use std::{path::Path, time::Duration};

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("creating data dir {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error("connecting to the database: {0}")]
    Connect(sea_orm::DbErr),
    #[error("applying migrations: {0}")]
    Migrate(sea_orm::DbErr),
}

/// The SQLite URL of the embedded default database inside `data_dir`.
pub fn sqlite_url(data_dir: &Path) -> String {
    format!("sqlite://{}?mode=rwc", data_dir.join("berth.db").display())
}

/// Opens the database (`url`, or SQLite in `data_dir`) and applies pending migrations.
pub async fn connect(url: Option<&str>, data_dir: &Path) -> Result<DatabaseConnection, DbError> {
    let url = match url {
        Some(url) => url.to_owned(),
        None => {
            std::fs::create_dir_all(data_dir).map_err(|source| DbError::DataDir {
                path: data_dir.display().to_string(),
                source,
            })?;
            sqlite_url(data_dir)
        }
    };
    let sqlite = url.starts_with("sqlite:");
    let mut options = ConnectOptions::new(url);
    options
        .connect_timeout(Duration::from_secs(10))
        .acquire_timeout(Duration::from_secs(10))
        // One writer at a time is what SQLite supports anyway.
        .max_connections(if sqlite { 1 } else { 16 })
        .sqlx_logging(false);
    if sqlite {
        // A file of this process's: nothing to check before each statement.
        options.test_before_acquire(false);
    } else {
        // A server's connection is checked only after it sat idle (the
        // server or a proxy may have closed it), not before every statement.
        options.test_before_acquire_if_idle_for(Duration::from_secs(30));
    }
    let db = Database::connect(options).await.map_err(DbError::Connect)?;
    if sqlite {
        // Write-ahead log, synced at checkpoints: a commit costs no fsync of
        // its own, and the file is never corrupted by a crash (the newest
        // commits may be lost on power loss).
        use sea_orm::ConnectionTrait;
        db.execute_unprepared("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;")
            .await
            .map_err(DbError::Connect)?;
    }
    Migrator::up(&db, None).await.map_err(DbError::Migrate)?;
    Ok(db)
}
