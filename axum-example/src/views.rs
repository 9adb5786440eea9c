//! The view counter behind `POST /products/{id}/views`: write-behind,
//! increments summed per product and added to SQLite in batches.
//!
//! With `VIEWS_DURABLE=1` (and `REDIS_URL`) every acknowledged view is
//! first appended to a Redis Stream, the durable log, so a crash loses
//! none; a crash between a batch's commit and its acknowledgement in the
//! log delivers the batch again, and the writer applies it exactly once:
//! the log ids of every write it applies go into the table
//! `view_log_applied` in the same transaction as the counts, and a write
//! whose ids are there already is skipped.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rusqlite::{Connection, params};
use tower_cache::layer::write_behind::EntryId;
use tower_cache::store::{RedisQueue, RedisStore};
use tower_cache::{Cache, Policy, Write, WriteBehind, WriteBehindLayer};
use tower_layer::Layer;

use crate::db::{Db, DbError};

/// The route, as the metrics name it.
const ROUTE: &str = "/products/{id}/views";

/// The durable log's name: the stream `catalog:q:views`.
pub const LOG: &str = "views";

/// How long an applied id is kept past the oldest entry of the log.
const KEEP_APPLIED: Duration = Duration::from_secs(3_600);

/// How often the table of applied ids is pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// The seed node URLs of `REDIS_CLUSTER_URLS` (comma-separated, blanks
/// ignored), when it names any.
pub fn cluster_seeds() -> Option<Vec<String>> {
    let raw = std::env::var("REDIS_CLUSTER_URLS").ok()?;
    let seeds: Vec<String> = raw
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    (!seeds.is_empty()).then_some(seeds)
}

/// `VIEWS_DURABLE`: `1` for the durable log, `0` or unset for none. Durable
/// mode needs `REDIS_URL` or `REDIS_CLUSTER_URLS`, where the log lives.
pub fn durable_from_env() -> Result<bool, String> {
    let durable = match std::env::var("VIEWS_DURABLE").as_deref() {
        Ok("1") => true,
        Ok("0" | "") | Err(_) => false,
        Ok(other) => return Err(format!("VIEWS_DURABLE={other:?}: use 1 (durable) or 0")),
    };
    if durable
        && std::env::var("REDIS_URL").map_or(true, |url| url.is_empty())
        && cluster_seeds().is_none()
    {
        return Err(
            "VIEWS_DURABLE=1 needs REDIS_URL or REDIS_CLUSTER_URLS: the view counter's \
             durable log is a Redis Stream"
                .to_owned(),
        );
    }
    Ok(durable)
}

/// The durable log of the view counter on `l2`'s Redis, read as the
/// consumer `VIEWS_CONSUMER` (default: a name unique to this process; give
/// one that survives restarts, such as the host's, and that no two running
/// instances share: a restart then delivers what it left at once, not 30 s
/// later).
pub fn log(l2: &RedisStore) -> RedisQueue {
    let queue = RedisQueue::new(l2, LOG);
    match std::env::var("VIEWS_CONSUMER") {
        Ok(name) if !name.is_empty() => queue.consumer(name),
        _ => queue,
    }
}

/// The write-behind view counter over `db`: batches gather for `flush`;
/// durable through `log` when given.
pub fn counter(
    cache: Cache,
    db: Db,
    flush: Duration,
    log: Option<RedisQueue>,
) -> WriteBehind<u64, i64> {
    let layer = WriteBehindLayer::<u64, i64, _>::new(cache, ROUTE, Policy::default())
        .namespace("views:")
        .merge(|a, b| a + b)
        .max_batch(500)
        .max_delay(flush);
    let layer = match &log {
        Some(log) => {
            tracing::info!(
                stream = log.key(),
                consumer = log.consumer_name(),
                "views: durable write-behind"
            );
            layer.durable(log.clone())
        }
        None => layer,
    };
    let pruned = Arc::new(Mutex::new(None::<Instant>));
    layer.layer(tower::service_fn(move |batch: Vec<Write<u64, i64>>| {
        let (db, log, pruned) = (db.clone(), log.clone(), pruned.clone());
        async move {
            let prune = match &log {
                Some(log) => prune_point(log, &pruned).await,
                None => None,
            };
            db.run(ROUTE, move |c| {
                apply(
                    c,
                    batch.iter().map(|w| (w.key, w.value, w.log_ids())),
                    prune,
                )
            })
            .await?;
            metrics::counter!("write_behind_flushes_total").increment(1);
            Ok::<_, DbError>(())
        }
    }))
}

/// Adds `views` (per product, the increment and the log ids it stands for)
/// to the counts in one transaction. In durable mode every write carries
/// the log ids of the views it stands for: they are recorded beside the
/// counts, and a write whose ids were recorded before (a batch delivered
/// again after a crash) is skipped. With `prune`, forgets old applied ids.
fn apply<'a>(
    c: &Connection,
    views: impl IntoIterator<Item = (u64, i64, &'a [EntryId])>,
    prune: Option<i64>,
) -> rusqlite::Result<()> {
    let tx = c.unchecked_transaction()?;
    {
        let mut add = tx.prepare_cached("UPDATE products SET views = views + ?2 WHERE id = ?1")?;
        let mut record = tx.prepare_cached(
            "INSERT INTO view_log_applied (ms, seq) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
        )?;
        for (product, increment, ids) in views {
            let mut recorded = 0;
            for id in ids {
                let (ms, seq) = stream_id(id)?;
                recorded += record.execute(params![ms, seq])?;
            }
            // All new: not applied before.
            if recorded == ids.len() {
                add.execute(params![product as i64, increment])?;
            }
        }
    }
    // Why the table stays small: an id is needed only while its write can
    // be delivered again, that is while its entry is in the stream (entries
    // leave it once acknowledged, and ids grow with time), or for a while
    // after: an entry that replaced coalesced ones carries their older
    // ids, and a process cut off from Redis may still hold a write another
    // has delivered. So every minute the ids more than an hour older than
    // the oldest entry of the stream, and than the newest id applied, go.
    if let Some(oldest) = prune {
        tx.execute(
            "DELETE FROM view_log_applied
             WHERE ms < MIN(?1, (SELECT MAX(ms) FROM view_log_applied)) - ?2",
            params![oldest, KEEP_APPLIED.as_millis() as i64],
        )?;
    }
    tx.commit()
}

