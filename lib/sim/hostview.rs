//! A simulated host's view: its root directory, private LVM configuration, device links.
