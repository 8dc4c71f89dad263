//! The profiles of the AWS config files, for `connlistaws`: names,
//! region, which file(s) name them, and hints of how they sign in (SSO,
//! a role, static keys, a credential process). Never a key's value: only
//! the settings in [`SHOWN`] are shown with their value, every other one
//! is at most a yes/no.
//!
//! The files are INI as the AWS CLI reads them: `[default]` and
//! `[profile NAME]` in the config file (`$AWS_CONFIG_FILE` or
//! `~/.aws/config`), `[NAME]` in the credentials file
//! (`$AWS_SHARED_CREDENTIALS_FILE` or `~/.aws/credentials`); `key =
//! value` lines, `#` and `;` comments, indented lines under a key with no
//! value (nested settings such as `s3 =`) belonging to that key.

use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Settings shown with their value: none of them is a secret.
pub const SHOWN: [&str; 11] = [
    "region",
    "output",
    "role_arn",
    "source_profile",
    "credential_source",
    "sso_session",
    "sso_account_id",
    "sso_role_name",
    "sso_region",
    "sso_start_url",
    "mfa_serial",
];

/// A section's `key = value` settings, in order.
type Settings = Vec<(String, String)>;

/// Largest file read.
const MAX_FILE: u64 = 1 << 20;

/// One `[section]` of a file: its name and settings, in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Section {
    pub name: String,
    pub settings: Settings,
}

/// Parses INI text as the AWS CLI does. Lines before any section, and
/// indented lines under a key with an empty value, are not settings of a
/// section.
pub fn parse(text: &str) -> Vec<Section> {
    let mut out: Vec<Section> = Vec::new();
    let mut nested = false;
    for raw in text.lines() {
        let indented = raw.starts_with([' ', '\t']);
        let line = raw.trim();
        if line.is_empty() || line.starts_with(['#', ';']) {
            continue;
        }
        if nested && indented {
            continue;
        }
        nested = false;
        if let Some(inner) = line.strip_prefix('[') {
            let name = inner.split(']').next().unwrap_or_default().trim();
            out.push(Section {
                name: name.to_string(),
                settings: Vec::new(),
            });
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_string());
        if v.is_empty() {
            nested = true;
        }
        if let Some(s) = out.last_mut() {
            s.settings.push((k, v));
        }
    }
    out
}

/// A profile as listed.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Profile {
    pub name: String,
    /// `config`, `credentials`, or both.
    pub sources: Vec<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// The non-secret settings ([`SHOWN`]), with their values.
    pub settings: BTreeMap<String, String>,
    /// How it signs in, as far as the files say: `sso`, `role`,
    /// `static-keys`, `credential-process`, `web-identity`.
    pub kinds: Vec<&'static str>,
}

/// One file looked at.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Source {
    pub path: String,
    pub found: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Listing {
    pub profiles: Vec<Profile>,
    pub config_file: Source,
    pub credentials_file: Source,
}

fn read(path: &Path) -> (Source, Option<String>) {
    use std::io::Read;
    let shown = path.display().to_string();
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return (
                Source {
                    path: shown,
                    found: false,
                    error: None,
                },
                None,
            );
        }
        Err(e) => {
            return (
                Source {
                    path: shown,
                    found: false,
                    error: Some(format!("cannot read it: {e}")),
                },
                None,
            );
        }
    };
    let mut text = String::new();
    let r = file.take(MAX_FILE).read_to_string(&mut text);
    let error = r
        .err()
        .map(|e| format!("cannot read it as text: {e}"))
        .or_else(|| {
            (text.len() as u64 == MAX_FILE).then(|| "only its first MiB was read".to_string())
        });
    (
        Source {
            path: shown,
            found: true,
            error,
        },
        Some(text),
    )
}

fn note(p: &mut Profile, source: &'static str, settings: &Settings) {
    if !p.sources.contains(&source) {
        p.sources.push(source);
    }
    for (k, v) in settings {
        if SHOWN.contains(&k.as_str()) && !v.is_empty() {
            p.settings.insert(k.clone(), v.clone());
        }
        let kind = match k.as_str() {
            "sso_session" | "sso_start_url" => "sso",
            "role_arn" => "role",
            "aws_access_key_id" | "aws_secret_access_key" | "aws_session_token" => "static-keys",
            "credential_process" => "credential-process",
            "web_identity_token_file" => "web-identity",
            _ => continue,
        };
        if !p.kinds.contains(&kind) {
            p.kinds.push(kind);
        }
    }
    p.region = p.settings.get("region").cloned();
}

