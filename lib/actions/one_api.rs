//! Reading OpenNebula objects the TM argv does not carry (disk sizes, volatile FS, a system
//! datastore's `BSUD_*` attributes) through the CLI oned's own drivers use: `onevm show -x`
//! and `onedatastore show -x`, run as oneadmin on the frontend. The commands are configurable
//! (`onevm_command`, `onedatastore_command`); the testbed answers them from XML files.
//! Results are cached for the life of the process (one action).

use std::collections::BTreeMap;
use std::sync::Mutex;

use anyhow::Context;

use crate::config::Config;
use crate::error::{fail, ErrorKind};
use crate::exec::{self, Cmd};
use crate::one::message::Datastore;
use crate::one::vm::VmXml;

/// The OpenNebula lookups.
#[derive(Debug, Default)]
pub struct OneApi {
    vms: Mutex<BTreeMap<i64, VmXml>>,
    datastores: Mutex<BTreeMap<i64, Datastore>>,
}

fn command(argv: &[String], id: i64, config: &Config) -> anyhow::Result<String> {
    let (prog, rest) = argv
        .split_first()
        .ok_or_else(|| fail(ErrorKind::Config, "an OpenNebula lookup command is empty"))?;
    let out = exec::run(
        &Cmd::new(prog)
            .args(rest)
            .arg(id.to_string())
            .timeout(config.timeouts.command),
    )?;
    Ok(out.stdout_str())
}

impl OneApi {
    /// The VM document of `id`.
    pub fn vm(&self, config: &Config, id: i64) -> anyhow::Result<VmXml> {
        if let Some(v) = self.vms.lock().ok().and_then(|m| m.get(&id).cloned()) {
            return Ok(v);
        }
        let xml = command(&config.onevm_command, id, config)
            .with_context(|| format!("reading VM {id} from OpenNebula"))?;
        let vm =
            VmXml::from_xml(&xml).with_context(|| format!("reading VM {id} from OpenNebula"))?;
        if let Ok(mut m) = self.vms.lock() {
            m.insert(id, vm.clone());
        }
        Ok(vm)
    }

    /// The datastore document of `id`.
    pub fn datastore(&self, config: &Config, id: i64) -> anyhow::Result<Datastore> {
        if let Some(d) = self
            .datastores
            .lock()
            .ok()
            .and_then(|m| m.get(&id).cloned())
        {
            return Ok(d);
        }
        let xml = command(&config.onedatastore_command, id, config)
            .with_context(|| format!("reading datastore {id} from OpenNebula"))?;
        let ds = Datastore::from_xml(&xml)
            .with_context(|| format!("reading datastore {id} from OpenNebula"))?;
        if let Ok(mut m) = self.datastores.lock() {
            m.insert(id, ds.clone());
        }
        Ok(ds)
    }
}
