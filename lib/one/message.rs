//! The `DS_DRIVER_ACTION_DATA` document oned sends to datastore actions (and to
//! `tm/<tm>/monitor`), decoded into typed values.
//!
//! Shape (reference §3): `<DS_DRIVER_ACTION_DATA>` + optional `<IMAGE>` + `<DATASTORE>` + extra
//! elements (`DATASTORE_LOCATION`, `MONITOR_VM_DISKS`, `SOURCE_BRIDGE_LIST`, `MARKETPLACE`).
//! Missing optional elements are fine; unknown ones are ignored; a missing or malformed
//! required one is a [`ErrorKind::BadInput`] error that names it.

use serde::Serialize;

use super::template::Template;
use super::xml::Element;
use crate::error::{fail, ErrorKind};

/// A decoded datastore driver message.
#[derive(Debug, Clone, Serialize)]
pub struct DsMessage {
    /// The image (absent for monitor).
    pub image: Option<Image>,
    /// The datastore.
    pub datastore: Datastore,
    /// The marketplace, for cp of a marketplace app.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub marketplace: Option<Marketplace>,
    /// `DATASTORE_LOCATION` (monitor of a shared system datastore).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub datastore_location: Option<String>,
    /// `MONITOR_VM_DISKS` (monitor of a shared system datastore).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub monitor_vm_disks: Option<bool>,
    /// `SOURCE_BRIDGE_LIST` (clone across datastores): hosts of the source datastore.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_bridge_list: Option<Vec<String>>,
}

/// `IMAGE/TYPE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ImageType {
    /// 0
    Os,
    /// 1
    Cdrom,
    /// 2
    Datablock,
    /// 3
    Kernel,
    /// 4
    Ramdisk,
    /// 5
    Context,
    /// 6
    Backup,
    /// 7
    Filesystem,
}

impl ImageType {
    fn from_code(c: i64) -> Option<ImageType> {
        Some(match c {
            0 => ImageType::Os,
            1 => ImageType::Cdrom,
            2 => ImageType::Datablock,
            3 => ImageType::Kernel,
            4 => ImageType::Ramdisk,
            5 => ImageType::Context,
            6 => ImageType::Backup,
            7 => ImageType::Filesystem,
            _ => return None,
        })
    }
}

/// One image snapshot (`IMAGE/SNAPSHOTS/SNAPSHOT`).
#[derive(Debug, Clone, Serialize)]
pub struct ImageSnapshot {
    /// Snapshot id.
    pub id: i64,
    /// Name.
    pub name: String,
    /// Whether it is the active one.
    pub active: bool,
    /// Parent id (-1 = none).
    pub parent: i64,
    /// Size in MB.
    pub size_mb: Option<u64>,
}

/// The `<IMAGE>` element. For `stat` only `path` and `size_mb` are present.
#[derive(Debug, Clone, Serialize)]
pub struct Image {
    /// Image id (absent in stat messages).
    pub id: Option<i64>,
    /// Owner.
    pub uname: String,
    /// Name (user supplied: never trust it in paths or shells).
    pub name: String,
    /// Type.
    pub image_type: Option<ImageType>,
    /// Whether persistent.
    pub persistent: bool,
    /// Where the image lives in the datastore (our SOURCE), empty before cp/mkfs.
    pub source: String,
    /// Where to import it from (file path or URL), empty for mkfs.
    pub path: String,
    /// Format (`raw`, `qcow2`, `save_as`, …).
    pub format: String,
    /// File system to create (mkfs), may be empty.
    pub fs: String,
    /// Size in MB (what stat returned, or the datablock size).
    pub size_mb: Option<u64>,
    /// State code.
    pub state: Option<i64>,
    /// Id of the image being cloned (clone), -1 otherwise.
    pub cloning_id: Option<i64>,
    /// Snapshot targeted by snap_* actions.
    pub target_snapshot: Option<i64>,
    /// Datastore id.
    pub datastore_id: Option<i64>,
    /// Image template (user attributes such as MD5, SHA1).
    pub template: Template,
    /// Snapshots.
    pub snapshots: Vec<ImageSnapshot>,
}

/// `DATASTORE/TYPE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DatastoreType {
    /// 0
    Image,
    /// 1
    System,
    /// 2
    File,
    /// 3
    Backup,
}

