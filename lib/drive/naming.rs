//! Names and tags of drives, and device names for new links.
//!
//! Device names are chosen from the VM's block device mappings (every state, root and volumes
//! that are not ours included), the links our own volumes report, and the devices already
//! present on the host — never from "what is absent in /dev" alone (bsud's collision bug,
//! reference §A.9). The caller holds the host's device lock between choosing and linking.

use std::collections::BTreeSet;

/// Tag bsud itself uses; kept so bsud's tooling recognises our volumes.
pub const TAG_DRIVE: &str = "osc.bsud.drive-name";
/// The OpenNebula datastore id.
pub const TAG_DATASTORE: &str = "one.bsud.datastore";
/// The OpenNebula host name.
pub const TAG_HOST: &str = "one.bsud.host";
/// The Outscale VM the drive belongs to.
pub const TAG_VM: &str = "one.bsud.vm";
/// Set on a volume whose release (shrink) has begun, so a crash does not re-add it.
pub const TAG_RELEASING: &str = "one.bsud.releasing";
/// Prefix of the VM tag recording an in-flight CreateVolume's ClientToken (crash recovery).
pub const TAG_INTENT_PREFIX: &str = "one.bsud.intent.";
/// VG tag `one.bsud.max_size_gib=<n>`: the drive's growth limit (`BSUD_MAX_SIZE_GIB`), kept on
/// the VG so the host capacity probe, which cannot ask OpenNebula, reports it as TOTAL.
pub const TAG_MAX_SIZE_GIB: &str = "one.bsud.max_size_gib";

/// The VG of datastore `ds`.
pub fn vg_name(ds: i64) -> String {
    format!("vg-one-{ds}")
}

/// The drive name: `<host>:vg-one-<ds>`.
pub fn drive_name(host: &str, ds: i64) -> String {
    format!("{host}:{}", vg_name(ds))
}

/// The VM tag key holding the intent of drive `ds` (a VM hosts at most one drive per datastore).
pub fn intent_key(ds: i64) -> String {
    format!("{TAG_INTENT_PREFIX}{}", vg_name(ds))
}

/// The tags every BSU of the drive carries.
pub fn drive_tags(host: &str, ds: i64, vm_id: &str) -> Vec<(String, String)> {
    vec![
        (TAG_DRIVE.into(), drive_name(host, ds)),
        (TAG_DATASTORE.into(), ds.to_string()),
        (TAG_HOST.into(), host.into()),
        (TAG_VM.into(), vm_id.into()),
    ]
}

/// The by-id serial suffix of an Outscale device name: `/dev/xvdc` → `c`, `/dev/sdba` → `ba`.
pub fn device_suffix(device: &str) -> Option<&str> {
    let s = device
        .strip_prefix("/dev/xvd")
        .or_else(|| device.strip_prefix("/dev/sd"))?;
    (!s.is_empty() && s.len() <= 2 && s.bytes().all(|b| b.is_ascii_lowercase())).then_some(s)
}

/// Candidate device names in the order we use them: `/dev/xvdb`…`/dev/xvdz`, then
/// `/dev/xvdba`…`/dev/xvdzz` (two letters, first b–z, as the API documents).
pub fn device_candidates() -> impl Iterator<Item = String> {
    let single = (b'b'..=b'z').map(|c| format!("/dev/xvd{}", c as char));
    let double = (b'b'..=b'z')
        .flat_map(|a| (b'a'..=b'z').map(move |b| format!("/dev/xvd{}{}", a as char, b as char)));
    single.chain(double)
}