/// When the applied ids are due for pruning: the millisecond part of the
/// log's oldest entry (`i64::MAX` when the log is empty). `None` when not
/// due, or when Redis does not answer (tried again with the next batch).
async fn prune_point(log: &RedisQueue, pruned: &Mutex<Option<Instant>>) -> Option<i64> {
    let due = |last: &Option<Instant>| last.is_none_or(|at| at.elapsed() >= PRUNE_EVERY);
    if !due(&pruned.lock().unwrap_or_else(PoisonError::into_inner)) {
        return None;
    }
    let oldest = match log.oldest().await {
        Ok(Some(id)) => stream_id(&id).ok()?.0,
        Ok(None) => i64::MAX,
        Err(error) => {
            tracing::debug!(%error, "cannot read the durable log's oldest entry; applied ids are pruned later");
            return None;
        }
    };
    *pruned.lock().unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
    Some(oldest)
}

/// A Redis Stream id, `<ms>-<seq>`, as its two numbers.
fn stream_id(id: &EntryId) -> rusqlite::Result<(i64, i64)> {
    id.as_str()
        .split_once('-')
        .and_then(|(ms, seq)| Some((ms.parse().ok()?, seq.parse().ok()?)))
        .ok_or_else(|| {
            rusqlite::Error::ToSqlConversionFailure(
                format!("log id {id:?} is not a Redis Stream id").into(),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> Connection {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch(
            "CREATE TABLE products (id INTEGER PRIMARY KEY, views INTEGER NOT NULL DEFAULT 0);
             INSERT INTO products (id) VALUES (1), (2);",
        )
        .unwrap();
        c.execute_batch(crate::db::VIEW_LOG_APPLIED).unwrap();
        c
    }

    fn ids(ids: &[&str]) -> Vec<EntryId> {
        ids.iter().map(|id| EntryId::new(*id)).collect()
    }

    fn views(c: &Connection) -> (i64, i64) {
        let of = |id: i64| -> i64 {
            c.query_row("SELECT views FROM products WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .unwrap()
        };
        (of(1), of(2))
    }

    fn applied(c: &Connection) -> Vec<(i64, i64)> {
        let mut q = c
            .prepare("SELECT ms, seq FROM view_log_applied ORDER BY ms, seq")
            .unwrap();
        q.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    #[test]
    fn a_batch_delivered_again_is_applied_once() {
        let c = db();
        let (three, one) = (ids(&["1000-0", "1000-1", "1001-0"]), ids(&["1002-0"]));
        let batch = || [(1, 3, three.as_slice()), (2, 1, one.as_slice())];
        apply(&c, batch(), None).unwrap();
        apply(&c, batch(), None).unwrap();
        assert_eq!(views(&c), (3, 1));
        assert_eq!(applied(&c).len(), 4);
        // The same views delivered one by one after a crash: skipped too.
        let alone = ids(&["1000-1"]);
        apply(&c, [(1, 1, alone.as_slice())], None).unwrap();
        assert_eq!(views(&c), (3, 1));
    }

    #[test]
    fn without_log_ids_every_write_counts() {
        let c = db();
        apply(&c, [(1, 2, &[][..]), (1, 2, &[][..])], None).unwrap();
        assert_eq!(views(&c), (4, 0));
    }

    #[test]
    fn pruning_keeps_an_hour_before_the_oldest_entry_of_the_log() {
        let c = db();
        let hour = KEEP_APPLIED.as_millis() as i64;
        let old = ids(&["1-0", &format!("{}-3", 10 * hour)]);
        let recent = ids(&[&format!("{}-0", 11 * hour), &format!("{}-0", 12 * hour)]);
        apply(
            &c,
            [(1, 1, old.as_slice()), (2, 1, recent.as_slice())],
            None,
        )
        .unwrap();
        // The oldest entry still in the log was appended at 12 h.
        apply(&c, [], Some(12 * hour)).unwrap();
        assert_eq!(applied(&c), vec![(11 * hour, 0), (12 * hour, 0)]);
        // An empty log: an hour before the newest applied id.
        apply(&c, [], Some(i64::MAX)).unwrap();
        assert_eq!(applied(&c), vec![(11 * hour, 0), (12 * hour, 0)]);
        let later = ids(&[&format!("{}-0", 13 * hour)]);
        apply(&c, [(1, 1, later.as_slice())], Some(i64::MAX)).unwrap();
        assert_eq!(applied(&c), vec![(12 * hour, 0), (13 * hour, 0)]);
    }

    #[test]
    fn an_id_that_is_not_a_stream_id_fails_the_batch() {
        let c = db();
        let bad = ids(&["not-an-id"]);
        let err = apply(&c, [(1, 1, bad.as_slice())], None).unwrap_err();
        assert!(err.to_string().contains("not a Redis Stream id"), "{err}");
        assert_eq!(views(&c), (0, 0));
    }
}