/// The `<DATASTORE>` element.
#[derive(Debug, Clone, Serialize)]
pub struct Datastore {
    /// Datastore id.
    pub id: i64,
    /// Name.
    pub name: String,
    /// DS_MAD.
    pub ds_mad: String,
    /// TM_MAD.
    pub tm_mad: String,
    /// BASE_PATH (normalised: no `//`).
    pub base_path: String,
    /// Type.
    pub ds_type: Option<DatastoreType>,
    /// Cluster ids.
    pub clusters: Vec<i64>,
    /// Datastore template (BSUD_* attributes, BRIDGE_LIST, SAFE_DIRS, …).
    pub template: Template,
}

/// The `<MARKETPLACE>` element (kept as a template).
#[derive(Debug, Clone, Serialize)]
pub struct Marketplace {
    /// Marketplace id.
    pub id: Option<i64>,
    /// Name.
    pub name: String,
    /// MARKET_MAD.
    pub market_mad: String,
    /// Template.
    pub template: Template,
}

impl DsMessage {
    /// Parses the decoded XML document.
    pub fn from_xml(xml: &str) -> anyhow::Result<DsMessage> {
        let root = Element::parse_document(xml, "DS_DRIVER_ACTION_DATA", "driver message")?;
        let ds = root.child("DATASTORE").ok_or_else(|| {
            fail(
                ErrorKind::BadInput,
                "driver message has no DATASTORE element",
            )
        })?;
        let datastore = Datastore::from_element(ds)?;
        let image = root.child("IMAGE").map(Image::from_element).transpose()?;
        let marketplace = root.child("MARKETPLACE").map(|m| Marketplace {
            id: m.child_text("ID").and_then(|s| s.parse().ok()),
            name: m.child_text("NAME").unwrap_or_default().to_string(),
            market_mad: m.child_text("MARKET_MAD").unwrap_or_default().to_string(),
            template: m
                .child("TEMPLATE")
                .map(Template::from_element)
                .unwrap_or_default(),
        });
        let datastore_location = root
            .child_text("DATASTORE_LOCATION")
            .map(super::normalize_path);
        let monitor_vm_disks = root.child_text("MONITOR_VM_DISKS").map(|s| s.trim() == "1");
        let source_bridge_list = root
            .child_text("SOURCE_BRIDGE_LIST")
            .map(|s| s.split_whitespace().map(str::to_string).collect());
        Ok(DsMessage {
            image,
            datastore,
            marketplace,
            datastore_location,
            monitor_vm_disks,
            source_bridge_list,
        })
    }

    /// Checks that the message carries what datastore action `action` needs before anything
    /// is touched; the error names the action and the missing element.
    ///
    /// | action | needs |
    /// |---|---|
    /// | cp | IMAGE/ID, IMAGE/PATH |
    /// | mkfs | IMAGE/ID, IMAGE/SIZE |
    /// | clone | IMAGE/ID, IMAGE/PATH (the original's SOURCE), IMAGE/CLONING_ID |
    /// | rm, export | IMAGE/ID |
    /// | snap_delete, snap_revert, snap_flatten | IMAGE/ID, IMAGE/TARGET_SNAPSHOT ≥ 0 |
    /// | stat | IMAGE/PATH |
    /// | monitor | DATASTORE only (always checked by [`DsMessage::from_xml`]) |
    pub fn check_for(&self, action: &str) -> anyhow::Result<()> {
        let missing = |what: &str| {
            fail(
                ErrorKind::BadInput,
                format!("{action}: driver message has no {what}"),
            )
        };
        match action {
            "monitor" => return Ok(()),
            "stat" => {
                let image = self.require_image(action)?;
                if image.path.trim().is_empty() {
                    return Err(missing("IMAGE/PATH"));
                }
                return Ok(());
            }
            _ => {}
        }
        let image = self.require_image(action)?;
        image
            .require_id()
            .map_err(|e| fail(ErrorKind::BadInput, format!("{action}: {e:#}")))?;
        match action {
            "cp" if image.path.trim().is_empty() => Err(missing("IMAGE/PATH")),
            "mkfs" if image.size_mb.is_none() => Err(missing("IMAGE/SIZE")),
            "clone" if image.path.trim().is_empty() => Err(missing("IMAGE/PATH")),
            "clone" if image.cloning_id.is_none_or(|i| i < 0) => {
                Err(missing("IMAGE/CLONING_ID (the image to clone)"))
            }
            "snap_delete" | "snap_revert" | "snap_flatten"
                if image.target_snapshot.is_none_or(|s| s < 0) =>
            {
                Err(missing("IMAGE/TARGET_SNAPSHOT (the snapshot to act on)"))
            }
            _ => Ok(()),
        }
    }

