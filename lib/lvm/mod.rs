//! Typed LVM commands and their JSON reports.
