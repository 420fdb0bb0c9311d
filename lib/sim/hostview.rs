//! A simulated host's view: its root directory, private LVM configuration, device links.

use crate::error::ErrorKind;

/// Makes `volume_file` appear on the simulated host rooted at `host_root` as the BSU linked
/// under `device` ("/dev/xvdb"): loop device, by-id link, LVM filter. Idempotent.
pub fn attach_volume(
    host_root: &std::path::Path,
    device: &str,
    volume_file: &std::path::Path,
) -> anyhow::Result<()> {
    let _ = (host_root, device, volume_file);
    Err(crate::error::fail(
        ErrorKind::NotImplemented,
        "hostview::attach_volume: not implemented yet",
    ))
}

/// Reverses attach_volume. Idempotent (absent = done).
pub fn detach_volume(
    host_root: &std::path::Path,
    device: &str,
    volume_file: &std::path::Path,
) -> anyhow::Result<()> {
    let _ = (host_root, device, volume_file);
    Err(crate::error::fail(
        ErrorKind::NotImplemented,
        "hostview::detach_volume: not implemented yet",
    ))
}