    /// The image, or a bad-input error naming the action that needed it.
    pub fn require_image(&self, action: &str) -> anyhow::Result<&Image> {
        self.image.as_ref().ok_or_else(|| {
            fail(
                ErrorKind::BadInput,
                format!("{action}: driver message has no IMAGE element"),
            )
        })
    }
}

impl Image {
    fn from_element(e: &Element) -> anyhow::Result<Image> {
        let text = |n: &str| e.child_text(n).unwrap_or_default().to_string();
        let snapshots = e
            .child("SNAPSHOTS")
            .map(|s| {
                s.children_named("SNAPSHOT")
                    .map(|sn| {
                        Ok(ImageSnapshot {
                            id: int_field(sn, "ID", "IMAGE/SNAPSHOTS/SNAPSHOT/ID")?.unwrap_or(-1),
                            name: sn.child_text("NAME").unwrap_or_default().to_string(),
                            active: sn.child_text("ACTIVE") == Some("YES"),
                            parent: int_field(sn, "PARENT", "IMAGE/SNAPSHOTS/SNAPSHOT/PARENT")?
                                .unwrap_or(-1),
                            size_mb: uint_field(sn, "SIZE", "IMAGE/SNAPSHOTS/SNAPSHOT/SIZE")?,
                        })
                    })
                    .collect::<anyhow::Result<Vec<_>>>()
            })
            .transpose()?
            .unwrap_or_default();
        Ok(Image {
            id: int_field(e, "ID", "IMAGE/ID")?,
            uname: text("UNAME"),
            name: text("NAME"),
            image_type: int_field(e, "TYPE", "IMAGE/TYPE")?.and_then(ImageType::from_code),
            persistent: e.child_text("PERSISTENT") == Some("1"),
            source: text("SOURCE"),
            path: text("PATH"),
            format: text("FORMAT"),
            fs: text("FS"),
            size_mb: uint_field(e, "SIZE", "IMAGE/SIZE")?,
            state: int_field(e, "STATE", "IMAGE/STATE")?,
            cloning_id: int_field(e, "CLONING_ID", "IMAGE/CLONING_ID")?,
            target_snapshot: int_field(e, "TARGET_SNAPSHOT", "IMAGE/TARGET_SNAPSHOT")?,
            datastore_id: int_field(e, "DATASTORE_ID", "IMAGE/DATASTORE_ID")?,
            template: e
                .child("TEMPLATE")
                .map(Template::from_element)
                .unwrap_or_default(),
            snapshots,
        })
    }

    /// The image id, required by every action but stat.
    pub fn require_id(&self) -> anyhow::Result<i64> {
        match self.id {
            Some(id) if id >= 0 => Ok(id),
            Some(id) => Err(fail(
                ErrorKind::BadInput,
                format!("IMAGE/ID {id} is negative"),
            )),
            None => Err(fail(ErrorKind::BadInput, "driver message has no IMAGE/ID")),
        }
    }
}

impl Datastore {
    /// Parses a `<DATASTORE>` document, as `onedatastore show -x` prints it.
    pub fn from_xml(xml: &str) -> anyhow::Result<Datastore> {
        Datastore::from_element(&Element::parse_document(
            xml,
            "DATASTORE",
            "datastore document",
        )?)
    }

