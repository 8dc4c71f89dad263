//! Shell panes: where a jekt runs as a command line, so who may send one
//! is narrower (docs/jekt.md, "Shell panes").

use super::Sender;
use crate::agents::PaneRecord;
use crate::auth::Identity;
use crate::config::PolicyConfig;
use agentbus_proto::api::Provider;
use agentbus_proto::jekt::marker_field;

/// Shells: a pane whose foreground program is one of these runs a jekt
/// as a command line, whatever its provider says.
const SHELLS: [&str; 20] = [
    "sh", "bash", "dash", "zsh", "fish", "ksh", "mksh", "pdksh", "yash", "tcsh", "csh", "ash",
    "busybox", "nu", "elvish", "xonsh", "pwsh", "rc", "osh", "ysh",
];

fn is_shell(name: &str) -> bool {
    SHELLS.contains(&name.trim_start_matches('-'))
}

/// Whether `record` is a shell pane: opened as one, or with a shell
/// reading its terminal now, whatever its provider says. The process
/// tracker tells: every process of the pane in the terminal's foreground
/// process group is a shell (a shell running a program in the foreground
/// waits for it; the program reads what is typed). tmux tells for its
/// panes.
pub(crate) async fn is_shell_pane(record: &PaneRecord) -> bool {
    if record.provider == Provider::Shell {
        return true;
    }
    // A pane on an ssh host: locally its foreground is `ssh`, so what reads
    // the terminal on the far side cannot be seen. Unless it was opened as
    // an agent CLI, it counts as a shell.
    if record.conn.is_some() && matches!(record.provider, Provider::Generic | Provider::Raw) {
        return true;
    }
    // The common case costs one look: a foreground led by a program that
    // is not a shell is that program's.
    let Some(leader) = record.pane.foreground_program().await else {
        return false;
    };
    if !is_shell(&leader) {
        return false;
    }
    // A shell leads it. tmux tells no more; for a PTY of our own, the
    // tracker tells whether the shell runs a program in its own group.
    let (Some(group), Some(pid)) = (record.pane.foreground_group(), record.pane.pid()) else {
        return true;
    };
    let tree = tokio::task::spawn_blocking(move || crate::tracker::tree(Some(pid)))
        .await
        .map(|t| t.processes)
        .unwrap_or_default();
    tree.iter()
        .filter(|p| p.pgrp == group)
        .all(|p| is_shell(&p.comm))
}

/// Why `sender` may not jekt `record`, if it is a shell pane and the
/// sender may not run commands there; `None` if it may.
pub(crate) async fn shell_refusal(
    policy: &PolicyConfig,
    record: &PaneRecord,
    sender: &Sender<'_>,
) -> Option<String> {
    let why = may_jekt_shell(policy, sender).err()?;
    is_shell_pane(record).await.then_some(why)
}

/// A jekt into a shell runs a command. The instance key (this one's, or a
/// peer's: the same user) may; a proven agent sender (here, vouched for by
/// a peer, or authenticated by the relay) needs `policy.shell_jekt_senders`
/// to name it; an unproven sender from the relay never may.
fn may_jekt_shell(policy: &PolicyConfig, sender: &Sender<'_>) -> Result<(), String> {
    let named = |who: &str| policy.shell_jekt_senders.iter().any(|s| s == who);
    let proven = sender.trust.is_proven();
    match sender.caller {
        Identity::Admin | Identity::Dashboard(_) => Ok(()),
        Identity::Peer if !proven => Ok(()),
        Identity::Relay if !proven => Err(format!(
            "a sender the relay did not authenticate ({}) may never jekt it",
            marker_field(&sender.name)
        )),
        Identity::Agent(_) | Identity::Peer | Identity::Relay if named(&sender.name) => Ok(()),
        _ => Err(format!(
            "agent senders may jekt it only if policy.shell_jekt_senders names the sender ({})",
            marker_field(&sender.name)
        )),
    }
}
