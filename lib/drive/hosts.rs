//! [`HostApi`] over the host agent client: the engine's view of a host, built from the
//! agent's reports.

use std::collections::BTreeMap;

use super::engine::{HostApi, HostIdentity, LvView, PvView, VgView};
use crate::host::client::HostClient;
use crate::host::proto::{BsuDeviceName, VgReport};
use crate::lvm::names::{DevicePath, LvName, VgName};

fn serial_suffix(serial: &str) -> Option<String> {
    serial.strip_prefix("sd").map(str::to_string)
}

impl From<VgReport> for VgView {
    fn from(r: VgReport) -> VgView {
        let devices: BTreeMap<String, String> = r
            .bsu_devices
            .iter()
            .filter_map(|d| Some((serial_suffix(&d.serial)?, d.path.clone())))
            .collect();
        VgView {
            exists: r.vg.is_some(),
            size: r.vg.as_ref().map(|v| v.size).unwrap_or(0),
            free: r.vg.as_ref().map(|v| v.free).unwrap_or(0),
            lv_count: r.lvs.len(),
            // Thin volumes live in the pool, which is counted by its size.
            lv_bytes: r.lvs.iter().filter(|l| !l.is_thin()).map(|l| l.size).sum(),
            lvs: r
                .lvs
                .iter()
                .map(|l| LvView {
                    name: l.name.clone(),
                    size: l.size,
                    tags: l.tags.clone(),
                })
                .collect(),
            pvs: r
                .pvs
                .iter()
                .map(|p| PvView {
                    device: p.pv.name.clone(),
                    size: p.pv.size,
                    free: p.pv.free,
                    allocated_extents: p.pv.pe_alloc_count,
                    serial: p.serial.as_deref().and_then(serial_suffix),
                })
                .collect(),
            orphan_pvs: r.orphan_pvs.iter().map(|p| p.pv.name.clone()).collect(),
            devices,
            tags: r.vg.as_ref().map(|v| v.tags.clone()).unwrap_or_default(),
        }
    }
}

impl HostApi for HostClient {
    fn identity(&self, host: &str) -> anyhow::Result<HostIdentity> {
        let id = HostClient::identity(self, host)?;
        Ok(HostIdentity {
            vm_id: id.vm_id,
            subregion: id.subregion,
        })
    }

    fn vg_report(&self, host: &str, vg: &str) -> anyhow::Result<VgView> {
        let vg: VgName = vg.parse()?;
        Ok(HostClient::vg_report(self, host, &vg)?.into())
    }

    fn wait_device(&self, host: &str, device: &str) -> anyhow::Result<String> {
        let name: BsuDeviceName = device.parse()?;
        Ok(HostClient::wait_device(self, host, &name)?.path)
    }

    fn pv_add(&self, host: &str, vg: &str, device_path: &str, fresh: bool) -> anyhow::Result<()> {
        let vg: VgName = vg.parse()?;
        let dev: DevicePath = device_path.parse()?;
        HostClient::pv_add(self, host, &vg, &dev, fresh)?;
        Ok(())
    }

    fn pv_remove(&self, host: &str, vg: &str, device_path: &str) -> anyhow::Result<()> {
        let vg: VgName = vg.parse()?;
        let dev: DevicePath = device_path.parse()?;
        HostClient::pv_remove(self, host, &vg, &dev)?;
        Ok(())
    }

    fn lv_remove(&self, host: &str, vg: &str, lv: &str) -> anyhow::Result<()> {
        let vg: VgName = vg.parse()?;
        let lv: LvName = lv.parse()?;
        HostClient::lv_remove(self, host, &vg, &lv, &[])?;
        Ok(())
    }

    fn set_growth_limit(&self, host: &str, vg: &str, max_size_gib: u64) -> anyhow::Result<()> {
        let vg: VgName = vg.parse()?;
        HostClient::vg_limit(self, host, &vg, max_size_gib)?;
        Ok(())
    }
}
