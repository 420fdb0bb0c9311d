//! The real-kernel tier: simulated hosts that are QEMU (TCG) guests running Debian bookworm's
//! cloud kernel, with real device-mapper, LVM activation, thin pools and udev.
//!
//! - [`image`]: the guest image, built from Debian's packages by `scripts/rk-image` and cached
//!   outside the repository with a golden RAM snapshot (a guest is ready in ~3 s).
//! - [`guest`]: the machine's command line, restoring a guest, its ssh and its end.
//! - [`hotplug`]: LinkVolume / UnlinkVolume as QMP hot-plug of the volume's sparse file.
//! - [`qmp`]: the QMP client; [`relay`]: how a guest reaches the simulated cloud.
//!
//! The testbed selects this tier with `Tier::Rk` (tests: `BSUD_TIER=rk`); docs/ARCHITECTURE.md
//! ("Real-kernel tier") describes the layout.

pub mod guest;
pub mod hotplug;
pub mod image;
pub mod qmp;
pub mod relay;
