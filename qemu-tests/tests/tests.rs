//! Boot tests under `qemu-system-x86_64 -accel tcg`. One binary, a module per
//! concept; VMs run one at a time ([`fixture::vm_lock`]).

mod boot;
mod fixture;
