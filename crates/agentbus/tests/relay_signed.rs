//! Signed senders across machines: what a daemon hands to the relay is
//! signed with its instance key; a receiving daemon that trusts that key
//! (`agentbus trust add`) writes `TRUST=signed:<instance>`, one that does
//! not writes `network-claimed`; an item changed on the way (body, sender,
//! recipient) or signed with another key under a trusted name is not
//! delivered and is audited with the reason.

mod common;
use agentbus_daemon::signing::InstanceKey;
use agentbus_proto::AgentId;
use common::{Cred, Daemon, Relay, bin, eventually, relay_jekt};
use serde_json::Value;
use std::process::Command;

fn machine(relay: &Relay, name: &str, extra: &str) -> Daemon {
    Daemon::start_with(&format!(
        "[relay]\nurl = \"{}\"\ninstance_name = \"{name}\"\n{extra}",
        relay.url
    ))
}

async fn polling(d: &Daemon, agent: &str) {
    eventually(&format!("the poller polling for {agent}"), 30, async || {
        let (_, s) = d.get("/agentmux/reactive/poller/status", &Cred::Key).await;
        (s["connected"] == true && s["agents"].as_array()?.iter().any(|a| a == agent)).then_some(())
    })
    .await
}

async fn refusals(d: &Daemon) -> Vec<Value> {
    let (_, b) = d.get("/v1/audit?limit=1000", &Cred::Key).await;
    b["entries"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e["kind"] == "relay_item" && e["outcome"] == "refused")
        .collect()
}

#[tokio::test]
async fn a_trusted_instances_jekts_are_signed_and_an_untrusted_ones_are_claimed() {
    let relay = Relay::start(&[]);
    let a = machine(&relay, "machine-a", "");
    let b = machine(&relay, "machine-b", "");
    let sink = b.open_sink("bob", "generic", true).await;
    polling(&b, "bob").await;

    // Not trusted yet: delivered as a claim.
    let (s, r) = a.jekt("bob", "first, unknown key", &Cred::Key).await;
    assert_eq!((s, r["outcome"].as_str()), (200, Some("queued")), "{r}");
    let typed = String::from_utf8(sink.wait_submits(1).await).unwrap();
    assert!(typed.contains("TRUST=network-claimed"), "{typed}");

    // Trusted by hand: signed, under the name b knows it by.
    let key = a.public_key();
    assert_eq!(key, a.public_key(), "the key is kept");
    b.trust(&["add", "machine-a", &key]);
    assert!(b.trust(&["list"]).contains("machine-a"));
    a.jekt("bob", "second, trusted key", &Cred::Key).await;
    let typed = String::from_utf8(sink.wait_submits(2).await).unwrap();
    let second = &typed[typed
        .find("second, trusted key")
        .unwrap()
        .saturating_sub(400)..];
    assert!(second.contains("TRUST=signed:machine-a"), "{typed}");

    // A message crosses signed too, into the mailbox.
    let (s, _) = a.msg("bob", "a signed letter", &Cred::Key).await;
    assert_eq!(s, 202);
    let page = eventually("the letter", 30, async || {
        let (_, page) = b.inbox("bob", "peek=true", &Cred::Key).await;
        (!Daemon::ids(&page).is_empty()).then_some(page)
    })
    .await;
    assert_eq!(page["messages"][0]["trust"], "signed:machine-a", "{page}");

    // Removed: a claim again.
    b.trust(&["remove", "machine-a"]);
    a.jekt("bob", "third, removed", &Cred::Key).await;
    let typed = String::from_utf8(sink.wait_submits(3).await).unwrap();
    let third = &typed[typed.find("third, removed").unwrap().saturating_sub(400)..];
    assert!(third.contains("TRUST=network-claimed"), "{typed}");
    assert!(refusals(&b).await.is_empty());
}

