//! The host-to-host data stream: framed, sparse, checksummed, optionally compressed.
