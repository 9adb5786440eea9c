//! Acknowledges writes through a durable write-behind queue and then waits
//! to be killed before anything is delivered: the crash half of the
//! durable-mode tests.
//!
//! `REDIS_URL`, `QUEUE` (the durable log's name), `CONSUMER` (this
//! process's consumer name in the log's group), `WRITES` (how many), and
//! optionally `MERGE=1`: then every write is an increment of 1 to key 7 of
//! a counter (merged by sum), otherwise write `n` sets key `n` to `10 n`.
//! Prints `acknowledged N` once every write is acknowledged.

use std::time::Duration;

use tower::{Service, ServiceExt, service_fn};
use tower_cache::store::{MemoryStore, RedisQueue, RedisStore};
use tower_cache::{Cache, Policy, Write, WriteBehindLayer};
use tower_layer::Layer;

#[tokio::main]
async fn main() -> Result<(), tower::BoxError> {
    let url = std::env::var("REDIS_URL")?;
    let queue = std::env::var("QUEUE")?;
    let consumer = std::env::var("CONSUMER")?;
    let writes: u64 = std::env::var("WRITES")?.parse()?;
    let merge = std::env::var("MERGE").is_ok_and(|m| m == "1");
    // A generous timeout: a slow machine must not make Redis look away.
    let l2 = RedisStore::builder(url)
        .op_timeout(Duration::from_secs(5))
        .build()?;
    let mut layer = WriteBehindLayer::<u64, i64, _>::new(
        Cache::new(MemoryStore::default()),
        "crash",
        Policy::default(),
    )
    .max_delay(Duration::from_secs(3_600))
    .max_batch(1_000_000)
    .durable(RedisQueue::new(&l2, &queue).consumer(consumer));
    if merge {
        layer = layer.merge(|a, b| a + b);
    }
    let mut svc = layer.layer(service_fn(|_: Vec<Write<u64, i64>>| async {
        // Never reached: the process is killed first.
        Err::<(), _>(std::io::Error::other("this writer must not run"))
    }));
    for n in 0..writes {
        let write = if merge {
            Write::new(7, 1)
        } else {
            Write::new(n, n as i64 * 10)
        };
        svc.ready().await?.call(write).await?;
    }
    println!("acknowledged {writes}");
    std::future::pending::<()>().await;
    Ok(())
}
