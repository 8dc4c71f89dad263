//! Certificates made in the tests, with rcgen: a CA, a relay certificate
//! it signed for 127.0.0.1 and localhost, and a CA that signed nothing.

use super::Relay;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};

/// A CA, a certificate it signed for 127.0.0.1 and localhost, and a
/// second CA that signed nothing of the relay's.
pub struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca = ca("agentbus test CA");
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "agentbus test relay");
        let cert = params.signed_by(&key, &ca).unwrap();
        let write = |name: &str, text: String| std::fs::write(dir.path().join(name), text).unwrap();
        write("ca.pem", ca.pem());
        write("relay.pem", cert.pem());
        write("relay-key.pem", key.serialize_pem());
        write("other-ca.pem", self::ca("another CA").pem());
        Pki { dir }
    }

    pub fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    pub fn relay(&self) -> Relay {
        let args = self.relay_args();
        Relay::start(&args.each_ref().map(String::as_str))
    }

    /// `--tls-cert` and `--tls-key` of the relay's certificate.
    pub fn relay_args(&self) -> [String; 4] {
        [
            "--tls-cert".into(),
            self.path("relay.pem"),
            "--tls-key".into(),
            self.path("relay-key.pem"),
        ]
    }

    /// An HTTP client that trusts the test CA.
    pub fn client(&self) -> reqwest::Client {
        agentbus_daemon::tls::ClientTls {
            ca_file: Some(self.path("ca.pem").into()),
            insecure_http: false,
        }
        .client()
        .unwrap()
    }
}

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}
