//! Remote commands over ssh.
//!
//! ssh does not pass argv: it joins the remote words with spaces and the remote login shell
//! parses that string again (`sh -c`). So every word we send is shell-quoted here, one by one,
//! and the joined string is passed to ssh as a single argument. A word containing NUL cannot be
//! represented and is refused. Host names are validated so that none can be read by ssh as an
//! option.

use super::Cmd;
use crate::error::{fail, ErrorKind};

/// Quotes each word for a POSIX shell and joins them with spaces.
pub fn quote_words<S: AsRef<str>>(words: &[S]) -> anyhow::Result<String> {
    let mut out = Vec::with_capacity(words.len());
    for w in words {
        let w = w.as_ref();
        let q = shlex::try_quote(w).map_err(|_| {
            fail(
                ErrorKind::BadInput,
                format!("cannot pass {w:?} to a remote shell: it contains a NUL byte"),
            )
        })?;
        out.push(q.into_owned());
    }
    Ok(out.join(" "))
}

/// Checks that `host` can be given to ssh as a host name (not an option, no spaces or
/// shell/ssh metacharacters).
pub fn validate_host(host: &str) -> anyhow::Result<()> {
    let ok = !host.is_empty()
        && !host.starts_with('-')
        && host.len() <= 253
        && host.chars().all(|c| {
            c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '@' | '[' | ']' | ':')
        });
    if ok {
        Ok(())
    } else {
        Err(fail(
            ErrorKind::BadInput,
            format!("invalid host name {host:?}"),
        ))
    }
}

/// The ssh client command line (from the configuration), e.g.
/// `["ssh", "-o", "BatchMode=yes"]`. The testbed replaces it with its own transport, which
/// re-parses the remote string with `sh -c` exactly as sshd does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshCommand(pub Vec<String>);

impl Default for SshCommand {
    fn default() -> Self {
        SshCommand(
            [
                "ssh",
                "-o",
                "BatchMode=yes",
                "-o",
                "ConnectTimeout=20",
                "-o",
                "ServerAliveInterval=15",
                "-o",
                "ServerAliveCountMax=4",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        )
    }
}

impl SshCommand {
    /// A command running `words` on `host`.
    pub fn remote<S: AsRef<str>>(&self, host: &str, words: &[S]) -> anyhow::Result<Cmd> {
        validate_host(host)?;
        let (prog, opts) = self
            .0
            .split_first()
            .ok_or_else(|| fail(ErrorKind::Config, "ssh_command is empty"))?;
        let line = quote_words(words)?;
        Ok(Cmd::new(prog).args(opts).arg(host).arg(line))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The remote side of ssh: what `sh -c <line>` would see as argv, computed by a real shell.
    fn reparse(line: &str) -> Vec<String> {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("for a in {line}; do printf '%s\\0' \"$a\"; done"))
            .output()
            .unwrap();
        out.stdout
            .split(|&b| b == 0)
            .filter(|s| !s.is_empty())
            .map(|s| String::from_utf8(s.to_vec()).unwrap())
            .collect()
    }

    #[test]
    fn hostile_words_survive_a_real_shell() {
        let words = [
            "one-bsud",
            "it's",
            "$(touch /tmp/pwned)",
            "`id`",
            "a b\tc",
            "line1\nline2",
            "\"dq\"",
            "semi;colon",
            "back\\slash",
            "*",
            "~root",
            "-rf",
        ];
        let line = quote_words(&words).unwrap();
        assert_eq!(reparse(&line), words);
    }

    #[test]
    fn nul_is_refused() {
        assert!(quote_words(&["a\0b"]).is_err());
    }

    #[test]
    fn hosts_that_look_like_options_are_refused() {
        for bad in ["-oProxyCommand=x", "", "a b", "h;rm", "h$(x)"] {
            assert!(validate_host(bad).is_err(), "{bad}");
        }
        for good in ["kvm1", "host-r1.example.org", "10.0.0.1", "node_2"] {
            validate_host(good).unwrap();
        }
    }

    #[test]
    fn remote_passes_one_quoted_string() {
        let c = SshCommand(vec!["ssh".into(), "-q".into()])
            .remote("kvm1", &["echo", "a b"])
            .unwrap();
        let args: Vec<_> = c
            .get_args()
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(args, ["-q", "kvm1", "echo 'a b'"]);
    }
}
