//! OpenNebula's side of the testbed: documents built like oned builds them, and a stand-in for
//! the two lookups the driver makes (`onevm show -x`, `onedatastore show -x`).
//!
//! The builders emit single-line XML in oned's element order, CDATA where oned uses CDATA,
//! template attributes sorted by name (oned's std::multimap), as the recorded traces show
//! (tests/fixtures/oned-traces*). They make the messages the tests and the demo send through
//! the real action entries. `bsud-sim one --dir D vm <id>` prints `D/vm-<id>.xml` (what
//! `onevm show -x <id>` would print), `… ds <id>` prints `D/ds-<id>.xml`; a missing object
//! fails like the real CLI (exit 255, one line).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;

/// Escapes text for an XML text node.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// `<K><![CDATA[v]]></K>` as oned writes string attributes (`]]>` split like oned's escape).
fn cdata(k: &str, v: &str) -> String {
    format!(
        "<{k}><![CDATA[{}]]></{k}>",
        v.replace("]]>", "]]]]><![CDATA[>")
    )
}

fn permissions() -> &'static str {
    "<PERMISSIONS><OWNER_U>1</OWNER_U><OWNER_M>1</OWNER_M><OWNER_A>0</OWNER_A><GROUP_U>0</GROUP_U><GROUP_M>0</GROUP_M><GROUP_A>0</GROUP_A><OTHER_U>0</OTHER_U><OTHER_M>0</OTHER_M><OTHER_A>0</OTHER_A></PERMISSIONS>"
}

fn template(attrs: &[(String, String)]) -> String {
    let mut sorted = attrs.to_vec();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let mut s = String::from("<TEMPLATE>");
    for (k, v) in &sorted {
        s.push_str(&cdata(k, v));
    }
    s.push_str("</TEMPLATE>");
    s
}

/// A datastore.
#[derive(Debug, Clone)]
pub struct DatastoreSpec {
    /// Id.
    pub id: i64,
    /// Name.
    pub name: String,
    /// DS_MAD (`-` for a system datastore).
    pub ds_mad: String,
    /// TM_MAD.
    pub tm_mad: String,
    /// 0 image, 1 system.
    pub ds_type: u8,
    /// Template attributes (BSUD_*, BRIDGE_LIST, SAFE_DIRS…).
    pub attrs: Vec<(String, String)>,
}

