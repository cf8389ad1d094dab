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
        let nodes: String = redis::cmd("CLUSTER")
            .arg("NODES")
            .query_async(&mut c)
            .await
            .expect("CLUSTER NODES");
        return serving(&nodes, slot);
    }
    panic!("no node of the Redis Cluster answers");
}

/// The port of the primary that `CLUSTER NODES` says serves `slot`.
fn serving(nodes: &str, slot: u16) -> Option<u16> {
    nodes.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if !fields.get(2)?.contains("master") || fields.get(2)?.contains("fail") {
            return None;
        }
        let port = fields[1]
            .split('@')
            .next()?
            .rsplit(':')
            .next()?
            .parse()
            .ok()?;
        fields.iter().skip(8).find_map(|range| {
            let (lo, hi) = range.split_once('-').unwrap_or((range, range));
            let (lo, hi): (u16, u16) = (lo.parse().ok()?, hi.parse().ok()?);
            (lo..=hi).contains(&slot).then_some(port)
        })
    })
}

/// The primaries serving slots, with how many each serves: (port, node id, slots).
pub async fn primaries() -> Vec<(u16, String, u32)> {
    let nodes: String = redis::cmd("CLUSTER")
        .arg("NODES")
        .query_async(&mut node(ports()[0]).await)
        .await
        .expect("CLUSTER NODES");
    nodes
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if !fields.get(2)?.contains("master") || fields.get(2)?.contains("fail") {
                return None;
            }
            let port = fields[1]
                .split('@')
                .next()?
                .rsplit(':')
                .next()?
                .parse()
                .ok()?;
            let slots: u32 = fields
                .iter()
                .skip(8)
                .filter_map(|range| {
                    let (lo, hi) = range.split_once('-').unwrap_or((range, range));
                    Some(hi.parse::<u32>().ok()? - lo.parse::<u32>().ok()? + 1)
                })
                .sum();
            (slots > 0).then(|| (port, fields[0].to_owned(), slots))
        })
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

/// SIGKILL the node on `port` (its pid from `INFO server`).
pub async fn kill(port: u16) {
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut node(port).await)
        .await
        .expect("INFO");
    let pid = info
        .lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .expect("process_id in INFO")
        .trim()
        .to_owned();
    let status = std::process::Command::new("kill")
        .args(["-KILL", &pid])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -KILL {pid}");
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
    }
}
