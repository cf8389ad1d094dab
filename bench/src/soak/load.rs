//! The load: open-loop Poisson arrivals of the seeded mix, each published (confirmed) to the
//! request exchange with the soak reply queue as `reply_to`, and cancelled afterwards when its
//! class says so.
//!
//! Each request is recorded in the ledger at its scheduled time, *before* it is published; the
//! publish and any cancel run in their own task so a slow confirm never delays later arrivals.

use std::sync::Arc;
use std::time::Duration;

use lapin::{BasicProperties, Channel};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use shardline::amqp;
use shardline::message::{Format, RequestBody};
use shardline_client::Client;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use uuid::Uuid;

use super::ledger::Ledger;
use super::mix::{CancelVia, Mix, Planned};

/// Where requests go.
#[derive(Clone)]
pub(crate) struct Target {
    pub(crate) channel: Channel,
    pub(crate) client: Arc<Client>,
    pub(crate) exchange: String,
    pub(crate) reply_queue: String,
}

/// Send arrivals at `rate` per second from `t0` until `until`, or until `interrupt` changes.
/// Returns the tasks still publishing or waiting to cancel, and whether it was interrupted.
pub(crate) async fn run(
    target: &Target,
    ledger: &Arc<Ledger>,
    mix: &Mix,
    (rate, seed): (f64, u64),
    (t0, until): (Instant, Instant),
    interrupt: &mut watch::Receiver<u32>,
) -> (JoinSet<()>, bool) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut tasks = JoinSet::new();
    let mut next = t0;
    loop {
        let u: f64 = rng.random();
        next += Duration::from_secs_f64(-(1.0 - u).ln() / rate);
        if next >= until {
            tokio::time::sleep_until(until).await;
            return (tasks, false);
        }
        tokio::select! {
            () = tokio::time::sleep_until(next) => {}
            _ = interrupt.changed() => return (tasks, true),
        }
        let plan = mix.draw(&mut rng);
        let id = Uuid::new_v4();
        ledger.submit(id, plan.class, plan.kind, next, plan.payload.clone());
        tasks.spawn(send(target.clone(), ledger.clone(), id, plan));
        while tasks.try_join_next().is_some() {}
    }
}

async fn send(target: Target, ledger: Arc<Ledger>, id: Uuid, plan: Planned) {
    let body = Format::MsgPack.encode(&RequestBody {
        kind: plan.kind.into(),
        payload: plan.payload,
        options: plan.options.to_value(),
        locality: None,
    });
    let body = match body {
        Ok(b) => b,
        Err(e) => {
            ledger.publish_failed(id, format!("encoding: {e}"));
            return;
        }
    };
    let props = BasicProperties::default()
        .with_message_id(id.to_string().into())
        .with_correlation_id(id.to_string().into())
        .with_reply_to(target.reply_queue.as_str().into())
        .with_content_type(Format::MsgPack.content_type().into());
    match amqp::publish(&target.channel, &target.exchange, "", &body, props, true).await {
        Ok(p) if !p.is_returned(&id.to_string()) => {}
        Ok(_) => {
            ledger.publish_failed(id, "returned by the broker (no queue bound)".into());
            return;
        }
        Err(e) => {
            ledger.publish_failed(id, e.to_string());
            return;
        }
    }
    let Some((after, via)) = plan.cancel else {
        return;
    };
    tokio::time::sleep(after).await;
    let answer = match via {
        CancelVia::Client => match target.client.cancel(id).await {
            Ok(ended) => format!("client: {ended:?}"),
            Err(e) => format!("client: error {e}"),
        },
        CancelVia::Message => {
            let props = BasicProperties::default()
                .with_type("cancel".into())
                .with_message_id(id.to_string().into());
            match amqp::publish(&target.channel, &target.exchange, "", b"", props, true).await {
                Ok(p) if !p.is_returned(&id.to_string()) => "message: sent".to_owned(),
                Ok(_) => "message: returned".to_owned(),
                Err(e) => format!("message: error {e}"),
            }
        }
    };
    ledger.cancelled(id, answer);
}
