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
    if let Ok(out) = vm.exec("/bin/sh", &["-c", UNIT_CPU], EXEC) {
        let units = cpu_by_unit(&out.stdout);
        let total: f64 = units.iter().map(|(_, s)| s).sum();
        text += &format!(
            "--- CPU time by unit ({total:.1} s in all; the initrd's and the booted system's runs of a unit added up)\n"
        );
        for (unit, seconds) in units.iter().take(20) {
            text += &format!("{seconds:6.2} s {unit}\n");
        }
    }
    // The kernel modules the boot loaded (udev's coldplug loads one for
    // every device and CPU feature it has a driver for; under TCG each load
    // costs its decompression, signature check and initialisation, charged
    // to udevd).
    if let Ok(out) = vm.exec("/usr/bin/cat", &["/proc/modules"], EXEC) {
        let mut modules: Vec<(&str, u64)> = out
            .stdout
            .lines()
            .filter_map(|l| {
                let mut fields = l.split_whitespace();
                Some((fields.next()?, fields.next()?.parse().ok()?))
            })
            .collect();
        modules.sort_by_key(|m| std::cmp::Reverse(m.1));
        let total: u64 = modules.iter().map(|m| m.1).sum();
        let names: Vec<String> = modules
            .iter()
            .map(|(name, size)| format!("{name} ({} KiB)", size / 1024))
            .collect();
        text += &format!(
            "--- kernel modules loaded: {} ({} KiB): {}\n",
            modules.len(),
            total / 1024,
            names.join(", ")
        );
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

/// What each unit's processes consumed: PID 1's `Consumed ... CPU time`
/// lines for units that stopped (the initrd's included: they stop at the
/// switch to the real root), and the cgroup's `usage_usec` for those still
/// running.
const UNIT_CPU: &str = "journalctl -b -o cat _PID=1 | grep ': Consumed .* CPU time'; \
    for d in /sys/fs/cgroup/system.slice/*/ /sys/fs/cgroup/init.scope/; do \
    echo \"cgroup $(basename \"$d\") $(sed -n 's/^usage_usec //p' \"$d/cpu.stat\")\"; done";

/// The units of [`UNIT_CPU`]'s output with their CPU seconds, most first.
fn cpu_by_unit(out: &str) -> Vec<(String, f64)> {
    let mut units: Vec<(String, f64)> = Vec::new();
    for line in out.lines() {
        let parsed = if let Some(rest) = line.strip_prefix("cgroup ") {
            rest.split_once(' ')
                .and_then(|(unit, usec)| Some((unit, usec.trim().parse::<f64>().ok()? / 1e6)))
        } else {
            line.split_once(": Consumed ").and_then(|(unit, rest)| {
                let span = rest.split(" CPU time").next()?;
                Some((unit, timespan_seconds(span)?))
            })
        };
        let Some((unit, seconds)) = parsed else {
            continue;
        };
        match units.iter_mut().find(|(u, _)| u == unit) {
            Some((_, total)) => *total += seconds,
            None => units.push((unit.to_owned(), seconds)),
        }
    }
    units.sort_by(|a, b| b.1.total_cmp(&a.1));
    units
}

/// systemd's time span (`545ms`, `3.570s`, `1min 2.345s`) in seconds.
fn timespan_seconds(span: &str) -> Option<f64> {
    span.split_whitespace().try_fold(0.0, |total, part| {
        let digits = part.trim_end_matches(|c: char| c.is_ascii_alphabetic());
        let value: f64 = digits.parse().ok()?;
        let scale = match &part[digits.len()..] {
            "h" => 3600.0,
            "min" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" => 1e-6,
            _ => return None,
        };
        Some(total + value * scale)
    })
}

#[test]
fn cpu_by_unit_adds_stopped_and_running_units() {
    let out = "systemd-udevd.service: Consumed 3.570s CPU time.\n\
        modprobe@loop.service: Consumed 545ms CPU time.\n\
        systemd-udevd.service: Consumed 1min 2.5s CPU time.\n\
        cgroup systemd-udevd.service 1500000\n\
        cgroup init.scope 4000000\n\
        cgroup broken.service \n\
        noise: Consumed lots CPU time.\n";
    let units = cpu_by_unit(out);
    assert_eq!(units.len(), 3, "{units:?}");
    assert_eq!(units[0].0, "systemd-udevd.service");
    assert!((units[0].1 - 67.57).abs() < 1e-9, "{units:?}");
    assert_eq!(units[1], ("init.scope".to_owned(), 4.0));
    assert_eq!(units[2], ("modprobe@loop.service".to_owned(), 0.545));
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
