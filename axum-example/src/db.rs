//! The origin: an embedded SQLite database, seeded with deterministic data.
//!
//! Every query is counted in `origin_queries_total{route}` and delayed by
//! `ORIGIN_DELAY_MS`, so the effect of the cache is visible.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use serde::Serialize;

/// Products seeded at start-up: ids 1..=PRODUCTS.
pub const PRODUCTS: u64 = 10_000;
/// Users seeded at start-up: ids 1..=USERS.
pub const USERS: u64 = 1_000;

/// The log ids of the views applied to the counts, in durable mode (a
/// Redis Stream id `<ms>-<seq>` as its two numbers): see `views.rs`, which
/// records and prunes them.
pub const VIEW_LOG_APPLIED: &str = "CREATE TABLE IF NOT EXISTS view_log_applied (
    ms INTEGER NOT NULL, seq INTEGER NOT NULL, PRIMARY KEY (ms, seq)) WITHOUT ROWID;";

/// A database error.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// SQLite failed.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The query task failed.
    #[error("database task failed")]
    Task,
    /// The `DATABASE_URL` is not one this app understands.
    #[error("unsupported DATABASE_URL {0:?}: use sqlite://path?mode=rwc")]
    Url(String),
}

/// A product.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct Product {
    /// Its id.
    pub id: u64,
    /// Its name.
    pub name: String,
    /// Its price in cents.
    pub price_cents: i64,
}

/// A user.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct User {
    /// Its id.
    pub id: u64,
    /// Its name.
    pub name: String,
}

/// A line of the top-products report.
#[derive(Debug, Clone, Serialize)]
pub struct TopProduct {
    /// The product id.
    pub id: u64,
    /// The product name.
    pub name: String,
    /// Its view count.
    pub views: i64,
}

/// The database handle: one connection, used from blocking tasks.
#[derive(Clone)]
pub struct Db {
    conn: Arc<Mutex<Connection>>,
    delay: Duration,
}

impl Db {
    /// Opens `url` (`None`: a private in-memory database), creates the
    /// schema and seeds it without duplicating rows.
    pub fn open(url: Option<&str>, delay: Duration) -> Result<Db, DbError> {
        let conn = match url {
            None => Connection::open_in_memory()?,
            Some(url) => {
                let path = url
                    .strip_prefix("sqlite://")
                    .or_else(|| url.strip_prefix("sqlite:"))
                    .ok_or_else(|| DbError::Url(url.to_owned()))?;
                let path = path.split('?').next().unwrap_or(path);
                if path.is_empty() || path == ":memory:" {
                    Connection::open_in_memory()?
                } else {
                    Connection::open_with_flags(
                        path,
                        OpenFlags::SQLITE_OPEN_READ_WRITE
                            | OpenFlags::SQLITE_OPEN_CREATE
                            | OpenFlags::SQLITE_OPEN_FULL_MUTEX,
                    )?
                }
            }
        };
        conn.busy_timeout(Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS products (
                 id INTEGER PRIMARY KEY, name TEXT NOT NULL,
                 price_cents INTEGER NOT NULL, views INTEGER NOT NULL DEFAULT 0);
             CREATE TABLE IF NOT EXISTS users (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);",
        )?;
        conn.execute_batch(VIEW_LOG_APPLIED)?;
        seed(&conn)?;
        Ok(Db {
            conn: Arc::new(Mutex::new(conn)),
            delay,
        })
    }

