//! One Redis for a test to run against, a single node or a cluster: what lets the same test body prove a behaviour on both.

use tower_cache::store::{RedisStore, RedisStoreBuilder};

use crate::{RedisCluster, RedisServer};

/// What a test needs of a Redis it started: a store builder pointed at it
/// and a blocking connection for inspecting or corrupting state.
pub trait TestRedis {
    /// [`RedisStore::builder`] or [`RedisStore::cluster_builder`] for it.
    fn store_builder(&self) -> RedisStoreBuilder;
    /// A blocking connection (to the node, or to the whole cluster).
    fn conn(&self) -> AnyConnection;
}

impl TestRedis for RedisServer {
    fn store_builder(&self) -> RedisStoreBuilder {
        RedisStore::builder(self.url())
    }

    fn conn(&self) -> AnyConnection {
        AnyConnection::Single(self.connection())
    }
}

impl TestRedis for RedisCluster {
    fn store_builder(&self) -> RedisStoreBuilder {
        RedisStore::cluster_builder(self.urls())
    }

    fn conn(&self) -> AnyConnection {
        AnyConnection::Cluster(Box::new(self.connection()))
    }
}

/// A single node or a three-master cluster, as a test asked.
#[derive(Debug)]
pub enum Redis {
    /// A [`RedisServer`].
    Single(RedisServer),
    /// A [`RedisCluster`] of three masters.
    Cluster(RedisCluster),
}

impl Redis {
    /// A single node.
    pub fn single() -> Redis {
        Redis::Single(RedisServer::start())
    }

    /// A cluster of three masters, no replicas.
    pub fn cluster() -> Redis {
        Redis::Cluster(RedisCluster::start(3, 0))
    }

    /// A blocking connection, as [`TestRedis::conn`].
    pub fn connection(&self) -> AnyConnection {
        self.conn()
    }
}

impl TestRedis for Redis {
    fn store_builder(&self) -> RedisStoreBuilder {
        match self {
            Redis::Single(s) => s.store_builder(),
            Redis::Cluster(c) => c.store_builder(),
        }
    }

    fn conn(&self) -> AnyConnection {
        match self {
            Redis::Single(s) => s.conn(),
            Redis::Cluster(c) => c.conn(),
        }
    }
}

/// A blocking connection to a single node or a cluster; redis-rs's
/// `Commands` work on it.
pub enum AnyConnection {
    /// To one node.
    Single(redis::Connection),
    /// To a cluster, routed by key.
    Cluster(Box<redis::cluster::ClusterConnection>),
}

impl redis::ConnectionLike for AnyConnection {
    fn req_packed_command(&mut self, cmd: &[u8]) -> redis::RedisResult<redis::Value> {
        match self {
            AnyConnection::Single(c) => c.req_packed_command(cmd),
            AnyConnection::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands(
        &mut self,
        cmd: &[u8],
        offset: usize,
        count: usize,
    ) -> redis::RedisResult<Vec<redis::Value>> {
        match self {
            AnyConnection::Single(c) => c.req_packed_commands(cmd, offset, count),
            AnyConnection::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn req_command(&mut self, cmd: &redis::Cmd) -> redis::RedisResult<redis::Value> {
        match self {
            AnyConnection::Single(c) => c.req_command(cmd),
            AnyConnection::Cluster(c) => c.req_command(cmd),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            AnyConnection::Single(c) => c.get_db(),
            AnyConnection::Cluster(c) => c.get_db(),
        }
    }

    fn check_connection(&mut self) -> bool {
        match self {
            AnyConnection::Single(c) => c.check_connection(),
            AnyConnection::Cluster(c) => c.check_connection(),
        }
    }

    fn is_open(&self) -> bool {
        match self {
            AnyConnection::Single(c) => c.is_open(),
            AnyConnection::Cluster(c) => c.is_open(),
        }
    }
}

/// Defines a test that runs its body twice, against a single node
/// (`NAME::single`) and against a three-master cluster
/// (`NAME::cluster`), with `$redis` bound to a [`Redis`].
#[macro_export]
macro_rules! on_single_and_cluster {
    ($(#[$meta:meta])* async fn $name:ident($redis:ident) $body:block) => {
        $(#[$meta])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn single() {
                let $redis = $crate::Redis::single();
                $body
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn cluster() {
                let $redis = $crate::Redis::cluster();
                $body
            }
        }
    };
}
