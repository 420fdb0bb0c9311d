//! Disk image formats told from their first bytes, as qemu's probes tell them, and what their
//! headers say (virtual size, references to other files).
//!
//! Invariants:
//! - The format is always decided here, from the content, and then given to qemu-img with
//!   `-f`: qemu never probes on its own (a raw disk whose first sector looks like a qcow2 header
//!   must stay raw data, and a probed header must never make qemu open a file it names).
//! - Images that name other files are refused before qemu sees them: a qcow2 backing file or
//!   external data file, a vmdk descriptor (its extents are other files), a differencing VHD.
//!   An import must never read a file of the host it runs on.
//! - Encrypted qcow2 images are refused (converting them needs a key the driver never has).
//! - Every header field read is bounds-checked: a short or garbled header is "unknown", never
//!   a panic.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{fail, ErrorKind};

/// Bytes of the content read to tell its format (enough for every header below).
pub const HEAD_BYTES: usize = 64 * 1024;

/// A disk image format qemu-img converts to raw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskFormat {
    /// Plain bytes (ISO images, raw disks, fixed VHDs, anything unrecognised).
    Raw,
    /// QEMU copy-on-write v2/v3.
    Qcow2,
    /// QEMU enhanced disk.
    Qed,
    /// VMware sparse extent (monolithic sparse or stream-optimised).
    Vmdk,
    /// VirtualBox.
    Vdi,
    /// Hyper-V VHDX.
    Vhdx,
    /// Virtual PC / Hyper-V dynamic VHD.
    Vpc,
}

/// Every format, for `--format` values.
pub const FORMATS: &[&str] = &["raw", "qcow2", "qed", "vmdk", "vdi", "vhdx", "vpc"];

impl DiskFormat {
    /// qemu-img's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            DiskFormat::Raw => "raw",
            DiskFormat::Qcow2 => "qcow2",
            DiskFormat::Qed => "qed",
            DiskFormat::Vmdk => "vmdk",
            DiskFormat::Vdi => "vdi",
            DiskFormat::Vhdx => "vhdx",
            DiskFormat::Vpc => "vpc",
        }
    }
}

impl fmt::Display for DiskFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DiskFormat {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<DiskFormat> {
        Ok(match s {
            "raw" => DiskFormat::Raw,
            "qcow2" => DiskFormat::Qcow2,
            "qed" => DiskFormat::Qed,
            "vmdk" => DiskFormat::Vmdk,
            "vdi" => DiskFormat::Vdi,
            "vhdx" => DiskFormat::Vhdx,
            "vpc" => DiskFormat::Vpc,
            _ => {
                return Err(fail(
                    ErrorKind::BadInput,
                    format!("unknown image format {s:?} ({})", FORMATS.join(", ")),
                ))
            }
        })
    }
}

fn be_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn be_u64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

fn le_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn le_u64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

const VDI_SIGNATURE: u32 = 0xbeda_107f;
/// qcow2 incompatible feature bit: the guest data lives in another file.
const QCOW2_EXTERNAL_DATA_FILE: u64 = 1 << 2;
/// VHD disk type of a differencing disk (its data depends on a parent file).
const VHD_DIFFERENCING: u32 = 4;

fn refused(what: &str, why: &str) -> anyhow::Error {
    fail(
        ErrorKind::Refused,
        format!("the image is {what}: {why}; refusing to import it"),
    )
}

/// The format of content starting with `head` (at least the first [`HEAD_BYTES`] when the
/// content is that long), or a refusal for images that name other files or are encrypted.
pub fn detect(head: &[u8]) -> anyhow::Result<DiskFormat> {
    let fmt = if head.starts_with(b"QFI\xfb") {
        DiskFormat::Qcow2
    } else if head.starts_with(b"QED\0") {
        DiskFormat::Qed
    } else if head.starts_with(b"KDMV") {
        DiskFormat::Vmdk
    } else if head.starts_with(b"COWD") {
        return Err(refused(
            "an ESX sparse vmdk",
            "it is made of several extent files",
        ));
    } else if head.starts_with(b"# Disk DescriptorFile") {
        return Err(refused(
            "a vmdk descriptor",
            "its data lives in other files it names",
        ));
    } else if le_u32(head, 0x40) == Some(VDI_SIGNATURE) {
        DiskFormat::Vdi
    } else if head.starts_with(b"vhdxfile") {
        DiskFormat::Vhdx
    } else if head.starts_with(b"conectix") {
        if be_u32(head, 60) == Some(VHD_DIFFERENCING) {
            return Err(refused(
                "a differencing VHD",
                "its data depends on a parent file",
            ));
        }
        DiskFormat::Vpc
    } else {
        DiskFormat::Raw
    };
    if fmt == DiskFormat::Qcow2 {
        check_qcow2(head)?;
    }
    // QED: feature bit 0 = backing file; backing_filename_offset (u32) at 56.
    if fmt == DiskFormat::Qed
        && (le_u64(head, 16).is_none_or(|f| f & 1 != 0) || le_u32(head, 56).is_none_or(|o| o != 0))
    {
        return Err(refused(
            "a qed image with a backing file",
            "it names another file",
        ));
    }
    Ok(fmt)
}

