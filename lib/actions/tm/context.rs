//! `context FILE… H:D/disk.N`: the context ISO, built on the frontend (volume label CONTEXT,
//! Joliet + Rock Ridge, as OpenNebula's own drivers build it) from `context.sh` and the
//! CONTEXT/FILES entries (`path` or `path:'name'`), then written on the host as the regular
//! file `disk.N` (atomically, never through a symlink). Frontend paths are read under
//! `frontend_root`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

use super::disk::vm_path;
use super::Tm;
use crate::error::{fail, ErrorKind};
use crate::exec::{self, Cmd, ExecError};
use crate::host::vm_ops::PutFileReq;
use crate::one::tm::{ContextFile, DiskRef};

/// ISO builders tried in order (the first one installed is used), as argv before the output
/// file and the staging directory.
const ISO_TOOLS: &[&[&str]] = &[
    &[
        "xorriso", "-as", "mkisofs", "-quiet", "-V", "CONTEXT", "-J", "-R", "-o",
    ],
    &["genisoimage", "-quiet", "-V", "CONTEXT", "-J", "-R", "-o"],
    &["mkisofs", "-quiet", "-V", "CONTEXT", "-J", "-R", "-o"],
];

/// Copies a file or a directory tree (files and directories only).
fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    let md = std::fs::metadata(from).with_context(|| format!("context file {}", from.display()))?;
    if md.is_dir() {
        std::fs::create_dir_all(to)?;
        for e in std::fs::read_dir(from)? {
            let e = e?;
            copy_tree(&e.path(), &to.join(e.file_name()))?;
        }
    } else {
        std::fs::copy(from, to)
            .with_context(|| format!("copying context file {}", from.display()))?;
    }
    Ok(())
}

/// Builds the ISO of `files` (frontend paths under `root`) in `work`; returns its path.
pub fn build_iso(
    root: &Path,
    files: &[ContextFile],
    work: &Path,
    deadline: Duration,
) -> anyhow::Result<PathBuf> {
    let staging = work.join("iso");
    std::fs::create_dir_all(&staging)?;
    for f in files {
        let src = root.join(f.path.trim_start_matches('/'));
        let name = match &f.name {
            Some(n) => n.clone(),
            None => Path::new(&f.path)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .ok_or_else(|| {
                    fail(
                        ErrorKind::BadInput,
                        format!("context file {} has no name", f.path),
                    )
                })?,
        };
        copy_tree(&src, &staging.join(name))?;
    }
    let out = work.join("context.iso");
    for tool in ISO_TOOLS {
        let cmd = Cmd::new(tool[0])
            .args(&tool[1..])
            .arg(&out)
            .arg(&staging)
            .timeout(deadline);
        match exec::run(&cmd) {
            Ok(_) => return Ok(out),
            Err(ExecError::Spawn { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                continue
            }
            Err(e) => return Err(anyhow::Error::new(e).context("building the context ISO")),
        }
    }
    Err(fail(
        ErrorKind::Config,
        "no ISO builder on the frontend: install xorriso (or genisoimage)",
    ))
}

impl Tm<'_> {
    /// `context`.
    pub(super) fn context(
        &self,
        files: &[ContextFile],
        dst: &DiskRef,
        _vm: i64,
    ) -> anyhow::Result<()> {
        let work = tempfile::Builder::new()
            .prefix("one-bsud-context-")
            .tempdir()
            .context("creating a work directory for the context ISO")?;
        let iso = build_iso(
            &self.ctx.config.frontend_root,
            files,
            work.path(),
            self.ctx.config.timeouts.command,
        )?;
        let bytes = std::fs::read(&iso)?;
        let n = bytes.len();
        self.hosts().call_with_stdin(
            &dst.at.host,
            &PutFileReq {
                path: vm_path(&dst.at.path)?,
                mode: 0o644,
            },
            bytes,
        )?;
        tracing::info!(
            "context ISO ({n} bytes) written as {}:{}",
            dst.at.host,
            dst.at.path
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_holds_the_files_under_their_names() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("fe");
        std::fs::create_dir_all(root.join("var/lib/one/vms/7")).unwrap();
        std::fs::write(root.join("var/lib/one/vms/7/context.sh"), b"ONEGATE=x\n").unwrap();
        std::fs::create_dir_all(root.join("var/tmp")).unwrap();
        std::fs::write(root.join("var/tmp/f"), b"payload").unwrap();
        let files = vec![
            ContextFile {
                path: "/var/lib/one/vms/7/context.sh".into(),
                name: None,
            },
            ContextFile {
                path: "/var/tmp/f".into(),
                name: Some("init.sh".into()),
            },
        ];
        let work = d.path().join("work");
        let iso = build_iso(&root, &files, &work, Duration::from_secs(60)).unwrap();
        let data = std::fs::read(&iso).unwrap();
        // ISO 9660: primary volume descriptor at 32 KiB, volume id at offset 40.
        assert_eq!(&data[0x8001..0x8006], b"CD001");
        assert_eq!(&data[0x8028..0x802F], b"CONTEXT");
        let hay = String::from_utf8_lossy(&data);
        assert!(hay.contains("ONEGATE=x") && hay.contains("payload"));
        let missing = vec![ContextFile {
            path: "/nope".into(),
            name: None,
        }];
        assert!(build_iso(
            &root,
            &missing,
            &d.path().join("w2"),
            Duration::from_secs(60)
        )
        .is_err());
    }
}
