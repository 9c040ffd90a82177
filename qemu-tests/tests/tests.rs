//! Tests of real images under `qemu-system-x86_64 -accel tcg`. One binary, a
//! module per concept; one test's VMs at a time ([`images::vm_lock`]).

mod boot;
mod boot_time;
mod cluster;
mod images;
mod kubernetes;