/// qcow2 header checks: no backing file, no external data file, no encryption.
fn check_qcow2(head: &[u8]) -> anyhow::Result<()> {
    let version = be_u32(head, 4).unwrap_or(0);
    if !(2..=3).contains(&version) {
        return Err(refused(
            &format!("a qcow2 image of version {version}"),
            "only versions 2 and 3 are known",
        ));
    }
    if be_u64(head, 8).is_none_or(|o| o != 0) {
        return Err(refused(
            "a qcow2 image with a backing file",
            "it names another file (convert it with `qemu-img convert -O qcow2` first)",
        ));
    }
    if be_u32(head, 32).is_none_or(|m| m != 0) {
        return Err(refused("an encrypted qcow2 image", "no key is available"));
    }
    if version >= 3 && be_u64(head, 72).is_none_or(|f| f & QCOW2_EXTERNAL_DATA_FILE != 0) {
        return Err(refused(
            "a qcow2 image with an external data file",
            "its data lives in another file",
        ));
    }
    Ok(())
}

/// The virtual size the header of `fmt` states, when it states one plainly (not VHDX, whose
/// size lives in a metadata region elsewhere). For VPC it is the footer's current size, which
/// qemu may round down to the disk geometry: an upper bound.
pub fn header_virtual_size(fmt: DiskFormat, head: &[u8]) -> Option<u64> {
    match fmt {
        DiskFormat::Qcow2 => be_u64(head, 24),
        DiskFormat::Qed => le_u64(head, 48),
        DiskFormat::Vmdk => le_u64(head, 12)?.checked_mul(512),
        DiskFormat::Vdi => le_u64(head, 0x170),
        DiskFormat::Vpc => be_u64(head, 48),
        DiskFormat::Raw | DiskFormat::Vhdx => None,
    }
    .filter(|&s| s > 0)
}

/// What `qemu-img info --output=json` says about an image, reduced to what an import needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QemuInfo {
    /// The format qemu reports (it was told it with `-f`).
    pub format: String,
    /// The guest-visible size in bytes.
    pub virtual_size: u64,
}

