//! Acknowledges writes through a durable write-behind queue and then waits
//! to be killed before anything is delivered: the crash half of the
//! durable-mode test.
//!
//! `REDIS_URL`, `QUEUE` (the durable log's name), `WRITES` (how many).
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
    let writes: u64 = std::env::var("WRITES")?.parse()?;
    let l2 = RedisStore::new(url)?;
    let mut svc = WriteBehindLayer::<u64, i64, _>::new(
        Cache::new(MemoryStore::default()),
        "crash",
        Policy::default(),
    )
    .max_delay(Duration::from_secs(3_600))
    .max_batch(1_000_000)
    .durable(RedisQueue::new(&l2, &queue))
    .layer(service_fn(|_: Vec<Write<u64, i64>>| async {
        // Never reached: the process is killed first.
        Err::<(), _>(std::io::Error::other("this writer must not run"))
    }));
    for key in 0..writes {
        svc.ready()
            .await?
            .call(Write::new(key, key as i64 * 10))
            .await?;
    }
    println!("acknowledged {writes}");
    std::future::pending::<()>().await;
    Ok(())
}
