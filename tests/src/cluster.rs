//! A real Redis Cluster for a test: `redis-server --cluster-enabled yes` on free ports, joined by `redis-cli --cluster create`.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{PATIENCE, RedisServer, blocking, free_port};

/// A Redis Cluster owned by a test: `masters` masters with `replicas`
/// replicas each, every node a [`RedisServer`] of its own on free ports
/// (client and cluster bus), killed when dropped.
///
/// Nodes time out after 1 s (`cluster-node-timeout`), so a dead master is
/// noticed and its replica promoted quickly, and a cluster with a dead
/// master keeps serving the slots of the others
/// (`cluster-require-full-coverage no`).
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

/// One line of `CLUSTER NODES`.
#[derive(Debug, Clone)]
struct NodeLine {
    id: String,
    port: u16,
    master: bool,
    failed: bool,
    master_id: String,
    has_slots: bool,
}

fn parse_nodes(raw: &str) -> Vec<NodeLine> {
    raw.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 8 {
                return None;
            }
            let addr = fields[1].split('@').next()?;
            let port = addr.rsplit(':').next()?.parse().ok()?;
            let flags = fields[2];
            Some(NodeLine {
                id: fields[0].to_owned(),
                port,
                master: flags.contains("master"),
                failed: flags.contains("fail") && !flags.contains("fail?"),
                master_id: fields[3].to_owned(),
                has_slots: fields.len() > 8,
            })
        })
        .collect()
}