    /// Runs `f` on the connection for `route`: counted, delayed, off the
    /// async threads.
    pub async fn run<T, F>(&self, route: &'static str, f: F) -> Result<T, DbError>
    where
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
        T: Send + 'static,
    {
        metrics::counter!("origin_queries_total", "route" => route).increment(1);
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let conn = conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            f(&conn)
        })
        .await
        .map_err(|_| DbError::Task)?
        .map_err(DbError::from)
    }

    /// The product `id`.
    pub async fn product(&self, route: &'static str, id: u64) -> Result<Option<Product>, DbError> {
        self.run(route, move |c| {
            c.query_row(
                "SELECT id, name, price_cents FROM products WHERE id = ?1",
                [id as i64],
                |r| {
                    Ok(Product {
                        id: r.get::<_, i64>(0)? as u64,
                        name: r.get(1)?,
                        price_cents: r.get(2)?,
                    })
                },
            )
            .optional()
        })
        .await
    }

    /// Sets the name and price of product `id`; `false` when there is no
    /// such product.
    pub async fn update_product(
        &self,
        route: &'static str,
        id: u64,
        name: String,
        price_cents: i64,
    ) -> Result<bool, DbError> {
        let changed = self
            .run(route, move |c| {
                c.execute(
                    "UPDATE products SET name = ?2, price_cents = ?3 WHERE id = ?1",
                    params![id as i64, name, price_cents],
                )
            })
            .await?;
        Ok(changed > 0)
    }

    /// The ten most viewed products, most viewed first.
    pub async fn top_products(&self, route: &'static str) -> Result<Vec<TopProduct>, DbError> {
        self.run(route, |c| {
            let mut stmt = c.prepare(
                "SELECT id, name, views FROM products ORDER BY views DESC, id ASC LIMIT 10",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok(TopProduct {
                    id: r.get::<_, i64>(0)? as u64,
                    name: r.get(1)?,
                    views: r.get(2)?,
                })
            })?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })
        .await
    }

    /// Every product id, for the existence filter built at start-up.
    pub async fn product_ids(&self, route: &'static str) -> Result<Vec<u64>, DbError> {
        self.run(route, |c| {
            let mut stmt = c.prepare("SELECT id FROM products")?;
            let ids = stmt.query_map([], |r| Ok(r.get::<_, i64>(0)? as u64))?;
            ids.collect::<rusqlite::Result<Vec<_>>>()
        })
        .await
    }

    /// The ids of the `n` most viewed products, most viewed first.
    pub async fn most_viewed(&self, route: &'static str, n: u32) -> Result<Vec<u64>, DbError> {
        self.run(route, move |c| {
            let mut stmt =
                c.prepare("SELECT id FROM products ORDER BY views DESC, id ASC LIMIT ?1")?;
            let ids = stmt.query_map([n], |r| Ok(r.get::<_, i64>(0)? as u64))?;
            ids.collect::<rusqlite::Result<Vec<_>>>()
        })
        .await
    }

    /// Creates a product; returns its id.
    pub async fn create_product(
        &self,
        route: &'static str,
        name: String,
        price_cents: i64,
    ) -> Result<u64, DbError> {
        self.run(route, move |c| {
            c.execute(
                "INSERT INTO products (name, price_cents, views) VALUES (?1, ?2, 0)",
                params![name, price_cents],
            )?;
            Ok(c.last_insert_rowid() as u64)
        })
        .await
    }

    /// The user `id`.
    pub async fn user(&self, route: &'static str, id: u64) -> Result<Option<User>, DbError> {
        self.run(route, move |c| {
            c.query_row(
                "SELECT id, name FROM users WHERE id = ?1",
                [id as i64],
                |r| {
                    Ok(User {
                        id: r.get::<_, i64>(0)? as u64,
                        name: r.get(1)?,
                    })
                },
            )
            .optional()
        })
        .await
    }
}

/// Seeds the catalog once per database: a marker row says it was done,
/// so a restart never brings back deleted rows, and two instances that
/// start together on one file seed it once (the check and the inserts are
/// one write transaction).
fn seed(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let seeded: Option<i64> = conn
        .query_row("SELECT value FROM meta WHERE name = 'seeded'", [], |r| {
            r.get(0)
        })
        .optional()?;
    if seeded.is_some() {
        return conn.execute_batch("COMMIT");
    }
    conn.execute("INSERT INTO meta (name, value) VALUES ('seeded', 1)", [])?;
    {
        let mut product = conn.prepare(
            "INSERT OR IGNORE INTO products (id, name, price_cents, views) VALUES (?1, ?2, ?3, 0)",
        )?;
        for id in 1..=PRODUCTS as i64 {
            product.execute(params![id, format!("Product {id}"), id * 100])?;
        }
        let mut user = conn.prepare("INSERT OR IGNORE INTO users (id, name) VALUES (?1, ?2)")?;
        for id in 1..=USERS as i64 {
            user.execute(params![id, format!("User {id}")])?;
        }
    }
    conn.execute_batch("COMMIT")
}
