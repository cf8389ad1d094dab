//! The test Redis Cluster that `scripts/redis-cluster.sh start` runs (3 primaries, 3
//! replicas on loopback). `scripts/test.sh` starts it and exports its node URLs as
//! `TEST_REDIS_CLUSTER_URLS`; a test that finds neither fails with how to get one.

use std::path::PathBuf;
use std::time::Duration;

use crate::eventually;

/// The cluster's node URLs, comma-separated (what `SHARDLINE_REDIS_URL` takes).
pub fn urls() -> String {
    std::env::var("TEST_REDIS_CLUSTER_URLS").unwrap_or_else(|_| {
        panic!(
            "this test needs a Redis Cluster: run `scripts/test.sh`, or \
             `export TEST_REDIS_CLUSTER_URLS=$(scripts/redis-cluster.sh start)`"
        )
    })
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/redis-cluster.sh")
}

async fn node(port: u16) -> redis::aio::MultiplexedConnection {
    redis::Client::open(format!("redis://127.0.0.1:{port}"))
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("Redis Cluster node {port}: {e}"))
}

/// `CLUSTER NODES` as the node behind `c` sees the cluster.
async fn cluster_nodes(c: &mut redis::aio::MultiplexedConnection) -> String {
    redis::cmd("CLUSTER")
        .arg("NODES")
        .query_async(c)
        .await
        .expect("CLUSTER NODES")
}

/// The ports of the nodes in `TEST_REDIS_CLUSTER_URLS`.
fn ports() -> Vec<u16> {
    urls()
        .split(',')
        .map(|u| {
            let port = u.trim().rsplit(':').next().expect("a port");
            port.trim_end_matches('/').parse().expect("a port number")
        })
        .collect()
}

/// The port of the primary that serves `key`, asked of a node that answers; `None` while no
/// primary serves it (during a failover).
pub async fn primary_of(key: &str) -> Option<u16> {
    for port in ports() {
        let Ok(client) = redis::Client::open(format!("redis://127.0.0.1:{port}")) else {
            continue;
        };
        let Ok(mut c) = client.get_multiplexed_async_connection().await else {
            continue;
        };
        let slot: u16 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query_async(&mut c)
            .await
            .expect("CLUSTER KEYSLOT");
        return serving(&cluster_nodes(&mut c).await, slot);
    }
    panic!("no node of the Redis Cluster answers");
}

/// A primary as `CLUSTER NODES` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Primary {
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Its node id.
    pub id: String,
    /// The slot ranges it serves, inclusive.
    pub slots: Vec<(u16, u16)>,
}

impl Primary {
    /// How many slots it serves.
    pub fn slot_count(&self) -> u32 {
        self.slots
            .iter()
            .map(|(lo, hi)| u32::from(hi - lo) + 1)
            .sum()
    }
}

/// The primaries of a `CLUSTER NODES` reply that are not marked failed.
fn parse_primaries(nodes: &str) -> Vec<Primary> {
    nodes
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let flags = fields.get(2)?;
            if !flags.contains("master") || flags.contains("fail") {
                return None;
            }
            let port = fields[1]
                .split('@')
                .next()?
                .rsplit(':')
                .next()?
                .parse()
                .ok()?;
            let slots = fields
                .iter()
                .skip(8)
                .filter_map(|range| {
                    let (lo, hi) = range.split_once('-').unwrap_or((range, range));
                    Some((lo.parse().ok()?, hi.parse().ok()?))
                })
                .collect();
            Some(Primary {
                port,
                id: fields[0].to_owned(),
                slots,
            })
        })
        .collect()
}

/// The port of the primary that `CLUSTER NODES` says serves `slot`.
fn serving(nodes: &str, slot: u16) -> Option<u16> {
    parse_primaries(nodes)
        .into_iter()
        .find(|p| p.slots.iter().any(|(lo, hi)| (*lo..=*hi).contains(&slot)))
        .map(|p| p.port)
}

/// The primaries that serve slots.
pub async fn primaries() -> Vec<Primary> {
    parse_primaries(&cluster_nodes(&mut node(ports()[0]).await).await)
        .into_iter()
        .filter(|p| p.slot_count() > 0)
        .collect()
}

