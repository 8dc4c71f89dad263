//! HTTP clients for everything that may cross a network: the relay
//! poller, `agentbus send/recv/listen`, the relay benchmark.
//!
//! Every client speaks TLS with rustls (its `ring` crypto), trusting the
//! system's roots plus, when given, the certificates of one CA file
//! (`--ca-file` / `AGENTBUS_CA_FILE`: a private CA, a test CA). A
//! plain `http://` URL is taken for a loopback host only; anywhere else
//! tokens and messages would cross the network in clear, so it is refused
//! unless the user says `--insecure-http` (`AGENTBUS_INSECURE_HTTP=1`).

use std::path::{Path, PathBuf};

/// How a client trusts servers and which URLs it may use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientTls {
    /// PEM file of extra CA certificates to trust besides the system's.
    pub ca_file: Option<PathBuf>,
    /// Allow `http://` to a host that is not loopback.
    pub insecure_http: bool,
}

/// The environment variables `ClientTls::from_env` reads.
pub const CA_FILE_ENV: &str = "AGENTBUS_CA_FILE";
pub const INSECURE_HTTP_ENV: &str = "AGENTBUS_INSECURE_HTTP";

impl ClientTls {
    /// Command-line values first, else the environment.
    pub fn from_args_or_env(ca_file: Option<PathBuf>, insecure_http: bool) -> ClientTls {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        ClientTls {
            ca_file: ca_file.or_else(|| env(CA_FILE_ENV).map(PathBuf::from)),
            insecure_http: insecure_http
                || env(INSECURE_HTTP_ENV).is_some_and(|v| matches!(v.trim(), "1" | "true" | "yes")),
        }
    }

    /// Whether this client may use `url` (the URL must parse).
    pub fn check_url(&self, url: &str) -> Result<(), String> {
        let parsed = url::Url::parse(url).map_err(|e| {
            format!(
                "{} is not a URL ({e})",
                agentbus_proto::ids::escape_for_display(url, 80)
            )
        })?;
        match parsed.scheme() {
            "https" => Ok(()),
            "http" if self.insecure_http || is_loopback(&parsed) => Ok(()),
            "http" => Err(format!(
                "refusing plain http:// to {}: tokens and messages would cross the network \
                 unencrypted. Use https:// (see docs/relay.md, \"TLS\"), or pass \
                 --insecure-http ({INSECURE_HTTP_ENV}=1) if this network is private",
                parsed.host_str().unwrap_or("?")
            )),
            other => Err(format!(
                "{} must be an http:// or https:// URL, not {other}",
                agentbus_proto::ids::escape_for_display(url, 80)
            )),
        }
    }

    /// A client builder that trusts what this says; add timeouts and the
    /// like, then `build()`.
    pub fn builder(&self) -> Result<reqwest::ClientBuilder, String> {
        install_crypto();
        // A host that does not answer is known as such in seconds, so a
        // daemon given several relay nodes moves on.
        let mut b = reqwest::Client::builder().connect_timeout(std::time::Duration::from_secs(5));
        if let Some(path) = &self.ca_file {
            b = b.tls_certs_merge(read_ca_file(path)?);
        }
        Ok(b)
    }

    /// A client with reqwest's defaults otherwise.
    pub fn client(&self) -> Result<reqwest::Client, String> {
        self.builder()?
            .build()
            .map_err(|e| format!("failed to build the HTTP client: {}", error_chain(&e)))
    }
}

/// rustls's crypto for this process: `ring`. Safe to call many times.
pub fn install_crypto() {
    // Err means one is installed already (by an earlier call).
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A plain client, trusting the system's roots: for loopback peers
/// (instances on this machine) and tests.
pub fn default_client() -> reqwest::Client {
    ClientTls::default()
        .client()
        .unwrap_or_else(|e| panic!("{e}"))
}

pub(crate) fn read_ca_file(path: &Path) -> Result<Vec<reqwest::Certificate>, String> {
    let pem = std::fs::read(path)
        .map_err(|e| format!("cannot read the CA file {}: {e}", path.display()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
        format!(
            "the CA file {} is not PEM certificates: {e}",
            path.display()
        )
    })?;
    if certs.is_empty() {
        return Err(format!(
            "the CA file {} holds no certificate (want PEM: -----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    Ok(certs)
}

fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// An error and its causes, in one line; a certificate the client does
/// not trust gets a hint about `--ca-file`.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cur = s.source();
    }
    let mut line = parts.join(": ");
    let untrusted = [
        "UnknownIssuer",
        "invalid peer certificate",
        "certificate verify",
    ]
    .iter()
    .any(|w| line.contains(w));
    if untrusted {
        line.push_str(&format!(
            " (the server's TLS certificate is not trusted: if it comes from a private CA, \
             pass that CA's certificate with --ca-file or {CA_FILE_ENV})"
        ));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_is_for_loopback_unless_the_user_says_otherwise() {
        let strict = ClientTls::default();
        for ok in [
            "https://relay.example.com",
            "https://10.0.0.5:8787",
            "http://127.0.0.1:8787",
            "http://127.9.9.9",
            "http://[::1]:8787",
            "http://localhost:8787",
            "http://LOCALHOST",
        ] {
            assert!(strict.check_url(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://relay.example.com",
            "http://10.0.0.5:8787",
            "http://[::ffff:127.0.0.1]",
            "http://localhost.example.com",
            "http://0.0.0.0:8787",
            "http://192.168.1.2",
        ] {
            let err = strict.check_url(bad).unwrap_err();
            assert!(err.contains("--insecure-http"), "{bad}: {err}");
        }
        let loose = ClientTls {
            insecure_http: true,
            ..ClientTls::default()
        };
        assert!(loose.check_url("http://relay.example.com").is_ok());
        for bad in ["ftp://x", "file:///etc/passwd", "not a url", ""] {
            assert!(loose.check_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_ca_file_that_is_not_certificates_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = ClientTls {
            ca_file: Some(dir.path().join("nope.pem")),
            ..ClientTls::default()
        };
        assert!(
            missing
                .client()
                .unwrap_err()
                .contains("cannot read the CA file")
        );
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "hello").unwrap();
        let junk = ClientTls {
            ca_file: Some(junk),
            ..ClientTls::default()
        };
        assert!(junk.client().unwrap_err().contains("holds no certificate"));
    }
}
