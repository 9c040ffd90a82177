//! Issue 19: where a boot's time goes. Ignored by default (it is a
//! benchmark, not a check); run it with
//!
//! ```text
//! cargo test --release -p qemu-tests --test tests -- --ignored boot_time --nocapture --test-threads=1
//! ```
//!
//! It boots, one VM at a time, a worker image under UEFI and with a direct
//! kernel boot (first boots), the same UEFI disk again (second boot), and a
//! bootstrap control plane from its cidata seed, and prints for each the
//! time from QEMU's start to the boot report (or the agent's `enrolled`)
//! and `systemd-analyze time`, `critical-chain` and the head of `blame` from
//! inside the guest (the initrd's units included: systemd hands its
//! timestamps over at switch-root).

use std::path::Path;
use std::time::Duration;

use qemu_tests::{overlay, Firmware, Vm, VmBuilder};

use crate::boot::{BOOT_TIMEOUT, DISK_SIZE};
use crate::images::{bootstrap_seed, image, record, run_dir, vm_lock, Image, VERSION};

const EXEC: Duration = Duration::from_secs(120);

/// Prints what systemd says about the boot that just completed (the units
/// of `blame`, not the devices), and keeps the boot's journal, with
/// monotonic timestamps, in `dir`.
fn analyze(vm: &mut Vm, what: &str, dir: &Path) {
    let mut text = format!("=== {what}\n");
    // The guest's CPU time so far (all vCPUs, idle excluded): the work the
    // boot did, however well it ran in parallel. Under TCG it drifts with
    // the host's speed like the wall clock does.
    if let Ok(out) = vm.exec("/usr/bin/cat", &["/proc/stat"], EXEC) {
        if let Some(busy) = busy_seconds(&out.stdout) {
            text += &format!("--- guest CPU time since the kernel started: {busy:.1} s\n");
        }
    }
    for args in [
        &["time"][..],
        &["critical-chain", "--no-pager"][..],
        &["blame", "--no-pager"][..],
    ] {
        match vm.exec("/usr/bin/systemd-analyze", args, EXEC) {
            Ok(out) => {
                let lines: Vec<&str> = out
                    .stdout
                    .lines()
                    .filter(|l| !l.ends_with(".device"))
                    .take(30)
                    .collect();
                text += &format!("--- systemd-analyze {}\n{}\n", args[0], lines.join("\n"));
                if out.code != 0 {
                    text += &format!("(exit {}: {})\n", out.code, out.stderr.trim());
                }
            }
            Err(err) => text += &format!("--- systemd-analyze {}: {err:#}\n", args[0]),
        }
    }
    show(&text);
    let journal = vm.exec(
        "/usr/bin/journalctl",
        &["-b", "--no-pager", "-o", "short-monotonic"],
        EXEC,
    );
    if let Ok(out) = journal {
        let file = dir.join(format!("{}.journal.txt", what.replace([' ', ','], "_")));
        let _ = std::fs::write(file, out.stdout);
    }
}

/// The busy CPU seconds in `/proc/stat`'s `cpu` line: user, nice, system,
/// irq and softirq, in USER_HZ (100 on x86-64).
fn busy_seconds(stat: &str) -> Option<f64> {
    let fields: Vec<u64> = stat
        .lines()
        .next()?
        .strip_prefix("cpu ")?
        .split_whitespace()
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    let busy: u64 = [0, 1, 2, 5, 6].iter().filter_map(|&i| fields.get(i)).sum();
    Some(busy as f64 / 100.0)
}

/// The package run's log line once kube-apiserver's `/readyz` said ok
/// (firstboot/src/package/health.rs), on the console.
const KUBERNETES_READY: &str = "health check kube-apiserver passed";

/// Whether the boot `name` is to run (`GLOBULAR_BOOT_TIME=worker-uefi,cp`
/// picks some; unset, all).
fn wanted(name: &str) -> bool {
    std::env::var("GLOBULAR_BOOT_TIME").map_or(true, |v| v.split(',').any(|w| w == name))
}

