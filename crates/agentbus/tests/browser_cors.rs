//! A real browser (headless Chromium) on a page served from another
//! loopback origin may call the daemon: its CORS preflight to `/mcp`
//! (with the MCP headers and a bearer token) is answered before
//! authentication, the call goes through, and the page can read the MCP
//! session header. The test command installs Chromium when it is missing.

mod common;

use common::Daemon;
use std::process::Command;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn chromium() -> Option<&'static str> {
    [
        "/usr/bin/chromium",
        "/usr/bin/chromium-browser",
        "/usr/bin/google-chrome",
    ]
    .into_iter()
    .find(|p| std::path::Path::new(p).exists())
}

/// Serves `html` for every request on a loopback port of its own (a
/// different origin from the daemon's).
async fn page_server(html: String) -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", l.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let html = html.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    html.len()
                );
                let _ = s.write_all(head.as_bytes()).await;
                let _ = s.write_all(html.as_bytes()).await;
            });
        }
    });
    url
}

#[tokio::test]
async fn a_loopback_page_in_chromium_calls_mcp_through_its_preflight() {
    let browser = chromium().expect("Chromium is missing: `bash scripts/test.sh` installs it");
    let d = Daemon::start();
    let token = d.register("web").await;
    let html = format!(
        r#"<!doctype html><html><body><pre id="out">pending</pre><script>
(async () => {{
  const out = document.getElementById('out');
  try {{
    const r = await fetch({daemon:?} + '/mcp', {{
      method: 'POST',
      headers: {{
        'Authorization': 'Bearer ' + {token:?},
        'Content-Type': 'application/json',
        'Accept': 'application/json, text/event-stream',
        'MCP-Protocol-Version': '2025-06-18'
      }},
      body: JSON.stringify({{jsonrpc: '2.0', id: 1, method: 'initialize', params: {{
        protocolVersion: '2025-06-18', capabilities: {{}},
        clientInfo: {{name: 'browser-test', version: '1'}} }} }})
    }});
    const reader = r.body.getReader();
    const first = await reader.read();
    const text = new TextDecoder().decode(first.value || new Uint8Array());
    out.textContent = 'STATUS ' + r.status + ' SESSION ' + (r.headers.get('mcp-session-id') ? 'yes' : 'no')
      + ' SERVER ' + (text.includes('serverInfo') ? 'yes' : 'no');
    reader.cancel();
  }} catch (e) {{
    out.textContent = 'ERROR ' + e;
  }}
}})();
</script></body></html>"#,
        daemon = d.url,
        token = token,
    );
    let page = page_server(html).await;
    let profile = tempfile::tempdir().unwrap();
    let profile_arg = format!("--user-data-dir={}", profile.path().display());
    let out = tokio::task::spawn_blocking(move || {
        Command::new(browser)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--virtual-time-budget=15000",
                "--dump-dom",
                &profile_arg,
                &page,
            ])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(
        dom.contains("STATUS 200 SESSION yes SERVER yes"),
        "the page said: {dom}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .take(20)
            .collect::<Vec<_>>()
            .join("\n")
    );
}
