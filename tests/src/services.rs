//! Finding RabbitMQ and Redis for a test.

use std::any::Any;

use testcontainers_modules::rabbitmq::RabbitMq;
use testcontainers_modules::redis::{REDIS_PORT, Redis};
use testcontainers_modules::testcontainers::ImageExt;
use testcontainers_modules::testcontainers::runners::AsyncRunner;

/// URLs of the brokers a test uses; holds the containers (if any) alive.
pub struct Services {
    /// AMQP URL.
    pub amqp_url: String,
    /// Redis URL.
    pub redis_url: String,
    _containers: Vec<Box<dyn Any + Send>>,
}

impl std::fmt::Debug for Services {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Services")
            .field("amqp_url", &self.amqp_url)
            .field("redis_url", &self.redis_url)
            .finish()
    }
}

impl Services {
    /// `TEST_AMQP_URL` and `TEST_REDIS_URL`, or containers when Docker is available.
    ///
    /// # Panics
    /// When neither is available: a test must never pass by skipping.
    pub async fn get() -> Self {
        let mut containers: Vec<Box<dyn Any + Send>> = Vec::new();
        let amqp_url = match std::env::var("TEST_AMQP_URL") {
            Ok(url) => url,
            Err(_) => {
                let c = RabbitMq::default().start().await.unwrap_or_else(|e| {
                    panic!("set TEST_AMQP_URL (e.g. amqp://guest:guest@127.0.0.1:5672/%2f) or start Docker: {e}")
                });
                let host = c.get_host().await.expect("container host");
                let port = c.get_host_port_ipv4(5672).await.expect("container port");
                containers.push(Box::new(c));
                format!("amqp://guest:guest@{host}:{port}/%2f")
            }
        };
        let redis_url =
            match std::env::var("TEST_REDIS_URL") {
                Ok(url) => url,
                Err(_) => {
                    let c = Redis::default().with_tag("7.4").start().await.unwrap_or_else(|e| {
                    panic!("set TEST_REDIS_URL (e.g. redis://127.0.0.1:6379) or start Docker: {e}")
                });
                    let host = c.get_host().await.expect("container host");
                    let port = c
                        .get_host_port_ipv4(REDIS_PORT)
                        .await
                        .expect("container port");
                    containers.push(Box::new(c));
                    format!("redis://{host}:{port}")
                }
            };
        Services {
            amqp_url,
            redis_url,
            _containers: containers,
        }
    }
}