fn fresh_disk(image: &Image, dir: &Path, name: &str) -> std::path::PathBuf {
    let disk = dir.join(format!("{name}.qcow2"));
    overlay(&image.disk, "raw", &disk, DISK_SIZE).unwrap();
    disk
}

/// A benchmark's output is its figures: printed (`--nocapture` shows them).
#[allow(clippy::print_stdout)]
fn show(text: &str) {
    println!("{text}");
}

fn figure(text: String) {
    show(&text);
    record(&text);
}

#[test]
#[ignore = "benchmark: run with --ignored boot_time --nocapture"]
fn boot_time_breakdown() {
    let worker = image("worker", VERSION);
    let cp = image("control-plane", VERSION);
    let _vm = vm_lock();
    let dir = run_dir();

    // Worker, UEFI, first and second boot.
    let disk = fresh_disk(&worker, dir.path(), "worker");
    for boots in [1, 2].into_iter().filter(|_| wanted("worker-uefi")) {
        let mut vm = VmBuilder::new("worker")
            .disk(&disk, "qcow2")
            .guest_agent()
            .work_dir(dir.path().join(format!("uefi-{boots}")))
            .start()
            .unwrap();
        let t = vm
            .wait_for(&worker.boot_report("/dev/vda6", boots), BOOT_TIMEOUT)
            .unwrap();
        figure(format!(
            "boot time: worker, UEFI, boot {boots}: QEMU start to the boot report {:.1} s",
            t.as_secs_f64()
        ));
        analyze(&mut vm, &format!("worker, UEFI, boot {boots}"), dir.path());
        vm.powerdown(Duration::from_secs(120)).unwrap();
    }

    // Worker, direct kernel, first boot.
    if wanted("worker-direct") {
        direct(&worker, dir.path());
    }
    if wanted("cp") {
        control_plane(&cp, dir.path());
    }
}

fn direct(worker: &Image, dir: &Path) {
    let disk = fresh_disk(worker, dir, "direct");
    let (kernel, initrd, cmdline) = worker.direct_kernel(dir).unwrap();
    let mut vm = VmBuilder::new("direct")
        .firmware(Firmware::Bios)
        .direct_kernel(&kernel, Some(initrd), &cmdline)
        .disk(&disk, "qcow2")
        .guest_agent()
        .work_dir(dir.join("direct"))
        .start()
        .unwrap();
    let t = vm
        .wait_for(&worker.boot_report("/dev/vda6", 1), BOOT_TIMEOUT)
        .unwrap();
    figure(format!(
        "boot time: worker, direct kernel, boot 1: QEMU start to the boot report {:.1} s",
        t.as_secs_f64()
    ));
    analyze(&mut vm, "worker, direct kernel, boot 1", dir);
}

/// A bootstrap control plane alone, UEFI, from its cidata seed.
fn control_plane(cp: &Image, dir: &Path) {
    let seed = bootstrap_seed(dir);
    let disk = fresh_disk(cp, dir, "cp-1");
    let mut vm = VmBuilder::new("cp-1")
        .disk(&disk, "qcow2")
        .disk_read_only(&seed, "raw")
        .netdev("user,id=net0,restrict=on")
        .guest_agent()
        .work_dir(dir.join("cp-1"))
        .start()
        .unwrap();
    let t = vm
        .wait_for("checkpoint enrolled", BOOT_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e:#}\n{}", vm.tail()));
    figure(format!(
        "boot time: bootstrap control plane, UEFI, boot 1: QEMU start to the agent's enrolled {:.1} s",
        t.as_secs_f64()
    ));
    analyze(&mut vm, "bootstrap control plane, UEFI, boot 1", dir);
    // Then Kubernetes' control plane, which the agent applies after
    // enrollment (globular-packages.service): its apiserver's /readyz.
    let k = vm
        .wait_for(KUBERNETES_READY, Duration::from_secs(1800))
        .unwrap_or_else(|e| panic!("{e:#}\n{}", vm.tail()));
    figure(format!(
        "bootstrap control plane alone: QEMU start to Kubernetes' /readyz {:.1} s ({:.1} s after enrolled)",
        k.as_secs_f64(),
        (k - t).as_secs_f64()
    ));
}