/// Move `slots` slots from one primary to another with `redis-cli --cluster reshard`, keys
/// and all, while clients keep running (they are answered `ASK` and `MOVED` meanwhile).
pub async fn reshard(from: &str, to: &str, slots: u32) {
    let seed = format!("127.0.0.1:{}", ports()[0]);
    agreed(&seed).await;
    let out = tokio::process::Command::new("redis-cli")
        .args(["--cluster", "reshard", &seed])
        .args(["--cluster-from", from, "--cluster-to", to])
        .args(["--cluster-slots", &slots.to_string(), "--cluster-yes"])
        .output()
        .await
        .expect("run redis-cli --cluster reshard");
    assert!(
        out.status.success(),
        "resharding failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    agreed(&seed).await;
}

/// Wait until every node agrees on who serves which slot (`redis-cli --cluster check`), as
/// a reshard needs; gossip takes a moment after the last change.
async fn agreed(seed: &str) {
    eventually(
        "the cluster's nodes agree on the slots",
        Duration::from_secs(30),
        || async move {
            let out = tokio::process::Command::new("redis-cli")
                .args(["--cluster", "check", seed])
                .output()
                .await
                .ok()?;
            out.status.success().then_some(())
        },
    )
    .await;
}

/// The pid of the node on `port` (from `INFO server`).
async fn pid(port: u16) -> String {
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut node(port).await)
        .await
        .expect("INFO");
    info.lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .expect("process_id in INFO")
        .trim()
        .to_owned()
}

/// A node's process, to signal (a stopped node cannot be asked for its pid).
pub struct NodeProcess(String);

impl NodeProcess {
    /// The process of the node on `port`.
    pub async fn of(port: u16) -> Self {
        NodeProcess(pid(port).await)
    }

    /// Send `sig` (KILL, STOP, CONT).
    pub fn signal(&self, sig: &str) {
        let status = std::process::Command::new("kill")
            .args([format!("-{sig}"), self.0.clone()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{sig} {}", self.0);
    }
}

/// SIGKILL the node on `port`.
pub async fn kill(port: u16) {
    NodeProcess::of(port).await.signal("KILL");
}

/// The port of a replica of the primary on `port`.
pub async fn replica_of(port: u16) -> u16 {
    let mut c = node(port).await;
    let id: String = redis::cmd("CLUSTER")
        .arg("MYID")
        .query_async(&mut c)
        .await
        .expect("CLUSTER MYID");
    cluster_nodes(&mut c)
        .await
        .lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields.get(2)?.contains("slave") && fields.get(3)? == &id.as_str()).then(|| {
                fields[1]
                    .split('@')
                    .next()?
                    .rsplit(':')
                    .next()?
                    .parse()
                    .ok()
            })?
        })
        .unwrap_or_else(|| panic!("primary {port} has a replica"))
}

/// Wait until another node serves the slots `port` served (its replica was promoted).
pub async fn wait_failover(key: &str, from: u16) {
    eventually(
        "a replica promoted in place of the killed primary",
        Duration::from_secs(30),
        || async move {
            let now = primary_of(key).await?;
            (now != from).then_some(())
        },
    )
    .await;
}

/// Start what is down again and wait until every slot is served with 3 replicas in sync
/// (`scripts/redis-cluster.sh start`), so the next test finds the cluster whole.
pub fn heal() {
    let out = std::process::Command::new("bash")
        .arg(script())
        .arg("start")
        .output()
        .expect("run scripts/redis-cluster.sh");
    assert!(
        out.status.success(),
        "scripts/redis-cluster.sh start failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[cfg(test)]
mod tests {
    /// The primary serving a slot is read off `CLUSTER NODES`, never a replica or a failed one.
    #[test]
    fn finds_the_primary_of_a_slot() {
        let nodes = "\
a 127.0.0.1:7100@17100 myself,master - 0 0 1 connected 0-5460
b 127.0.0.1:7103@17103 slave a 0 1 4 connected
c 127.0.0.1:7101@17101 master,fail - 0 1 2 disconnected 5461-10922
d 127.0.0.1:7104@17104 master - 0 1 7 connected 5461-10922 16000
";
        assert_eq!(super::serving(nodes, 0), Some(7100));
        assert_eq!(super::serving(nodes, 6000), Some(7104));
        assert_eq!(super::serving(nodes, 16000), Some(7104));
        assert_eq!(super::serving(nodes, 12000), None);
        let counts: Vec<(u16, u32)> = super::parse_primaries(nodes)
            .iter()
            .map(|p| (p.port, p.slot_count()))
            .collect();
        assert_eq!(counts, vec![(7100, 5461), (7104, 5463)]);
    }
}
