//! The NATS JetStream storage against a private nats-server: what a
//! reviewer found could go wrong at the edges — a token command changing
//! the relay's retention, a stream whose every message expired, records
//! written into the stream by something else.

use agentbus_proto::MessageId;
use agentbus_proto::relay::{DEFAULT_CHANNEL, RelayKind};
use agentbus_relay::nats::{NatsOptions, NatsStorage};
use agentbus_relay::storage::{Append, Appended, Meta, Storage};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Server {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server is installed (scripts/test.sh installs it)");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(20));
        }
        Server {
            child,
            port,
            _dir: dir,
        }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn msg(to: &str, body: &str) -> Append {
    Append {
        id: MessageId::new(),
        channel: DEFAULT_CHANNEL.into(),
        to: to.into(),
        from: "a".into(),
        body: body.into(),
        kind: RelayKind::Plain,
        meta: Meta::default(),
    }
}

async fn js(url: &str) -> async_nats::jetstream::Context {
    async_nats::jetstream::new(async_nats::connect(url).await.unwrap())
}

#[tokio::test]
async fn a_token_command_leaves_the_relays_retention_alone() {
    let server = Server::start();
    let serving = NatsOptions {
        retention: Duration::from_secs(30 * 86_400),
        ..NatsOptions::new(server.url())
    };
    let _node = NatsStorage::connect(&serving).await.unwrap();
    let tokens_only = NatsOptions {
        serve: false,
        ..NatsOptions::new(server.url())
    };
    let t = NatsStorage::connect(&tokens_only).await.unwrap();
    assert!(
        t.create_token(
            "agent:x",
            agentbus_relay::storage::TokenOwner::Agent("x".into()),
            &"ab".repeat(32)
        )
        .await
        .unwrap()
    );
    let mut stream = js(&server.url())
        .await
        .get_stream("agentbus_MSGS")
        .await
        .unwrap();
    let info = stream.info().await.unwrap();
    assert_eq!(info.config.max_age, Duration::from_secs(30 * 86_400));
}

#[tokio::test]
async fn a_node_starts_on_a_stream_whose_messages_all_expired() {
    let server = Server::start();
    let opts = NatsOptions::new(server.url());
    let first = NatsStorage::connect(&opts).await.unwrap();
    for i in 0..3 {
        first.append(msg("bob", &format!("{i}"))).await.unwrap();
    }
    drop(first);
    // What retention does to an idle relay: no messages, the last
    // sequence kept.
    js(&server.url())
        .await
        .get_stream("agentbus_MSGS")
        .await
        .unwrap()
        .purge()
        .await
        .unwrap();
    let started = Instant::now();
    let node = tokio::time::timeout(Duration::from_secs(15), NatsStorage::connect(&opts))
        .await
        .expect("the node starts at once")
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
    let Appended::Stored { seq, ts } = node.append(msg("bob", "after")).await.unwrap() else {
        panic!("stored")
    };
    assert_eq!(seq, 4, "sequences go on");
    let f = node
        .fetch(DEFAULT_CHANNEL, "bob", 0.0, 10, usize::MAX)
        .await
        .unwrap();
    assert_eq!(f.messages.len(), 1);
    assert_eq!(f.messages[0].0, ts);
    assert!(f.now >= ts);
}

#[tokio::test]
async fn records_written_by_something_else_are_skipped_not_fatal() {
    let server = Server::start();
    let node = NatsStorage::connect(&NatsOptions::new(server.url()))
        .await
        .unwrap();
    node.append(msg("bob", "one")).await.unwrap();
    let js = js(&server.url()).await;
    let bob = format!("agentbus.m.{}.{}", hex(DEFAULT_CHANNEL), hex("bob"));
    // Not a record at all; a record that names alice on bob's subject.
    js.publish(bob.clone(), "garbage".into())
        .await
        .unwrap()
        .await
        .unwrap();
    let forged = serde_json::json!({
        "id": MessageId::new(), "channel": DEFAULT_CHANNEL, "from": "x", "to": "alice",
        "kind": "plain", "body": "for alice on bob's subject"
    });
    js.publish(bob, forged.to_string().into())
        .await
        .unwrap()
        .await
        .unwrap();
    node.append(msg("bob", "two")).await.unwrap();
    let f = node
        .fetch(DEFAULT_CHANNEL, "bob", 0.0, 10, usize::MAX)
        .await
        .unwrap();
    let bodies: Vec<&str> = f.messages.iter().map(|m| m.2.as_str()).collect();
    assert_eq!(bodies, ["one", "two"]);
    let page = node
        .poll("c", &["bob".to_string()], 10, usize::MAX)
        .await
        .unwrap();
    assert_eq!(
        page.iter().map(|e| e.body.as_str()).collect::<Vec<_>>(),
        ["one", "two"]
    );
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}