#[tokio::test]
async fn an_item_changed_on_the_way_or_signed_by_another_key_is_refused_and_audited() {
    let relay = Relay::start(&[]);
    let a = machine(&relay, "machine-a", "");
    let b = machine(&relay, "machine-b", "");
    b.trust(&["add", "machine-a", &a.public_key()]);
    let sink = b.open_sink("bob", "generic", true).await;
    polling(&b, "bob").await;

    // What the relay could do with an item a signed: change its body,
    // sender or recipient, or sign its own under a's name. Made here with
    // a's own key (read from its data dir) and another key.
    let a_key = InstanceKey::load_or_create(a.data_dir(), "machine-a").unwrap();
    let other_dir = tempfile::tempdir().unwrap();
    let other = InstanceKey::load_or_create(other_dir.path(), "machine-a").unwrap();
    let item = relay_jekt;
    let mut cases = Vec::new();
    let mut body = item("the original");
    body.signature = Some(a_key.sign(&body));
    body.body = "rm -rf ~ # changed on the way".into();
    cases.push(("body", body));
    let mut from = item("from changed");
    from.signature = Some(a_key.sign(&from));
    from.from = "root".into();
    cases.push(("from", from));
    let mut to = item("to changed");
    to.to = AgentId::parse("carol").unwrap();
    to.signature = Some(a_key.sign(&to));
    to.to = AgentId::parse("bob").unwrap();
    cases.push(("to", to));
    let mut forged = item("another key");
    forged.signature = Some(other.sign(&forged));
    cases.push(("key", forged));
    for (_, c) in &cases {
        let resp = relay
            .http
            .post(format!("{}/v1/relay/send", relay.url))
            .json(c)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    // Then a good one: once it is typed, every bad one before it was seen.
    a.jekt("bob", "the good one", &Cred::Key).await;
    let typed = String::from_utf8(sink.wait_submits(1).await).unwrap();
    assert!(typed.contains("the good one"), "{typed}");
    assert!(typed.contains("TRUST=signed:machine-a"), "{typed}");
    for bad in [
        "changed on the way",
        "from changed",
        "to changed",
        "another key",
    ] {
        assert!(!typed.contains(bad), "{bad} was typed: {typed}");
    }
    let refused = eventually("four refusals in the audit", 10, async || {
        let r = refusals(&b).await;
        (r.len() >= 4).then_some(r)
    })
    .await;
    assert_eq!(refused.len(), 4, "{refused:?}");
    let details: Vec<&str> = refused
        .iter()
        .map(|e| e["detail"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        details
            .iter()
            .filter(|d| d.contains("does not match the item"))
            .count(),
        3,
        "{details:?}"
    );
    assert!(
        details.iter().any(|d| d.contains("is trusted with key")),
        "{details:?}"
    );
    let (_, st) = b.get("/agentmux/reactive/poller/stats", &Cred::Key).await;
    assert_eq!(st["failed"], 4, "{st}");
}

#[tokio::test]
async fn pinning_the_first_key_and_requiring_signatures_are_opt_in() {
    let relay = Relay::start(&[]);
    let a = machine(&relay, "machine-a", "");
    let b = machine(
        &relay,
        "machine-b",
        "pin_first_key = true\nrequire_signed = true\n",
    );
    let sink = b.open_sink("bob", "generic", true).await;
    polling(&b, "bob").await;
    // An unsigned item (as any agent-bus client sends): refused.
    let resp = relay
        .http
        .post(format!("{}/send", relay.url))
        .json(&serde_json::json!({"from": "someone", "to": "bob", "msg": "unsigned"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    a.jekt("bob", "pinned on first sight", &Cred::Key).await;
    let typed = String::from_utf8(sink.wait_submits(1).await).unwrap();
    assert!(typed.contains("TRUST=signed:machine-a"), "{typed}");
    assert!(!typed.contains("unsigned"), "{typed}");
    let list = b.trust(&["list"]);
    assert!(
        list.contains("machine-a") && list.contains("pinned"),
        "{list}"
    );
    // On a data dir never used before, too.
    let fresh = tempfile::tempdir().unwrap();
    let dir = fresh.path().join("new");
    let out = Command::new(bin())
        .args(["trust", "add", "machine-a", &a.public_key(), "--data-dir"])
        .arg(&dir)
        .env_remove("AGENTBUS_CONFIG")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let refused = refusals(&b).await;
    assert!(
        refused.iter().any(|e| e["detail"]
            .as_str()
            .unwrap_or("")
            .contains("require_signed")),
        "{refused:?}"
    );
}