impl DatastoreSpec {
    /// An image datastore of this driver, with what oned copies from the TM_MAD_CONF the
    /// install registers (see install.sh) and the SAFE_DIRS/RESTRICTED_DIRS oned adds.
    pub fn image(id: i64) -> DatastoreSpec {
        DatastoreSpec {
            id,
            name: format!("bsud-img-{id}"),
            ds_mad: "bsud".into(),
            tm_mad: "bsud".into(),
            ds_type: 0,
            attrs: [
                ("ALLOW_ORPHANS", "YES"),
                ("CLONE_TARGET", "SYSTEM"),
                ("DISK_TYPE", "BLOCK"),
                ("DRIVER", "raw"),
                ("DS_MAD", "bsud"),
                ("LN_TARGET", "SYSTEM"),
                ("PERSISTENT_SNAPSHOTS", "YES"),
                ("RESTRICTED_DIRS", "/"),
                ("SAFE_DIRS", "/var/tmp"),
                ("TM_MAD", "bsud"),
                ("TYPE", "IMAGE_DS"),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        }
    }

    /// A system datastore of this driver (SHARED=NO: one drive per host).
    pub fn system(id: i64) -> DatastoreSpec {
        DatastoreSpec {
            id,
            name: format!("bsud-sys-{id}"),
            ds_mad: "-".into(),
            tm_mad: "bsud".into(),
            ds_type: 1,
            attrs: [
                ("ALLOW_ORPHANS", "YES"),
                ("DISK_TYPE", "FILE"),
                ("DS_MIGRATE", "YES"),
                ("PERSISTENT_SNAPSHOTS", "YES"),
                ("RESTRICTED_DIRS", "/"),
                ("SAFE_DIRS", "/var/tmp"),
                ("SHARED", "NO"),
                ("TM_MAD", "bsud"),
                ("TYPE", "SYSTEM_DS"),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        }
    }

    /// Sets (or replaces) a template attribute.
    pub fn attr(mut self, k: &str, v: &str) -> DatastoreSpec {
        self.attrs.retain(|(a, _)| a != k);
        self.attrs.push((k.to_string(), v.to_string()));
        self
    }

    /// `<DATASTORE>…</DATASTORE>`, one line.
    pub fn xml(&self) -> String {
        let mut s = String::new();
        let _ = write!(
            s,
            "<DATASTORE><ID>{id}</ID><UID>0</UID><GID>0</GID><UNAME>oneadmin</UNAME><GNAME>oneadmin</GNAME><NAME>{name}</NAME>{perm}{ds_mad}{tm_mad}{base}<TYPE>{t}</TYPE><DISK_TYPE>{dt}</DISK_TYPE><STATE>0</STATE><CLUSTERS><ID>0</ID></CLUSTERS><TOTAL_MB>0</TOTAL_MB><FREE_MB>0</FREE_MB><USED_MB>0</USED_MB><IMAGES></IMAGES>{tmpl}</DATASTORE>",
            id = self.id,
            name = esc(&self.name),
            perm = permissions(),
            ds_mad = cdata("DS_MAD", &self.ds_mad),
            tm_mad = cdata("TM_MAD", &self.tm_mad),
            base = cdata("BASE_PATH", &format!("/var/lib/one//datastores/{}", self.id)),
            t = self.ds_type,
            dt = if self.ds_type == 0 { 2 } else { 0 },
            tmpl = template(&self.attrs),
        );
        s
    }
}

/// An image as oned serialises it in driver messages.
#[derive(Debug, Clone)]
pub struct ImageSpec {
    /// Id.
    pub id: i64,
    /// Name (user text).
    pub name: String,
    /// TYPE code: 0 OS, 2 DATABLOCK…
    pub image_type: u8,
    /// Persistent.
    pub persistent: bool,
    /// SOURCE.
    pub source: String,
    /// PATH.
    pub path: String,
    /// FORMAT.
    pub format: String,
    /// FS.
    pub fs: String,
    /// SIZE (MB).
    pub size_mb: u64,
    /// STATE code (4 LOCKED during cp/mkfs/clone, 1 READY).
    pub state: u8,
    /// CLONING_ID.
    pub cloning_id: i64,
    /// TARGET_SNAPSHOT.
    pub target_snapshot: i64,
    /// Its datastore.
    pub datastore_id: i64,
    /// Template attributes (MD5, SHA1, DEV_PREFIX…).
    pub attrs: Vec<(String, String)>,
    /// Snapshot ids (for snap_* messages).
    pub snapshots: Vec<i64>,
}

impl ImageSpec {
    /// An OS image being imported from `path`.
    pub fn os(id: i64, datastore_id: i64, path: &str, size_mb: u64) -> ImageSpec {
        ImageSpec {
            id,
            name: format!("image-{id}"),
            image_type: 0,
            persistent: false,
            source: String::new(),
            path: path.to_string(),
            format: String::new(),
            fs: String::new(),
            size_mb,
            state: 4,
            cloning_id: -1,
            target_snapshot: -1,
            datastore_id,
            attrs: vec![("DEV_PREFIX".into(), "sd".into())],
            snapshots: Vec::new(),
        }
    }

    /// An empty datablock of `size_mb` (mkfs).
    pub fn datablock(id: i64, datastore_id: i64, size_mb: u64, fs: &str) -> ImageSpec {
        ImageSpec {
            image_type: 2,
            persistent: true,
            path: String::new(),
            format: "raw".into(),
            fs: fs.to_string(),
            attrs: vec![
                ("DEV_PREFIX".into(), "sd".into()),
                ("DRIVER".into(), "raw".into()),
            ],
            ..ImageSpec::os(id, datastore_id, "", size_mb)
        }
    }

    /// `<IMAGE>…</IMAGE>`, one line.
    pub fn xml(&self, datastore_name: &str) -> String {
        let mut snaps = String::from("<SNAPSHOTS>");
        snaps.push_str(&cdata("ALLOW_ORPHANS", "YES"));
        snaps.push_str(&cdata("CURRENT_BASE", "-1"));
        let next = self.snapshots.iter().max().map(|m| m + 1).unwrap_or(0);
        snaps.push_str(&cdata("NEXT_SNAPSHOT", &next.to_string()));
        for id in &self.snapshots {
            let _ = write!(
                snaps,
                "<SNAPSHOT><ACTIVE>NO</ACTIVE><CHILDREN></CHILDREN><DATE>1795312925</DATE><ID>{id}</ID><NAME>snap-{id}</NAME><PARENT>-1</PARENT><SIZE>{}</SIZE></SNAPSHOT>",
                self.size_mb
            );
        }
        snaps.push_str("</SNAPSHOTS>");
        format!(
            "<IMAGE><ID>{id}</ID><UID>0</UID><GID>0</GID><UNAME>oneadmin</UNAME><GNAME>oneadmin</GNAME><NAME>{name}</NAME>{perm}<TYPE>{t}</TYPE><DISK_TYPE>2</DISK_TYPE><PERSISTENT>{p}</PERSISTENT><REGTIME>1795312925</REGTIME><MODTIME>1795312925</MODTIME>{source}{path}{format}{fs}<SIZE>{size}</SIZE><STATE>{state}</STATE><PREV_STATE>0</PREV_STATE><RUNNING_VMS>0</RUNNING_VMS><CLONING_OPS>0</CLONING_OPS><CLONING_ID>{cl}</CLONING_ID><TARGET_SNAPSHOT>{ts}</TARGET_SNAPSHOT><DATASTORE_ID>{ds}</DATASTORE_ID><DATASTORE>{dsn}</DATASTORE><VMS></VMS><CLONES></CLONES><APP_CLONES></APP_CLONES>{tmpl}{snaps}<BACKUP_INCREMENTS></BACKUP_INCREMENTS><BACKUP_DISK_IDS></BACKUP_DISK_IDS></IMAGE>",
            id = self.id,
            name = esc(&self.name),
            perm = permissions(),
            t = self.image_type,
            p = u8::from(self.persistent),
            source = cdata("SOURCE", &self.source),
            path = cdata("PATH", &self.path),
            format = cdata("FORMAT", &self.format),
            fs = cdata("FS", &self.fs),
            size = self.size_mb,
            state = self.state,
            cl = self.cloning_id,
            ts = self.target_snapshot,
            ds = self.datastore_id,
            dsn = esc(datastore_name),
            tmpl = template(&self.attrs),
        )
    }
}

/// A `DS_DRIVER_ACTION_DATA` document; `extra` is appended after the datastore (e.g.
/// `<SOURCE_BRIDGE_LIST>…</SOURCE_BRIDGE_LIST>`).
pub fn ds_message(image: Option<&ImageSpec>, ds: &DatastoreSpec, extra: &str) -> String {
    format!(
        "<DS_DRIVER_ACTION_DATA>{}{}{}</DS_DRIVER_ACTION_DATA>",
        image.map(|i| i.xml(&ds.name)).unwrap_or_default(),
        ds.xml(),
        extra
    )
}

/// The stat message: a minimal IMAGE (PATH, SIZE) and the datastore.
pub fn stat_message(path: &str, ds: &DatastoreSpec) -> String {
    format!(
        "<DS_DRIVER_ACTION_DATA><IMAGE><PATH>{}</PATH><SIZE></SIZE></IMAGE>{}</DS_DRIVER_ACTION_DATA>",
        esc(path),
        ds.xml()
    )
}

/// Base64 without newlines, as oned writes it on stdin.
pub fn b64(xml: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(xml)
}

/// One VM disk, as attributes of its `DISK` vector.
#[derive(Debug, Clone, Default)]
pub struct DiskSpec {
    /// Attributes.
    pub attrs: Vec<(String, String)>,
}

impl DiskSpec {
    /// An image disk (persistent or not) of image `image_id` in datastore `ds` of size `size_mb`.
    pub fn image(
        disk_id: u32,
        image_id: i64,
        ds: i64,
        source: &str,
        size_mb: u64,
        persistent: bool,
    ) -> DiskSpec {
        let mut attrs: Vec<(String, String)> = [
            ("ALLOW_ORPHANS", "YES"),
            ("CLONE", if persistent { "NO" } else { "YES" }),
            ("CLONE_TARGET", "SYSTEM"),
            ("DISK_TYPE", "BLOCK"),
            ("DRIVER", "raw"),
            ("FORMAT", "raw"),
            ("LN_TARGET", "SYSTEM"),
            ("READONLY", "NO"),
            ("SAVE", if persistent { "YES" } else { "NO" }),
            ("TM_MAD", "bsud"),
            ("TYPE", "BLOCK"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        attrs.extend([
            ("DATASTORE_ID".to_string(), ds.to_string()),
            ("DISK_ID".to_string(), disk_id.to_string()),
            ("IMAGE_ID".to_string(), image_id.to_string()),
            ("SIZE".to_string(), size_mb.to_string()),
            ("ORIGINAL_SIZE".to_string(), size_mb.to_string()),
            ("SOURCE".to_string(), source.to_string()),
        ]);
        if persistent {
            attrs.push(("PERSISTENT".into(), "YES".into()));
        }
        DiskSpec { attrs }
    }

    /// A volatile disk: `fs` (with FS) or `swap`.
    pub fn volatile(disk_id: u32, kind: &str, size_mb: u64, fs: Option<&str>) -> DiskSpec {
        let mut attrs = vec![
            ("DISK_ID".to_string(), disk_id.to_string()),
            ("SIZE".to_string(), size_mb.to_string()),
            ("TYPE".to_string(), kind.to_string()),
            ("FORMAT".to_string(), "raw".to_string()),
            ("DRIVER".to_string(), "raw".to_string()),
            ("DISK_TYPE".to_string(), "FILE".to_string()),
        ];
        if let Some(f) = fs {
            attrs.push(("FS".into(), f.into()));
        }
        DiskSpec { attrs }
    }

    /// Sets an attribute.
    pub fn attr(mut self, k: &str, v: &str) -> DiskSpec {
        self.attrs.retain(|(a, _)| a != k);
        self.attrs.push((k.to_string(), v.to_string()));
        self
    }
}

/// A VM as `onevm show -x` prints it (the fields the driver reads, in oned's order).
#[derive(Debug, Clone)]
pub struct VmSpec {
    /// Id.
    pub id: i64,
    /// STATE.
    pub state: u8,
    /// LCM_STATE.
    pub lcm_state: u8,
    /// Disks.
    pub disks: Vec<DiskSpec>,
    /// History: (host, system datastore id), oldest first.
    pub history: Vec<(String, i64)>,
}

impl VmSpec {
    /// `<VM>…</VM>`, one line.
    pub fn xml(&self) -> String {
        let mut t = String::from("<TEMPLATE>");
        for d in &self.disks {
            let mut sorted = d.attrs.clone();
            sorted.sort_by(|a, b| a.0.cmp(&b.0));
            t.push_str("<DISK>");
            for (k, v) in &sorted {
                t.push_str(&cdata(k, v));
            }
            t.push_str("</DISK>");
        }
        t.push_str(&cdata("VMID", &self.id.to_string()));
        t.push_str("</TEMPLATE>");
        let mut h = String::from("<HISTORY_RECORDS>");
        for (seq, (host, ds)) in self.history.iter().enumerate() {
            let _ = write!(
                h,
                "<HISTORY><OID>{id}</OID><SEQ>{seq}</SEQ><HOSTNAME>{host}</HOSTNAME><HID>0</HID><CID>0</CID><STIME>1795314226</STIME><ETIME>0</ETIME>{vmm}{tm}<DS_ID>{ds}</DS_ID><ACTION>0</ACTION></HISTORY>",
                id = self.id,
                host = esc(host),
                vmm = cdata("VM_MAD", "kvm"),
                tm = cdata("TM_MAD", "bsud"),
            );
        }
        h.push_str("</HISTORY_RECORDS>");
        format!(
            "<VM><ID>{id}</ID><UID>0</UID><GID>0</GID><UNAME>oneadmin</UNAME><GNAME>oneadmin</GNAME><NAME>vm-{id}</NAME>{perm}<LAST_POLL>0</LAST_POLL><STATE>{st}</STATE><LCM_STATE>{lcm}</LCM_STATE><PREV_STATE>{st}</PREV_STATE><PREV_LCM_STATE>{lcm}</PREV_LCM_STATE><RESCHED>0</RESCHED><STIME>1795313110</STIME><ETIME>0</ETIME><DEPLOY_ID>one-{id}</DEPLOY_ID><MONITORING/>{t}<USER_TEMPLATE/>{h}</VM>",
            id = self.id,
            perm = permissions(),
            st = self.state,
            lcm = self.lcm_state,
        )
    }
}

/// Where the stand-in lookup reads documents: `vm-<id>.xml`, `ds-<id>.xml`.
pub fn vm_file(dir: &Path, id: i64) -> PathBuf {
    dir.join(format!("vm-{id}.xml"))
}

/// The datastore document file.
pub fn ds_file(dir: &Path, id: i64) -> PathBuf {
    dir.join(format!("ds-{id}.xml"))
}

/// `bsud-sim one` arguments.
#[derive(Debug, clap::Args)]
pub struct OneArgs {
    /// Directory holding vm-<id>.xml and ds-<id>.xml.
    #[arg(long)]
    pub dir: PathBuf,
    /// `vm` (like `onevm show -x`) or `ds` (like `onedatastore show -x`).
    #[arg(value_parser = ["vm", "ds"])]
    pub kind: String,
    /// The object id.
    pub id: String,
}

/// Prints the document like the real CLI; a missing object exits 255 with one line.
pub fn run(a: OneArgs) -> std::process::ExitCode {
    let id: i64 = match a.id.parse() {
        Ok(i) => i,
        Err(_) => {
            eprintln!(
                "[one.{}.info] Error: invalid id {:?}.",
                if a.kind == "vm" { "vm" } else { "datastore" },
                a.id
            );
            return std::process::ExitCode::from(255);
        }
    };
    let (file, what) = if a.kind == "vm" {
        (vm_file(&a.dir, id), "virtual machine")
    } else {
        (ds_file(&a.dir, id), "datastore")
    };
    match std::fs::read_to_string(&file) {
        Ok(x) => {
            print!("{x}");
            std::process::ExitCode::SUCCESS
        }
        Err(_) => {
            eprintln!(
                "[one.{}.info] Error getting {what} [{id}].",
                if a.kind == "vm" { "vm" } else { "datastore" }
            );
            std::process::ExitCode::from(255)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::one::message::DsMessage;
    use crate::one::vm::VmXml;

    #[test]
    fn built_documents_decode_like_oned_s() {
        let ds = DatastoreSpec::image(100).attr("BSUD_IMAGE_HOST", "kvm1");
        let img = ImageSpec::os(7, 100, "/var/tmp/a b&c.qcow2", 10);
        let m = DsMessage::from_xml(&ds_message(Some(&img), &ds, "")).unwrap();
        assert_eq!(m.image.as_ref().unwrap().path, "/var/tmp/a b&c.qcow2");
        assert_eq!(m.datastore.template.get("BSUD_IMAGE_HOST"), Some("kvm1"));
        assert_eq!(m.datastore.base_path, "/var/lib/one/datastores/100");
        let st = DsMessage::from_xml(&stat_message("http://x/y?a=1&b=2", &ds)).unwrap();
        assert_eq!(st.image.unwrap().path, "http://x/y?a=1&b=2");
        let vm = VmSpec {
            id: 3,
            state: 3,
            lcm_state: 3,
            disks: vec![
                DiskSpec::image(0, 7, 100, "kvm1:vg-one-100/img-one-7", 20, true),
                DiskSpec::volatile(1, "fs", 64, Some("ext4")),
            ],
            history: vec![("kvm1".into(), 101)],
        };
        let v = VmXml::from_xml(&vm.xml()).unwrap();
        assert_eq!(v.disk(0).unwrap().size_mb, Some(20));
        assert!(v.disk(0).unwrap().persistent);
        assert_eq!(v.disk(1).unwrap().fs.as_deref(), Some("ext4"));
        assert_eq!(v.history[0].hostname, "kvm1");
    }
}
