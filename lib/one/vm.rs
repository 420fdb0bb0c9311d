//! The VM document: what `onevm show -x` prints and what pre/post/failmigrate get on stdin.
//! Only the fields the driver needs are typed; the raw text is kept to forward it unchanged.

use serde::Serialize;

use super::template::{vector_get, Template};
use super::xml::Element;
use crate::error::{fail, ErrorKind};

/// One `TEMPLATE/DISK` of a VM.
#[derive(Debug, Clone, Serialize)]
pub struct VmDisk {
    /// DISK_ID.
    pub disk_id: u32,
    /// SIZE in MB.
    pub size_mb: Option<u64>,
    /// TYPE (`FILE`, `BLOCK`, `fs`, `swap`, `CDROM`, …).
    pub disk_type: String,
    /// FS for volatile `fs` disks.
    pub fs: Option<String>,
    /// FORMAT / DRIVER.
    pub format: Option<String>,
    /// TM_MAD of the disk.
    pub tm_mad: Option<String>,
    /// DATASTORE_ID of the image datastore.
    pub datastore_id: Option<i64>,
    /// IMAGE_ID.
    pub image_id: Option<i64>,
    /// SOURCE.
    pub source: Option<String>,
    /// PERSISTENT=YES.
    pub persistent: bool,
    /// CLONE=YES.
    pub clone: bool,
    /// All attributes, for anything else.
    pub attrs: Vec<(String, String)>,
}

/// The last history record.
#[derive(Debug, Clone, Serialize)]
pub struct VmHistory {
    /// Host name.
    pub hostname: String,
    /// System datastore id.
    pub ds_id: Option<i64>,
    /// System TM.
    pub tm_mad: Option<String>,
}

/// A VM document.
#[derive(Debug, Clone, Serialize)]
pub struct VmXml {
    /// VM id.
    pub id: i64,
    /// STATE.
    pub state: Option<i64>,
    /// LCM_STATE.
    pub lcm_state: Option<i64>,
    /// DEPLOY_ID (the hypervisor's name for the VM, `one-<id>` on KVM).
    pub deploy_id: Option<String>,
    /// Disks (CONTEXT excluded).
    pub disks: Vec<VmDisk>,
    /// History records, oldest first.
    pub history: Vec<VmHistory>,
    /// The document as received.
    #[serde(skip)]
    pub raw: String,
}

impl VmXml {
    /// Parses a `<VM>` document.
    pub fn from_xml(xml: &str) -> anyhow::Result<VmXml> {
        let root = Element::parse_document(xml, "VM", "VM document")?;
        let id = root
            .child_text("ID")
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| fail(ErrorKind::BadInput, "VM document has no valid VM/ID"))?;
        let int = |e: &Element, n: &str| e.child_text(n).and_then(|s| s.trim().parse::<i64>().ok());
        let tmpl = root
            .child("TEMPLATE")
            .map(Template::from_element)
            .unwrap_or_default();
        let disks = tmpl
            .vectors("DISK")
            .filter_map(|d| {
                let get = |k: &str| {
                    vector_get(d, k)
                        .filter(|v| !v.is_empty())
                        .map(str::to_string)
                };
                Some(VmDisk {
                    disk_id: get("DISK_ID")?.parse().ok()?,
                    size_mb: get("SIZE").and_then(|s| s.parse().ok()),
                    disk_type: get("TYPE").unwrap_or_default(),
                    fs: get("FS"),
                    format: get("FORMAT").or_else(|| get("DRIVER")),
                    tm_mad: get("TM_MAD"),
                    datastore_id: get("DATASTORE_ID").and_then(|s| s.parse().ok()),
                    image_id: get("IMAGE_ID").and_then(|s| s.parse().ok()),
                    source: get("SOURCE"),
                    persistent: get("PERSISTENT").as_deref() == Some("YES"),
                    clone: get("CLONE").as_deref() == Some("YES"),
                    attrs: d.to_vec(),
                })
            })
            .collect();
        let history = root
            .child("HISTORY_RECORDS")
            .map(|h| {
                h.children_named("HISTORY")
                    .map(|r| VmHistory {
                        hostname: r.child_text("HOSTNAME").unwrap_or_default().to_string(),
                        ds_id: int(r, "DS_ID"),
                        tm_mad: r.child_text("TM_MAD").map(str::to_string),
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(VmXml {
            id,
            state: int(&root, "STATE"),
            lcm_state: int(&root, "LCM_STATE"),
            deploy_id: root
                .child_text("DEPLOY_ID")
                .filter(|s| !s.is_empty())
                .map(str::to_string),
            disks,
            history,
            raw: xml.to_string(),
        })
    }

    /// The disk with this id.
    pub fn disk(&self, id: u32) -> Option<&VmDisk> {
        self.disks.iter().find(|d| d.disk_id == id)
    }
}
