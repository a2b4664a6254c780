//! Drives the official RocketMQ 5.x Rust client (crate `rocketmq` 5.0.0) for the e2e suite.
//! Same command-line contract as ../python/client.py: `send` prints one JSON line per acknowledged
//! message, `receive` one per received message until --count messages or --timeout seconds.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rocketmq::conf::{ClientOption, ProducerOption, SimpleConsumerOption};
use rocketmq::model::common::{FilterExpression, FilterType};
use rocketmq::model::message::MessageBuilder;
use rocketmq::model::transaction::{Transaction, TransactionResolution};
use rocketmq::{Producer, SimpleConsumer};
use serde_json::json;

struct Args {
    cmd: String,
    opts: HashMap<String, String>,
    ack: bool,
}

impl Args {
    fn parse() -> Args {
        let mut it = std::env::args().skip(1);
        let cmd = it.next().expect("command: send or receive");
        let (mut opts, mut ack) = (HashMap::new(), true);
        while let Some(k) = it.next() {
            if k == "--no-ack" {
                ack = false;
                continue;
            }
            opts.insert(k.trim_start_matches("--").to_string(), it.next().expect("value"));
        }
        Args { cmd, opts, ack }
    }
    fn get(&self, k: &str, default: &str) -> String {
        self.opts.get(k).cloned().unwrap_or_else(|| default.to_string())
    }
    fn num(&self, k: &str, default: u64) -> u64 {
        self.opts.get(k).map(|v| v.parse().expect("number")).unwrap_or(default)
    }
}

fn client_option(a: &Args, poll_s: u64) -> ClientOption {
    let mut c = ClientOption::default();
    c.set_access_url(a.get("endpoint", "127.0.0.1:8081"));
    c.set_enable_tls(false);
    c.set_timeout(Duration::from_secs(10));
    c.set_long_polling_timeout(Duration::from_secs(poll_s));
    // --access-key / --secret-key: the client signs every call.
    if let Some(ak) = a.opts.get("access-key") {
        c.set_access_key(ak.clone());
        c.set_secret_key(a.get("secret-key", ""));
    }
    c
}

async fn send(a: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let topic = a.get("topic", "");
    let mut po = ProducerOption::default();
    po.set_topics(vec![topic.clone()]);
    let mut producer = Producer::new(po, client_option(a, 20))?;
    producer.start().await?;
    let (tag, kp, bp) = (a.get("tag", "TagA"), a.get("key-prefix", "key"), a.get("body-prefix", "body"));
    for i in 0..a.num("count", 1) {
        let body = format!("{bp}-{i}");
        let key = format!("{kp}-{i}");
        let delay = a.num("delay", 0);
        let builder = if delay > 0 {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
            MessageBuilder::delay_message_builder(topic.clone(), vec![], (now + delay) as i64)
        } else {
            MessageBuilder::builder().set_topic(topic.clone())
        };
        let msg = builder
            .set_tag(tag.clone())
            .set_keys(vec![key.clone()])
            .set_properties(HashMap::from([("origin".to_string(), "rust".to_string())]))
            .set_body(body.clone().into_bytes())
            .build()?;
        let r = producer.send(msg).await?;
        println!("{}", json!({"id": r.message_id(), "tag": tag, "keys": [key], "body": body}));
    }
    producer.shutdown().await?;
    Ok(())
}

async fn receive(a: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let topic = a.get("topic", "");
    let mut co = SimpleConsumerOption::default();
    co.set_topics(vec![topic.clone()]);
    co.set_consumer_group(a.get("group", ""));
    let mut consumer = SimpleConsumer::new(co, client_option(a, a.num("poll", 5)))?;
    consumer.start().await?;
    let filter = FilterExpression::new(FilterType::Tag, a.get("filter", "*"));
    let (count, invisible) = (a.num("count", 1), Duration::from_secs(a.num("invisible", 20)));
    let deadline = Instant::now() + Duration::from_secs(a.num("timeout", 30));
    let mut got = 0;
    while got < count && Instant::now() < deadline {
        let batch = (count - got).min(32) as i32;
        let messages = match consumer.receive_with(topic.clone(), &filter, batch, invisible).await {
            Ok(m) => m,
            // The 5.0.0 client reports "no message" (MESSAGE_NOT_FOUND) as an error.
            Err(e) if format!("{e:?}").contains("MessageNotFound") || format!("{e:?}").contains("40401") => continue,
            Err(e) => return Err(e.into()),
        };
        for m in messages {
            let body = String::from_utf8_lossy(m.body()).to_string();
            println!(
                "{}",
                json!({"id": m.message_id(), "tag": m.tag(), "keys": m.keys(), "body": body, "attempt": m.delivery_attempt()})
            );
            if a.ack {
                consumer.ack(&m).await?;
            }
            got += 1;
        }
    }
    consumer.shutdown().await?;
    Ok(())
}

/// Transactional messages: send --count, then commit / rollback / leave open (--action); the checker
/// answers check-backs with --checker and prints {"check": id}. Stays up --hold seconds, or until
/// --until-checks check-backs arrived.
async fn txsend(a: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let topic = a.get("topic", "");
    let mut po = ProducerOption::default();
    po.set_topics(vec![topic.clone()]);
    let checker_answer = a.get("checker", "commit");
    let until = a.num("until-checks", 0);
    let (tx_checks, mut rx_checks) = tokio::sync::mpsc::unbounded_channel::<()>();
    let answer = checker_answer.clone();
    let checker = Box::new(move |_transaction_id: String, m: rocketmq::model::message::MessageView| {
        println!("{}", json!({"check": m.message_id(), "answer": answer}));
        let _ = tx_checks.send(());
        match answer.as_str() {
            "commit" => TransactionResolution::COMMIT,
            "rollback" => TransactionResolution::ROLLBACK,
            _ => TransactionResolution::UNKNOWN,
        }
    });
    let mut producer = Producer::new_transaction_producer(po, client_option(a, 20), checker)?;
    producer.start().await?;
    let (action, bp, tag) = (a.get("action", "commit"), a.get("body-prefix", "body"), a.get("tag", "TagA"));
    for i in 0..a.num("count", 1) {
        let body = format!("{bp}-{i}");
        let msg = MessageBuilder::transaction_message_builder(topic.clone(), body.clone().into_bytes()).set_tag(tag.clone()).build()?;
        let tx = producer.send_transaction_message(msg).await?;
        println!("{}", json!({"id": tx.message_id(), "body": body}));
        match action.as_str() {
            "commit" => tx.commit().await?,
            "rollback" => tx.rollback().await?,
            _ => {}
        }
    }
    let hold = tokio::time::sleep(Duration::from_secs_f64(a.get("hold", "0").parse()?));
    tokio::pin!(hold);
    let mut seen = 0;
    loop {
        tokio::select! {
            _ = &mut hold => break,
            Some(()) = rx_checks.recv() => {
                seen += 1;
                if until > 0 && seen >= until {
                    // The client sends EndTransaction after the checker returns, on its own task;
                    // give that answer time to leave before shutting down.
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    break;
                }
            }
        }
    }
    producer.shutdown().await?;
    Ok(())
}

#[tokio::main]
async fn main() {
    let a = Args::parse();
    let r = match a.cmd.as_str() {
        "send" => send(&a).await,
        "receive" => receive(&a).await,
        "txsend" => txsend(&a).await,
        other => Err(format!("unknown command {other}").into()),
    };
    if let Err(e) = r {
        eprintln!("error: {e:?}");
        std::process::exit(1);
    }
}
