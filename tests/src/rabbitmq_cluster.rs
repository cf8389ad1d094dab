//! The test RabbitMQ cluster that `scripts/rabbitmq-cluster.sh start` runs (3 nodes on
//! loopback, AMQP on 5700-5702). `scripts/test.sh` starts it and exports its URLs as
//! `TEST_RABBITMQ_CLUSTER_URLS`; a test that finds neither fails with how to get one.

use std::path::PathBuf;
use std::time::Duration;

use crate::eventually;

/// The cluster's AMQP URLs, comma-separated (what `SHARDLINE_AMQP_URL` takes).
pub fn urls() -> String {
    std::env::var("TEST_RABBITMQ_CLUSTER_URLS").unwrap_or_else(|_| {
        panic!(
            "this test needs a RabbitMQ cluster: run `scripts/test.sh`, or \
             `export TEST_RABBITMQ_CLUSTER_URLS=$(scripts/rabbitmq-cluster.sh start)`"
        )
    })
}

/// The AMQP port of each node, in the order of [`urls`].
pub fn ports() -> Vec<u16> {
    ports_of(&urls())
}

fn ports_of(urls: &str) -> Vec<u16> {
    urls.split(',')
        .map(|u| {
            let uri: lapin::uri::AMQPUri = u.parse().unwrap_or_else(|e| panic!("{u}: {e}"));
            uri.authority.port
        })
        .collect()
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/rabbitmq-cluster.sh")
}

/// The script's `ctl N ARGS…` (rabbitmqctl on node N, as the user that shares the nodes'
/// Erlang cookie) for the node behind `port`.
fn ctl(port: u16) -> tokio::process::Command {
    let n = ports()
        .iter()
        .position(|p| *p == port)
        .unwrap_or_else(|| panic!("{port} is not a cluster node"))
        + 1;
    let mut cmd = tokio::process::Command::new("bash");
    cmd.arg(script()).args(["ctl", &n.to_string()]);
    cmd
}

/// `rabbitmqctl <args> --formatter json` on the first node that answers.
async fn ctl_json(args: &[&str]) -> serde_json::Value {
    let mut errors = Vec::new();
    for port in ports() {
        let out = ctl(port)
            .args(args)
            .args(["--formatter", "json"])
            .output()
            .await
            .expect("run scripts/rabbitmq-cluster.sh ctl");
        if out.status.success()
            && let Ok(v) = serde_json::from_slice(&out.stdout)
        {
            return v;
        }
        errors.push(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    panic!("rabbitmqctl {args:?} failed on every node: {errors:?}")
}

/// The AMQP port of the node each connection whose client-given name starts with `prefix`
/// is on.
pub async fn nodes_of(prefix: &str) -> Vec<u16> {
    let list = ctl_json(&["list_connections", "port", "client_properties"]).await;
    let mut ports = Vec::new();
    for conn in list.as_array().into_iter().flatten() {
        let named = conn["client_properties"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|p| {
                p[0] == "connection_name" && p[2].as_str().is_some_and(|n| n.starts_with(prefix))
            });
        if named && let Some(port) = conn["port"].as_u64() {
            ports.push(u16::try_from(port).expect("a port"));
        }
    }
    ports
}

/// The type (`classic`, `quorum`) of each queue whose name starts with `prefix`.
pub async fn queue_types(prefix: &str) -> Vec<(String, String)> {
    let list = ctl_json(&["list_queues", "name", "type"]).await;
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(|q| {
            let name = q["name"].as_str()?;
            let kind = q["type"].as_str()?;
            name.starts_with(prefix)
                .then(|| (name.to_owned(), kind.to_owned()))
        })
        .collect()
}

/// Stop the node behind `port` (the whole Erlang node, as a crash or a shutdown would).
pub async fn stop(port: u16) {
    let out = ctl(port)
        .arg("stop")
        .output()
        .await
        .expect("run rabbitmqctl stop");
    assert!(
        out.status.success(),
        "stopping the node on {port} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    eventually(
        &format!("the node on {port} stops listening"),
        Duration::from_secs(30),
        || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_err()
                .then_some(())
        },
    )
    .await;
}

/// Start every stopped node again and wait until all three are running cluster members.
pub async fn heal() {
    let out = tokio::process::Command::new("bash")
        .arg(script())
        .arg("start")
        .output()
        .await
        .expect("run scripts/rabbitmq-cluster.sh");
    assert!(
        out.status.success(),
        "scripts/rabbitmq-cluster.sh start failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[cfg(test)]
mod tests {
    /// The ports come out of the URL list in order, passwords and vhosts notwithstanding.
    #[test]
    fn reads_ports_off_the_urls() {
        let urls = "amqp://guest:guest@127.0.0.1:5700/%2f,amqp://127.0.0.1:5701,amqp://h";
        assert_eq!(super::ports_of(urls), [5700, 5701, 5672]);
    }
}
