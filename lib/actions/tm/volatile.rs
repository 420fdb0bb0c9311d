//! `mkimage` / `mkswap`: volatile disks, new LVs on the VM host's system drive. `mkimage`
//! formats the LV with the disk's `FS` attribute (read from `onevm show -x`: the argv does not
//! carry it); without one the disk is raw and reads as zeros. `mkswap` makes swap. Volatile
//! disks are always raw LVs: another FORMAT is refused.
//!
//! Re-runnable: a ready LV is only re-linked; one that is not ready (a crash during mkfs) is
//! removed and made again, so a half-written file system never survives.

use super::disk::{conventional, disk_tags, is_ready, mib, TAG_READY};
use super::Tm;
use crate::error::{fail, ErrorKind};
use crate::host::fs_ops::{FormatReq, FILESYSTEMS};
use crate::one::tm::DiskRef;

/// The file system of a volatile `fs` disk from its FS attribute (`None`: raw).
pub fn volatile_fs(fs: Option<&str>) -> anyhow::Result<Option<String>> {
    match fs.map(|s| s.trim().to_ascii_lowercase()) {
        None => Ok(None),
        Some(f) if f.is_empty() || f == "raw" || f == "none" => Ok(None),
        Some(f) if FILESYSTEMS.contains(&f.as_str()) => Ok(Some(f)),
        Some(f) => Err(fail(
            ErrorKind::NotImplemented,
            format!(
                "volatile disk file system FS={f:?} is not supported (one of {})",
                FILESYSTEMS.join(", ")
            ),
        )),
    }
}

impl Tm<'_> {
    /// `mkimage SIZE FORMAT H:D/disk.N`.
    pub(super) fn mkimage(
        &self,
        size_mb: u64,
        format: &str,
        dst: &DiskRef,
        vm: i64,
    ) -> anyhow::Result<()> {
        if !format.eq_ignore_ascii_case("raw") {
            return Err(fail(
                ErrorKind::NotImplemented,
                format!(
                    "volatile disks are raw LVs; FORMAT {format} is not supported (set DRIVER=raw)"
                ),
            ));
        }
        let x = self.vm(vm)?;
        let fs = x.disk(dst.disk_id).and_then(|d| d.fs.as_deref());
        self.make_volatile(size_mb, dst, vm, volatile_fs(fs)?)
    }

    /// `mkswap SIZE H:D/disk.N`.
    pub(super) fn mkswap(&self, size_mb: u64, dst: &DiskRef, vm: i64) -> anyhow::Result<()> {
        self.make_volatile(size_mb, dst, vm, Some("swap".into()))
    }

    fn make_volatile(
        &self,
        size_mb: u64,
        dst: &DiskRef,
        vm: i64,
        fs: Option<String>,
    ) -> anyhow::Result<()> {
        let disk = conventional(dst, vm)?;
        match self.lv_info(&disk)? {
            Some(l) if is_ready(&l) => {
                tracing::info!("{disk} is already made");
                return self.link(&dst.at, &disk);
            }
            Some(_) => {
                tracing::info!("{disk} was left unfinished: making it again");
                self.hosts().lv_remove(
                    &disk.host,
                    &disk.vg().parse()?,
                    &disk.lv.parse()?,
                    &[super::disk::tag(super::disk::TAG_VM, vm).parse()?],
                )?;
            }
            None => {}
        }
        let drive = self.drive_of(&disk)?;
        let tags = disk_tags(vm, dst.disk_id, None);
        let tag_refs: Vec<&str> = tags.iter().map(String::as_str).collect();
        self.storage
            .allocate(&drive, &disk.lv, mib(size_mb), &tag_refs)?;
        crate::crashpoint::reached("mkimage:allocated");
        if let Some(fs) = fs {
            self.hosts().call(
                &disk.host,
                &FormatReq {
                    lv: disk.lv_ref()?,
                    fs,
                    label: None,
                },
            )?;
        }
        self.add_tags(&disk, &[TAG_READY])?;
        self.link(&dst.at, &disk)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_systems() {
        assert_eq!(volatile_fs(None).unwrap(), None);
        assert_eq!(volatile_fs(Some("raw")).unwrap(), None);
        assert_eq!(volatile_fs(Some("EXT4")).unwrap().as_deref(), Some("ext4"));
        assert_eq!(
            crate::error::exit_code(&volatile_fs(Some("ntfs")).unwrap_err()),
            4
        );
    }
}