/// The first device name whose suffix is used by none of `taken` (device names in any form,
/// `/dev/sdc` and `/dev/xvdc` being the same slot: the guest sees both as serial `sdc`).
pub fn free_device<'a>(taken: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let used: BTreeSet<String> = taken
        .into_iter()
        .filter_map(|d| {
            device_suffix(d)
                .map(str::to_string)
                .or_else(|| d.strip_prefix("sd").map(str::to_string))
        })
        .collect();
    device_candidates().find(|c| device_suffix(c).is_some_and(|s| !used.contains(s)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(drive_name("kvm1", 100), "kvm1:vg-one-100");
        assert_eq!(device_suffix("/dev/xvdc"), Some("c"));
        assert_eq!(device_suffix("/dev/sdba"), Some("ba"));
        assert_eq!(device_suffix("/dev/sda1"), None);
        assert_eq!(device_candidates().count(), 25 + 25 * 26);
    }

    #[test]
    fn free_device_skips_every_form_of_a_taken_slot() {
        assert_eq!(free_device(["/dev/sda1"]).as_deref(), Some("/dev/xvdb"));
        assert_eq!(
            free_device(["/dev/sda1", "/dev/xvdb", "/dev/sdc", "sdd"]).as_deref(),
            Some("/dev/xvde")
        );
        let all: Vec<String> = device_candidates().take(25).collect();
        assert_eq!(
            free_device(all.iter().map(String::as_str)).as_deref(),
            Some("/dev/xvdba")
        );
    }
}

/// The image LV of image `id`: `img-one-<id>`.
pub fn image_lv(id: i64) -> String {
    format!("img-one-{id}")
}

/// The VM disk LV: `lv-one-<vm>-<disk>`.
pub fn disk_lv(vm: i64, disk: u32) -> String {
    format!("lv-one-{vm}-{disk}")
}

/// The LV holding snapshot `snap` of LV `lv` (thick copy): `<lv>-snap-<snap>`.
pub fn snapshot_lv(lv: &str, snap: u32) -> String {
    format!("{lv}-snap-{snap}")
}

/// An image SOURCE as cp/mkfs/clone print it: `<image host>:vg-one-<ds>/img-one-<id>`.
pub fn image_source(host: &str, ds: i64, id: i64) -> String {
    format!("{host}:{}/{}", vg_name(ds), image_lv(id))
}

/// A SOURCE of ours, parsed: `<host>:<vg>/<lv>`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Source {
    /// The image host.
    pub host: String,
    /// `vg-one-<ds>`.
    pub vg: String,
    /// `img-one-<id>`.
    pub lv: String,
    /// The datastore id from the VG name.
    pub ds: i64,
}

/// Parses `host:vg-one-<ds>/<lv>`; anything else is not ours (`None`).
pub fn parse_source(s: &str) -> Option<Source> {
    let (host, rest) = s.split_once(':')?;
    let (vg, lv) = rest.split_once('/')?;
    let ds: i64 = vg.strip_prefix("vg-one-")?.parse().ok()?;
    if host.is_empty()
        || lv.is_empty()
        || lv.contains('/')
        || crate::exec::ssh::validate_host(host).is_err()
    {
        return None;
    }
    if !lv
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"+_.-".contains(&b))
        || lv.starts_with('-')
    {
        return None;
    }
    Some(Source {
        host: host.to_string(),
        vg: vg.to_string(),
        lv: lv.to_string(),
        ds,
    })
}

#[cfg(test)]
mod source_tests {
    use super::*;

    #[test]
    fn sources_round_trip_and_foreign_ones_are_refused() {
        let s = image_source("kvm1", 100, 7);
        assert_eq!(s, "kvm1:vg-one-100/img-one-7");
        let p = parse_source(&s).unwrap();
        assert_eq!(
            (p.host.as_str(), p.vg.as_str(), p.lv.as_str(), p.ds),
            ("kvm1", "vg-one-100", "img-one-7", 100)
        );
        for bad in [
            "/var/lib/one//datastores/100/abc",
            "kvm1:/dev/vg-one-100/img-one-7",
            "kvm1:vg-other/img-one-7",
            ":vg-one-1/x",
            "kvm1:vg-one-1/",
            "kvm1:vg-one-1/a/b",
            "kvm1:vg-one-x/img",
            "h$(x):vg-one-1/img-one-1",
            "kvm1:vg-one-1/-rf",
        ] {
            assert!(parse_source(bad).is_none(), "{bad}");
        }
    }
}
