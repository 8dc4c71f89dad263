//! `agentbus bench mailbox`: durable sends per second from concurrent
//! keep-alive clients, and inbox-page latency with many messages stored.

use super::{BenchDaemon, median, percentile, sorted};
use agentbus_proto::api::{MessageKind, SendMessageRequest};
use agentbus_proto::jekt::{Priority, Trust};
use agentbus_proto::{AgentId, MessageId, now_ms};
use agentbus_store::{NewMessage, Store};
use anyhow::{Context, bail};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

/// Mail is spread over this many mailboxes.
const RECIPIENTS: usize = 100;
const BODY: &str =
    "build 812 finished: 1,204 tests passed, 0 failed; artifacts at /srv/ci/812 (sha 4e1f9c)";

/// One run: `messages` sends from `clients` concurrent senders. Returns
/// sends per second.
async fn send_run(clients: usize, messages: usize) -> anyhow::Result<f64> {
    let d = BenchDaemon::start(None)?;
    let http = agentbus_daemon::tls::default_client();
    let next = Arc::new(AtomicUsize::new(0));
    let url = format!("{}/v1/messages", d.url);
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (http, next, url, key) = (http.clone(), next.clone(), url.clone(), d.key.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= messages {
                        return Ok::<_, anyhow::Error>(());
                    }
                    let req = SendMessageRequest {
                        to: AgentId::parse(&format!("r{}", i % RECIPIENTS))?,
                        body: BODY.into(),
                        from: None,
                        thread_id: None,
                        reply_to: None,
                        priority: None,
                        ttl_s: None,
                        receipt: false,
                        request_id: None,
                        origin_trust: None,
                    };
                    let resp = http
                        .post(&url)
                        .header("x-authkey", &key)
                        .json(&req)
                        .send()
                        .await?;
                    if resp.status() != 201 {
                        bail!("a send was answered {}", resp.status());
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await??;
    }
    Ok(messages as f64 / started.elapsed().as_secs_f64())
}

/// Writes `stored` messages straight into a new store in `dir`.
async fn seed(dir: &std::path::Path, stored: usize) -> anyhow::Result<()> {
    let store = Store::open(&dir.join("agentbus.db")).context("failed to create the store")?;
    let recipients = (0..RECIPIENTS)
        .map(|r| AgentId::parse(&format!("r{r}")))
        .collect::<Result<Vec<_>, _>>()?;
    let now = now_ms();
    let mut i = 0;
    while i < stored {
        let batch: Vec<NewMessage> = (i..(i + 10_000).min(stored))
            .map(|n| NewMessage {
                id: MessageId::new(),
                recipient: recipients[n % RECIPIENTS].clone(),
                sender: "seed".into(),
                trust: Trust::SelfDeclared,
                kind: MessageKind::Message,
                body: format!("{BODY} #{n}"),
                thread_id: None,
                reply_to: None,
                priority: Priority::Normal,
                created_ms: now,
                expires_ms: now + 7 * 86_400_000,
                receipt: false,
                request_id: None,
            })
            .collect();
        i += batch.len();
        store.bulk_insert(batch).await?;
    }
    store.close();
    Ok(())
}

/// A small deterministic generator for picking mailboxes and cursors.
struct Pick(u64);

impl Pick {
    fn next(&mut self, below: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % below as u64) as usize
    }
}

/// Times `pages` page reads at random mailboxes and cursors; returns
/// latencies in ms.
async fn time_pages(
    d: &BenchDaemon,
    stored: usize,
    pages: usize,
    peek: bool,
) -> anyhow::Result<Vec<f64>> {
    let http = agentbus_daemon::tls::default_client();
    let mut pick = Pick(0x9E37_79B9_7F4A_7C15);
    let mut out = Vec::with_capacity(pages);
    for _ in 0..pages {
        let url = format!(
            "{}/v1/inbox/r{}?after={}&limit=100&peek={peek}",
            d.url,
            pick.next(RECIPIENTS),
            pick.next(stored.max(1))
        );
        let t0 = Instant::now();
        let resp = http.get(&url).header("x-authkey", &d.key).send().await?;
        let ok = resp.status() == 200;
        let _ = resp.bytes().await?;
        out.push(t0.elapsed().as_secs_f64() * 1e3);
        if !ok {
            bail!("a page read failed");
        }
    }
    Ok(out)
}

pub(super) async fn run(
    clients: usize,
    messages: usize,
    runs: usize,
    stored: usize,
    pages: usize,
) -> anyhow::Result<()> {
    eprintln!(
        "agentbus bench mailbox: {clients} clients × {messages} sends × {runs} runs; {stored} stored, {pages} pages"
    );
    let mut rates = Vec::new();
    for _ in 0..runs {
        rates.push(send_run(clients, messages).await?);
    }
    eprintln!("  sends done");
    let dir = tempfile::tempdir()?;
    let seeded = Instant::now();
    seed(dir.path(), stored).await?;
    eprintln!(
        "  seeded {stored} messages in {:.1} s",
        seeded.elapsed().as_secs_f64()
    );
    let d = BenchDaemon::start_in(dir.path().to_path_buf(), None)?;
    // Warm the page cache and connections, untimed.
    time_pages(&d, stored, pages.min(200), true).await?;
    let peek = sorted(time_pages(&d, stored, pages, true).await?);
    let read = sorted(time_pages(&d, stored, pages, false).await?);
    eprintln!("  pages done");

    outln!();
    outln!("| measurement | p50 / median | p99 | target |");
    outln!("|---|---|---|---|");
    outln!(
        "| durable mailbox sends, {clients} keep-alive clients (median of {runs} × {messages}) | {:.0} /s | | ≥ 5,000/s |",
        median(rates)
    );
    outln!(
        "| inbox page (100 messages, peek) with {stored} stored ({pages} pages) | {:.3} ms | {:.3} ms | p99 ≤ 2 ms |",
        percentile(&peek, 0.5),
        percentile(&peek, 0.99)
    );
    outln!(
        "| inbox page (100 messages, read: marks delivered) | {:.3} ms | {:.3} ms | p99 ≤ 2 ms |",
        percentile(&read, 0.5),
        percentile(&read, 0.99)
    );
    Ok(())
}