/// Parses `qemu-img info --output=json`; refuses images that name a backing or data file.
pub fn parse_qemu_info(json: &str) -> anyhow::Result<QemuInfo> {
    let v: serde_json::Value = serde_json::from_str(json)
        .map_err(|e| anyhow::anyhow!("qemu-img info printed something that is not JSON: {e}"))?;
    if let Some(b) = v.get("backing-filename").and_then(|b| b.as_str()) {
        return Err(refused(
            "an image with a backing file",
            &format!("it names {b:?}"),
        ));
    }
    if v.pointer("/format-specific/data/data-file").is_some() {
        return Err(refused(
            "an image with an external data file",
            "its data lives in another file",
        ));
    }
    if v.pointer("/format-specific/data/encrypt").is_some()
        || v.get("encrypted") == Some(&true.into())
    {
        return Err(refused("an encrypted image", "no key is available"));
    }
    let virtual_size = v
        .get("virtual-size")
        .and_then(|s| s.as_u64())
        .filter(|&s| s > 0)
        .ok_or_else(|| anyhow::anyhow!("qemu-img info reports no virtual size"))?;
    Ok(QemuInfo {
        format: v
            .get("format")
            .and_then(|f| f.as_str())
            .unwrap_or_default()
            .to_string(),
        virtual_size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn qcow2_head(size: u64) -> Vec<u8> {
        let mut h = vec![0u8; 512];
        h[..4].copy_from_slice(b"QFI\xfb");
        h[4..8].copy_from_slice(&3u32.to_be_bytes());
        h[24..32].copy_from_slice(&size.to_be_bytes());
        h[100..104].copy_from_slice(&104u32.to_be_bytes());
        h
    }

    #[test]
    fn qcow2_size_and_refusals() {
        let h = qcow2_head(1 << 30);
        assert_eq!(detect(&h).unwrap(), DiskFormat::Qcow2);
        assert_eq!(header_virtual_size(DiskFormat::Qcow2, &h), Some(1 << 30));
        let mut backing = h.clone();
        backing[8..16].copy_from_slice(&512u64.to_be_bytes());
        let e = detect(&backing).unwrap_err();
        assert_eq!(crate::error::exit_code(&e), 6);
        assert!(e.to_string().contains("backing file"), "{e}");
        let mut data_file = h.clone();
        data_file[72..80].copy_from_slice(&QCOW2_EXTERNAL_DATA_FILE.to_be_bytes());
        assert!(detect(&data_file)
            .unwrap_err()
            .to_string()
            .contains("external data file"));
        let mut enc = h.clone();
        enc[32..36].copy_from_slice(&1u32.to_be_bytes());
        assert!(detect(&enc).unwrap_err().to_string().contains("encrypted"));
        // A truncated header is refused, never read past its end.
        assert!(detect(&h[..40]).is_err());
    }

    #[test]
    fn other_formats() {
        assert_eq!(detect(b"").unwrap(), DiskFormat::Raw);
        assert_eq!(detect(&[0u8; 4096]).unwrap(), DiskFormat::Raw);
        assert_eq!(detect(b"QFI").unwrap(), DiskFormat::Raw);
        let mut vmdk = vec![0u8; 512];
        vmdk[..4].copy_from_slice(b"KDMV");
        vmdk[12..20].copy_from_slice(&2048u64.to_le_bytes());
        assert_eq!(detect(&vmdk).unwrap(), DiskFormat::Vmdk);
        assert_eq!(header_virtual_size(DiskFormat::Vmdk, &vmdk), Some(1 << 20));
        let mut vdi = vec![0u8; 0x200];
        vdi[0x40..0x44].copy_from_slice(&VDI_SIGNATURE.to_le_bytes());
        vdi[0x170..0x178].copy_from_slice(&(5u64 << 20).to_le_bytes());
        assert_eq!(detect(&vdi).unwrap(), DiskFormat::Vdi);
        assert_eq!(header_virtual_size(DiskFormat::Vdi, &vdi), Some(5 << 20));
        let mut vhd = vec![0u8; 512];
        vhd[..8].copy_from_slice(b"conectix");
        vhd[48..56].copy_from_slice(&(3u64 << 20).to_be_bytes());
        vhd[60..64].copy_from_slice(&3u32.to_be_bytes());
        assert_eq!(detect(&vhd).unwrap(), DiskFormat::Vpc);
        assert_eq!(header_virtual_size(DiskFormat::Vpc, &vhd), Some(3 << 20));
        vhd[60..64].copy_from_slice(&VHD_DIFFERENCING.to_be_bytes());
        assert_eq!(crate::error::exit_code(&detect(&vhd).unwrap_err()), 6);
        assert!(detect(b"# Disk DescriptorFile\nversion=1").is_err());
        assert_eq!(detect(b"vhdxfile....").unwrap(), DiskFormat::Vhdx);
        assert_eq!(header_virtual_size(DiskFormat::Vhdx, b"vhdxfile"), None);
        for f in FORMATS {
            assert_eq!(f.parse::<DiskFormat>().unwrap().as_str(), *f);
        }
        assert!("qcow".parse::<DiskFormat>().is_err());
    }

    #[test]
    fn qemu_info() {
        let i = parse_qemu_info(
            r#"{"virtual-size": 1073741824, "format": "qcow2", "actual-size": 200704}"#,
        )
        .unwrap();
        assert_eq!(i.virtual_size, 1 << 30);
        assert!(
            parse_qemu_info(r#"{"virtual-size": 1, "backing-filename": "/etc/shadow"}"#).is_err()
        );
        assert!(parse_qemu_info(
            r#"{"virtual-size": 1, "format-specific": {"type": "qcow2", "data": {"data-file": "x"}}}"#
        )
        .is_err());
        assert!(parse_qemu_info("not json").is_err());
        assert!(parse_qemu_info(r#"{"format": "raw"}"#).is_err());
    }
}