/// Lists the profiles of `config` (a config file) and `credentials`.
pub fn list_files(config: &Path, credentials: &Path) -> Listing {
    let mut profiles: BTreeMap<String, Profile> = BTreeMap::new();
    let (config_file, text) = read(config);
    // (profile name, file kind, settings)
    let mut found: Vec<(String, &'static str, Settings)> = Vec::new();
    for s in parse(text.as_deref().unwrap_or_default()) {
        let name = if s.name == "default" {
            Some("default")
        } else {
            s.name
                .strip_prefix("profile")
                .filter(|rest| rest.starts_with([' ', '\t']))
                .map(str::trim)
        };
        if let Some(name) = name.filter(|n| !n.is_empty()) {
            found.push((name.to_string(), "config", s.settings));
        }
    }
    let (credentials_file, text) = read(credentials);
    for s in parse(text.as_deref().unwrap_or_default()) {
        if !s.name.is_empty() {
            found.push((s.name, "credentials", s.settings));
        }
    }
    for (name, source, settings) in found {
        let p = profiles.entry(name.clone()).or_insert_with(|| Profile {
            name,
            ..Default::default()
        });
        note(p, source, &settings);
    }
    Listing {
        profiles: profiles.into_values().collect(),
        config_file,
        credentials_file,
    }
}

/// The two files as the AWS CLI finds them: the environment, else
/// `~/.aws/`.
pub fn default_files() -> (PathBuf, PathBuf) {
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/"), PathBuf::from);
    let pick = |var: &str, file: &str| {
        std::env::var_os(var)
            .filter(|v| !v.is_empty())
            .map_or_else(|| home.join(".aws").join(file), PathBuf::from)
    };
    (
        pick("AWS_CONFIG_FILE", "config"),
        pick("AWS_SHARED_CREDENTIALS_FILE", "credentials"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = "\
# a comment
top = ignored
[default]
region = eu-west-1
output=json

[profile dev]
sso_session = corp
sso_account_id = 111122223333
sso_role_name = Dev
region = us-east-1
s3 =
  max_concurrent_requests = 10
  aws_secret_access_key = NESTED-SECRET
[profile  prod ]
role_arn = arn:aws:iam::123:role/Admin
source_profile = dev
credential_process = /bin/get-creds --token PROCESS-SECRET
[sso-session corp]
sso_start_url = https://corp.awsapps.com/start
[profilex]
region = nowhere
";

    const CREDENTIALS: &str = "\
[default]
aws_access_key_id = AKIAFAKEFAKEFAKE1234
aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYFAKESECRET
; comment
[ci]
aws_access_key_id=AKIAOTHER
aws_secret_access_key=OTHER-SECRET
aws_session_token = SESSION-SECRET
";

    #[test]
    fn ini_sections_and_nested_settings() {
        let s = parse(CONFIG);
        let names: Vec<&str> = s.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "default",
                "profile dev",
                "profile  prod",
                "sso-session corp",
                "profilex"
            ]
        );
        let dev = &s[1].settings;
        assert!(dev.iter().any(|(k, v)| k == "s3" && v.is_empty()));
        assert!(!dev.iter().any(|(_, v)| v.contains("NESTED")));
        assert_eq!(s[0].settings[1], ("output".into(), "json".into()));
    }

    #[test]
    fn profiles_are_listed_without_a_secret() {
        let dir = tempfile::tempdir().unwrap();
        let (c, k) = (dir.path().join("config"), dir.path().join("credentials"));
        std::fs::write(&c, CONFIG).unwrap();
        std::fs::write(&k, CREDENTIALS).unwrap();
        let l = list_files(&c, &k);
        let text = serde_json::to_string(&l).unwrap();
        for secret in [
            "AKIAFAKE",
            "wJalrXUtnFEMI",
            "FAKESECRET",
            "OTHER-SECRET",
            "SESSION-SECRET",
            "PROCESS-SECRET",
            "NESTED-SECRET",
            "AKIAOTHER",
        ] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        let names: Vec<&str> = l.profiles.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["ci", "default", "dev", "prod"]);
        let by = |n: &str| l.profiles.iter().find(|p| p.name == n).unwrap();
        assert_eq!(by("default").sources, ["config", "credentials"]);
        assert_eq!(by("default").region.as_deref(), Some("eu-west-1"));
        assert_eq!(by("default").kinds, ["static-keys"]);
        assert_eq!(by("dev").kinds, ["sso"]);
        assert_eq!(by("dev").settings["sso_role_name"], "Dev");
        assert_eq!(by("prod").kinds, ["role", "credential-process"]);
        assert_eq!(by("prod").settings["source_profile"], "dev");
        assert_eq!(by("ci").sources, ["credentials"]);
        assert!(l.config_file.found && l.credentials_file.found);
        let none = list_files(&dir.path().join("no"), &dir.path().join("nope"));
        assert!(none.profiles.is_empty() && !none.config_file.found);
    }
}