    fn from_element(e: &Element) -> anyhow::Result<Datastore> {
        let id = int_field(e, "ID", "DATASTORE/ID")?
            .ok_or_else(|| fail(ErrorKind::BadInput, "driver message has no DATASTORE/ID"))?;
        if id < 0 {
            return Err(fail(
                ErrorKind::BadInput,
                format!("DATASTORE/ID {id} is negative"),
            ));
        }
        let ds_type = int_field(e, "TYPE", "DATASTORE/TYPE")?.and_then(|t| match t {
            0 => Some(DatastoreType::Image),
            1 => Some(DatastoreType::System),
            2 => Some(DatastoreType::File),
            3 => Some(DatastoreType::Backup),
            _ => None,
        });
        let clusters = e
            .child("CLUSTERS")
            .map(|c| {
                c.children_named("ID")
                    .filter_map(|i| i.text.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        Ok(Datastore {
            id,
            name: e.child_text("NAME").unwrap_or_default().to_string(),
            ds_mad: e.child_text("DS_MAD").unwrap_or_default().to_string(),
            tm_mad: e.child_text("TM_MAD").unwrap_or_default().to_string(),
            base_path: e
                .child_text("BASE_PATH")
                .map(super::normalize_path)
                .unwrap_or_default(),
            ds_type,
            clusters,
            template: e
                .child("TEMPLATE")
                .map(Template::from_element)
                .unwrap_or_default(),
        })
    }

    /// `BRIDGE_LIST` hosts, in order.
    pub fn bridge_list(&self) -> Vec<String> {
        self.template
            .get("BRIDGE_LIST")
            .map(|s| s.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default()
    }
}

/// An optional integer element; present but not an integer is bad input.
fn int_field(e: &Element, name: &str, path: &str) -> anyhow::Result<Option<i64>> {
    match e.child_text(name) {
        None => Ok(None),
        Some(s) if s.trim().is_empty() => Ok(None),
        Some(s) => s.trim().parse().map(Some).map_err(|_| {
            fail(
                ErrorKind::BadInput,
                format!("{path} is {s:?}, not an integer"),
            )
        }),
    }
}

fn uint_field(e: &Element, name: &str, path: &str) -> anyhow::Result<Option<u64>> {
    match int_field(e, name, path)? {
        Some(v) if v < 0 => Err(fail(
            ErrorKind::BadInput,
            format!("{path} is negative ({v})"),
        )),
        v => Ok(v.map(|v| v as u64)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrong_root_and_missing_parts_are_named() {
        let m = |x: &str| format!("{:#}", DsMessage::from_xml(x).unwrap_err());
        assert!(m("<VM/>").contains("root element <VM>"));
        assert!(m("<DS_DRIVER_ACTION_DATA/>").contains("no DATASTORE"));
        assert!(m(
            "<DS_DRIVER_ACTION_DATA><DATASTORE><ID>x</ID></DATASTORE></DS_DRIVER_ACTION_DATA>"
        )
        .contains("DATASTORE/ID is \"x\""));
        let ok = DsMessage::from_xml(
            "<DS_DRIVER_ACTION_DATA><IMAGE><NAME>n</NAME></IMAGE><DATASTORE><ID>1</ID></DATASTORE></DS_DRIVER_ACTION_DATA>",
        )
        .unwrap();
        assert!(format!(
            "{:#}",
            ok.require_image("cp").unwrap().require_id().unwrap_err()
        )
        .contains("no IMAGE/ID"));
    }

    fn msg(image: &str, extra: &str) -> DsMessage {
        DsMessage::from_xml(&format!(
            "<DS_DRIVER_ACTION_DATA>{image}<DATASTORE><ID>101</ID></DATASTORE>{extra}</DS_DRIVER_ACTION_DATA>"
        ))
        .unwrap()
    }

    #[test]
    fn each_action_names_what_it_misses() {
        let cases: &[(&str, &str, Option<&str>)] = &[
            ("monitor", "", None),
            ("cp", "", Some("cp: driver message has no IMAGE element")),
            ("cp", "<IMAGE><PATH>/x</PATH></IMAGE>", Some("cp: driver message has no IMAGE/ID")),
            ("cp", "<IMAGE><ID>-1</ID><PATH>/x</PATH></IMAGE>", Some("cp: IMAGE/ID -1 is negative")),
            ("cp", "<IMAGE><ID>3</ID></IMAGE>", Some("cp: driver message has no IMAGE/PATH")),
            ("cp", "<IMAGE><ID>3</ID><PATH>/x</PATH></IMAGE>", None),
            ("mkfs", "<IMAGE><ID>3</ID></IMAGE>", Some("mkfs: driver message has no IMAGE/SIZE")),
            ("mkfs", "<IMAGE><ID>3</ID><SIZE>10</SIZE></IMAGE>", None),
            ("rm", "<IMAGE><ID>3</ID></IMAGE>", None),
            ("export", "<IMAGE/>", Some("export: driver message has no IMAGE/ID")),
            ("stat", "<IMAGE><SIZE/></IMAGE>", Some("stat: driver message has no IMAGE/PATH")),
            ("stat", "<IMAGE><PATH>/x</PATH></IMAGE>", None),
            (
                "clone",
                "<IMAGE><ID>4</ID><PATH>h:vg-one-1/img-one-3</PATH><CLONING_ID>-1</CLONING_ID></IMAGE>",
                Some("clone: driver message has no IMAGE/CLONING_ID (the image to clone)"),
            ),
            (
                "clone",
                "<IMAGE><ID>4</ID><PATH>h:vg-one-1/img-one-3</PATH><CLONING_ID>3</CLONING_ID></IMAGE>",
                None,
            ),
            (
                "snap_revert",
                "<IMAGE><ID>4</ID><TARGET_SNAPSHOT>-1</TARGET_SNAPSHOT></IMAGE>",
                Some("snap_revert: driver message has no IMAGE/TARGET_SNAPSHOT (the snapshot to act on)"),
            ),
            ("snap_flatten", "<IMAGE><ID>4</ID><TARGET_SNAPSHOT>0</TARGET_SNAPSHOT></IMAGE>", None),
        ];
        for (action, image, want) in cases {
            let got = msg(image, "").check_for(action);
            match want {
                None => assert!(got.is_ok(), "{action} {image}: {got:?}"),
                Some(w) => {
                    let e = got.unwrap_err();
                    assert_eq!(crate::error::exit_code(&e), 2);
                    assert_eq!(format!("{e:#}"), *w);
                }
            }
        }
    }

    #[test]
    fn extra_elements_and_escaped_values() {
        let m = msg(
            "<IMAGE><ID>4</ID><PATH>https://h/a?b=1&amp;c=&lt;2&gt;</PATH><TEMPLATE><MD5><![CDATA[ab&cd]]></MD5><SHA1>e&amp;f</SHA1></TEMPLATE></IMAGE>",
            "<MARKETPLACE><ID>2</ID><NAME>OpenNebula Public</NAME><MARKET_MAD><![CDATA[one]]></MARKET_MAD>\
             <TEMPLATE><ENDPOINT>https://marketplace.opennebula.io</ENDPOINT></TEMPLATE></MARKETPLACE>\
             <SOURCE_BRIDGE_LIST>kvm1  kvm2\nkvm3</SOURCE_BRIDGE_LIST><UNKNOWN_FUTURE_ELEMENT><X/></UNKNOWN_FUTURE_ELEMENT>",
        );
        let i = m.image.as_ref().unwrap();
        assert_eq!(i.path, "https://h/a?b=1&c=<2>");
        assert_eq!(i.template.get("MD5"), Some("ab&cd"));
        assert_eq!(i.template.get("SHA1"), Some("e&f"));
        let mp = m.marketplace.as_ref().unwrap();
        assert_eq!(
            (mp.id, mp.name.as_str(), mp.market_mad.as_str()),
            (Some(2), "OpenNebula Public", "one")
        );
        assert_eq!(
            mp.template.get("ENDPOINT"),
            Some("https://marketplace.opennebula.io")
        );
        assert_eq!(
            m.source_bridge_list.as_deref(),
            Some(&["kvm1".to_string(), "kvm2".into(), "kvm3".into()][..])
        );
    }

    #[test]
    fn malformed_numbers_are_named() {
        let m = |image: &str| {
            let e = DsMessage::from_xml(&format!(
                "<DS_DRIVER_ACTION_DATA>{image}<DATASTORE><ID>1</ID></DATASTORE></DS_DRIVER_ACTION_DATA>"
            ))
            .unwrap_err();
            assert_eq!(crate::error::exit_code(&e), 2);
            format!("{e:#}")
        };
        assert_eq!(
            m("<IMAGE><ID>7a</ID></IMAGE>"),
            "IMAGE/ID is \"7a\", not an integer"
        );
        assert_eq!(
            m("<IMAGE><SIZE>-5</SIZE></IMAGE>"),
            "IMAGE/SIZE is negative (-5)"
        );
        assert_eq!(
            m("<IMAGE><SNAPSHOTS><SNAPSHOT><ID>x</ID></SNAPSHOT></SNAPSHOTS></IMAGE>"),
            "IMAGE/SNAPSHOTS/SNAPSHOT/ID is \"x\", not an integer"
        );
    }
}
