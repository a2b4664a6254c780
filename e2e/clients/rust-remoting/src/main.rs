//! Drives the Remoting Rust client `rocketmq-client-rust` against a nameserver, printing one JSON
//! line per message:
//!
//! - `send --namesrv H:P --topic T --count N [--tag TAG]`: N sync sends (`{"id", "queue"}` each,
//!   then `{"sent": N}`).
//! - `push --namesrv H:P --topic T --group G --expect N [--timeout S] [--pop] [--linger-ms MS]`: a
//!   DefaultMQPushConsumer (clustering; `--pop`: `client_rebalance(false)`, so the broker assigns
//!   queues and the consumer pops) until N distinct ids arrived or S seconds passed (`{"id",
//!   "topic", "body", "tags", "reconsumeTimes", "props"}` each, then `{"received": n}`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rocketmq_client_rust::{
    ClientResult, ClientRuntime, ClientRuntimeConfig, ConsumeConcurrentlyContext, ConsumeConcurrentlyStatus,
    DefaultMQProducer, DefaultMQPushConsumer, MQPushConsumer, MessageListenerConcurrently,
};
use rocketmq_model::common::consumer::consume_from_where::ConsumeFromWhere;
use rocketmq_model::common::message::message_ext::MessageExt;
use rocketmq_model::common::message::message_single::Message;
use rocketmq_runtime::{RuntimeConfig, RuntimeOwner};
use serde_json::json;

fn args() -> (String, HashMap<String, String>) {
    let mut it = std::env::args().skip(1);
    let role = it.next().unwrap_or_default();
    let (mut opts, mut key) = (HashMap::new(), None::<String>);
    for a in it {
        match (a.strip_prefix("--"), key.take()) {
            (Some(k), Some(prev)) => {
                opts.insert(prev, "true".into());
                key = Some(k.into());
            }
            (Some(k), None) => key = Some(k.into()),
            (None, Some(prev)) => {
                opts.insert(prev, a);
            }
            (None, None) => panic!("unexpected argument {a}"),
        }
    }
    if let Some(k) = key {
        opts.insert(k, "true".into());
    }
    (role, opts)
}

fn runtime() -> ClientResult<(RuntimeOwner, Arc<ClientRuntime>)> {
    let owner = RuntimeOwner::plan(RuntimeConfig { thread_name: "e2e".into(), ..Default::default() })
        .expect("valid runtime configuration")
        .build()
        .expect("client runtime");
    let telemetry = rocketmq_observability::install_global(&Default::default()).expect("telemetry");
    let rt = ClientRuntime::try_new(
        owner.root_context().component("client"),
        ClientRuntimeConfig::default(),
        telemetry.handle(),
    )?;
    std::mem::forget(telemetry); // lives as long as the process
    Ok((owner, rt))
}

struct Listener {
    seen: Arc<Mutex<HashSet<String>>>,
}

impl MessageListenerConcurrently for Listener {
    fn consume_message(
        &self,
        msgs: &[&MessageExt],
        _: &ConsumeConcurrentlyContext,
    ) -> ClientResult<ConsumeConcurrentlyStatus> {
        for m in msgs {
            let props: BTreeMap<String, String> =
                m.properties().iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            let id = props.get("UNIQ_KEY").cloned().unwrap_or_else(|| m.msg_id().to_string());
            let body = m.body().map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
            println!(
                "{}",
                json!({"id": id, "topic": m.topic().to_string(), "body": body, "tags": m.get_tags().map(|t| t.to_string()),
                       "reconsumeTimes": m.reconsume_times(), "props": props})
            );
            self.seen.lock().unwrap().insert(id);
        }
        Ok(ConsumeConcurrentlyStatus::ConsumeSuccess)
    }
}

#[tokio::main]
async fn main() -> ClientResult<()> {
    let (role, o) = args();
    let get = |k: &str, d: &str| o.get(k).cloned().unwrap_or_else(|| d.to_string());
    let (namesrv, topic) = (get("namesrv", "127.0.0.1:9876"), get("topic", "e2e"));
    let (_owner, rt) = runtime()?;
    match role.as_str() {
        "send" => {
            let count: usize = get("count", "10").parse().expect("--count");
            let mut p =
                DefaultMQProducer::builder(rt).producer_group("e2e-rust-producer").name_server_addr(namesrv).build();
            p.start().await?;
            for i in 0..count {
                let msg = Message::builder()
                    .topic(topic.as_str())
                    .tags(get("tag", "TagR"))
                    .body_slice(format!("rust-{i}").as_bytes())
                    .build_unchecked();
                let r = p.send_with_timeout(msg, 5000).await?.expect("a sync send has a result");
                let queue = r.message_queue.as_ref().map(|q| q.queue_id());
                println!("{}", json!({"id": r.msg_id.map(|s| s.to_string()), "queue": queue}));
            }
            p.shutdown().await;
            println!("{}", json!({ "sent": count }));
        }
        "push" => {
            let expect: usize = get("expect", "10").parse().expect("--expect");
            let timeout: u64 = get("timeout", "60").parse().expect("--timeout");
            let seen = Arc::new(Mutex::new(HashSet::new()));
            let mut c = DefaultMQPushConsumer::builder(rt)
                .consumer_group(get("group", "e2e-rust-consumer"))
                .name_server_addr(namesrv)
                .consume_from_where(ConsumeFromWhere::ConsumeFromFirstOffset)
                .client_rebalance(!o.contains_key("pop"))
                .build();
            c.subscribe(topic.as_str(), "*").await?;
            c.register_message_listener_concurrently(Listener { seen: seen.clone() });
            c.start().await?;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
            while seen.lock().unwrap().len() < expect && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            // Acks go out after the listener returns, asynchronously, and shutdown does not wait
            // for them: give them `--linger-ms` to reach the broker.
            tokio::time::sleep(Duration::from_millis(get("linger-ms", "1000").parse().expect("--linger-ms"))).await;
            c.shutdown().await;
            println!("{}", json!({ "received": seen.lock().unwrap().len() }));
        }
        other => panic!("unknown role {other:?}: send or push"),
    }
    std::process::exit(0); // the client's background tasks need not finish
}
