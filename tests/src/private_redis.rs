//! A `redis-server` of a test's own (on a free port, with its own data directory and an
//! append-only file), for tests that kill and restart Redis without disturbing the others.
//! It needs `redis-server` on PATH (override with `TEST_REDIS_SERVER`).

use std::net::TcpListener;
use std::path::Path;
use std::time::Duration;

use tokio::process::{Child, Command};
use uuid::Uuid;

use crate::eventually;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn start_redis(port: u16, dir: &Path) -> Child {
    let bin = std::env::var("TEST_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
    Command::new(&bin)
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .args(["--appendonly", "yes", "--appendfsync", "always"])
        .arg("--dir")
        .arg(dir)
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("this test needs {bin} (set TEST_REDIS_SERVER): {e}"))
}

/// A `redis-server` of this test's own, with an append-only file in a fresh directory.
pub struct PrivateRedis {
    port: u16,
    dir: std::path::PathBuf,
    child: Child,
}

impl PrivateRedis {
    /// Start one on a free port.
    pub async fn start() -> Self {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("shardline-redis-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("data dir");
        let child = start_redis(port, &dir);
        wait_up(port).await;
        PrivateRedis { port, dir, child }
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// SIGKILL the server and wait until it is gone.
    pub async fn kill(&mut self) {
        self.child.start_kill().expect("kill redis");
        let _ = self.child.wait().await;
    }

    /// Start the server again on the same port and data.
    pub async fn restart(&mut self) {
        self.child = start_redis(self.port, &self.dir);
        wait_up(self.port).await;
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn wait_up(port: u16) {
    eventually(
        "the private Redis answering",
        Duration::from_secs(15),
        || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()
                .map(|_| ())
        },
    )
    .await;
}