impl RedisCluster {
    /// Starts `masters * (1 + replicas)` nodes, creates the cluster with
    /// `redis-cli --cluster create … --cluster-yes` (and
    /// `--cluster-replicas` when `replicas > 0`), and waits until every
    /// node reports `cluster_state:ok` and knows every other.
    ///
    /// # Panics
    /// When `redis-server` or `redis-cli` is missing, or the cluster does
    /// not form within [`PATIENCE`] (with the nodes' logs).
    pub fn start(masters: usize, replicas: usize) -> RedisCluster {
        assert!(masters >= 3, "a Redis Cluster needs at least 3 masters");
        let nodes: Vec<RedisServer> = (0..masters * (1 + replicas))
            .map(|_| {
                RedisServer::start_with(|port| {
                    [
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        &format!("nodes-{port}.conf"),
                        "--cluster-port",
                        &free_port().to_string(),
                        "--cluster-node-timeout",
                        "1000",
                        "--cluster-require-full-coverage",
                        "no",
                    ]
                    .map(str::to_owned)
                    .to_vec()
                })
            })
            .collect();
        let cluster = RedisCluster { nodes };
        blocking(|| {
            let mut create = Command::new("redis-cli");
            create.arg("--cluster").arg("create");
            for node in &cluster.nodes {
                create.arg(format!("127.0.0.1:{}", node.port()));
            }
            if replicas > 0 {
                create.arg("--cluster-replicas").arg(replicas.to_string());
            }
            let out = create
                .arg("--cluster-yes")
                .stdin(Stdio::null())
                .output()
                .expect("`redis-cli` on PATH (it comes with redis-server)");
            assert!(
                out.status.success(),
                "redis-cli --cluster create failed:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            cluster.wait_until_ok();
            cluster.wait_for(
                || cluster.masters().len() == masters,
                "every master to have slots",
            );
        });
        cluster
    }

    /// The URLs of every node started (masters and replicas alike), as seed
    /// nodes.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// The node on `port`.
    pub fn node(&self, port: u16) -> &RedisServer {
        self.nodes
            .iter()
            .find(|n| n.port() == port)
            .expect("a node of this cluster")
    }

    fn node_mut(&mut self, port: u16) -> &mut RedisServer {
        self.nodes
            .iter_mut()
            .find(|n| n.port() == port)
            .expect("a node of this cluster")
    }

    /// `CLUSTER NODES` as a live node sees it.
    fn view(&self) -> Vec<NodeLine> {
        for node in &self.nodes {
            let Ok(client) = redis::Client::open(node.url()) else {
                continue;
            };
            let Ok(mut conn) = client.get_connection_with_timeout(Duration::from_millis(300))
            else {
                continue;
            };
            if let Ok(raw) = redis::cmd("CLUSTER")
                .arg("NODES")
                .query::<String>(&mut conn)
            {
                return parse_nodes(&raw);
            }
        }
        Vec::new()
    }

    /// The ports of the masters that serve slots and are not failed.
    pub fn masters(&self) -> Vec<u16> {
        self.view()
            .into_iter()
            .filter(|n| n.master && n.has_slots && !n.failed)
            .map(|n| n.port)
            .collect()
    }

    /// The port of a replica of the master on `master`.
    pub fn replica_of(&self, master: u16) -> Option<u16> {
        let view = self.view();
        let id = view.iter().find(|n| n.port == master)?.id.clone();
        view.iter()
            .find(|n| !n.master && n.master_id == id)
            .map(|n| n.port)
    }

    /// The port of the master that serves `key`'s slot.
    pub fn master_of(&self, key: &str) -> u16 {
        use redis::Value;
        let int = |v: &Value| match v {
            Value::Int(n) => Some(*n),
            _ => None,
        };
        for port in self.masters() {
            let mut conn = self.node(port).connection();
            let Ok(slot) = redis::cmd("CLUSTER")
                .arg("KEYSLOT")
                .arg(key)
                .query::<i64>(&mut conn)
            else {
                continue;
            };
            let Ok(slots) = redis::cmd("CLUSTER")
                .arg("SLOTS")
                .query::<Vec<Value>>(&mut conn)
            else {
                continue;
            };
            // [[start, end, [ip, port, id], replicas...], ...]
            for range in slots {
                let Value::Array(range) = range else { continue };
                let (Some(start), Some(end)) =
                    (range.first().and_then(int), range.get(1).and_then(int))
                else {
                    continue;
                };
                if (start..=end).contains(&slot)
                    && let Some(Value::Array(owner)) = range.get(2)
                    && let Some(p) = owner.get(1).and_then(int)
                {
                    return u16::try_from(p).expect("a port");
                }
            }
        }
        panic!("no master serves the slot of {key:?}");
    }

    /// How many keys each live master holds, by port.
    pub fn keys_per_master(&self) -> Vec<(u16, u64)> {
        self.masters()
            .into_iter()
            .map(|port| {
                let n: u64 = redis::cmd("DBSIZE")
                    .query(&mut self.node(port).connection())
                    .expect("DBSIZE");
                (port, n)
            })
            .collect()
    }

    /// Kills the node on `port`, as a crash would.
    pub fn kill(&mut self, port: u16) {
        self.node_mut(port).stop();
    }

    /// Kills the master on `master` and waits until a replica of it has
    /// taken its slots and every live node reports `cluster_state:ok`;
    /// returns the promoted replica's port.
    pub fn kill_and_promote(&mut self, master: u16) -> u16 {
        let replica = self.replica_of(master).expect("a replica of that master");
        self.kill(master);
        blocking(|| {
            self.wait_for(
                || self.masters().contains(&replica),
                "the replica to be promoted",
            );
            self.wait_until_ok();
        });
        replica
    }

    /// Runs `CLUSTER FAILOVER` on `replica` and waits until it is a master
    /// and every node reports `cluster_state:ok`.
    pub fn failover(&self, replica: u16) {
        blocking(|| {
            let _: () = redis::cmd("CLUSTER")
                .arg("FAILOVER")
                .query(&mut self.node(replica).connection())
                .expect("CLUSTER FAILOVER");
            self.wait_for(|| self.masters().contains(&replica), "the failover");
            self.wait_until_ok();
        });
    }

    /// A blocking cluster connection, for inspecting or corrupting state.
    pub fn connection(&self) -> redis::cluster::ClusterConnection {
        redis::cluster::ClusterClient::new(self.urls())
            .expect("valid URLs")
            .get_connection()
            .expect("connect to the test cluster")
    }

    /// Waits until every live node reports `cluster_state:ok` and knows
    /// every node.
    fn wait_until_ok(&self) {
        let total = self.nodes.len();
        self.wait_for(
            || {
                self.nodes.iter().all(|node| {
                    let Ok(client) = redis::Client::open(node.url()) else {
                        return false;
                    };
                    let Ok(mut conn) =
                        client.get_connection_with_timeout(Duration::from_millis(300))
                    else {
                        // A node that was killed takes no part.
                        return true;
                    };
                    let info: String = redis::cmd("CLUSTER")
                        .arg("INFO")
                        .query(&mut conn)
                        .unwrap_or_default();
                    info.contains("cluster_state:ok")
                        && info.contains(&format!("cluster_known_nodes:{total}"))
                })
            },
            "cluster_state:ok on every node",
        );
    }

    fn wait_for(&self, mut done: impl FnMut() -> bool, what: &str) {
        let deadline = Instant::now() + PATIENCE;
        while Instant::now() < deadline {
            if done() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let logs: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("--- {}:\n{}", n.port(), n.log()))
            .collect();
        panic!(
            "waited {} s for {what}; node logs:\n{}",
            PATIENCE.as_secs(),
            logs.join("\n")
        );
    }
}
