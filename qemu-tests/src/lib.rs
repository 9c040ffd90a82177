//! A QEMU harness for boot tests of Globular images.
//!
//! [`VmBuilder`] starts `qemu-system-x86_64 -accel tcg` (KVM is not usable on
//! the build machines) with UEFI firmware (OVMF, with a private copy of the
//! variable store) or a direct kernel boot, no display and no monitor, and the
//! serial console written to a file. [`Vm::wait_for`] and
//! [`Vm::wait_for_all`] poll that file for markers with a timeout, wherever
//! they are in this boot's console (lines of the kernel, PID 1 and journald
//! come in no promised order); every error carries the tail of the console
//! log. A
//! [`Vm`] kills its QEMU process (by its own PID) when dropped, so a failing
//! test never leaves a VM behind.
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! use std::time::Duration;
//! let mut vm = qemu_tests::VmBuilder::new("worker")
//!     .disk("disk.qcow2", "qcow2")
//!     .start()?;
//! vm.wait_for("Reached target multi-user.target", Duration::from_secs(300))?;
//! vm.powerdown(Duration::from_secs(60))?;
//! # Ok(()) }
//! ```

use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use globular_task::Task;

mod console;
mod guest;
mod network;

use console::{Console, Need};

pub use guest::Output;
pub use network::Network;

/// Debian's OVMF (package `ovmf`).
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE.fd";
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS.fd";

/// How many bytes of the console log an error shows.
const TAIL: usize = 3000;

/// The firmware a VM boots with.
#[derive(Debug, Clone)]
pub enum Firmware {
    /// UEFI: OVMF code (read-only) plus a private copy of the variable template.
    Ovmf {
        code: PathBuf,
        vars_template: PathBuf,
    },
    /// QEMU's default BIOS (SeaBIOS), for direct kernel boots.
    Bios,
}

impl Default for Firmware {
    fn default() -> Firmware {
        Firmware::Ovmf {
            code: OVMF_CODE.into(),
            vars_template: OVMF_VARS.into(),
        }
    }
}

#[derive(Debug, Clone)]
struct Drive {
    path: PathBuf,
    format: String,
    read_only: bool,
}

#[derive(Debug, Clone)]
struct DirectKernel {
    kernel: PathBuf,
    initrd: Option<PathBuf>,
    append: String,
}

/// Describes a VM; [`VmBuilder::start`] launches it.
#[derive(Debug, Clone)]
pub struct VmBuilder {
    name: String,
    memory_mib: u32,
    cpus: u32,
    firmware: Firmware,
    drives: Vec<Drive>,
    kernel: Option<DirectKernel>,
    netdevs: Vec<String>,
    guest_agent: bool,
    extra: Vec<String>,
    work_dir: Option<PathBuf>,
}

impl VmBuilder {
    /// `name` appears in logs and file names.
    pub fn new(name: &str) -> VmBuilder {
        VmBuilder {
            name: name.to_owned(),
            memory_mib: 2048,
            cpus: 2,
            firmware: Firmware::default(),
            drives: Vec::new(),
            kernel: None,
            netdevs: Vec::new(),
            guest_agent: false,
            extra: Vec::new(),
            work_dir: None,
        }
    }

    pub fn memory_mib(mut self, mib: u32) -> VmBuilder {
        self.memory_mib = mib;
        self
    }

    pub fn cpus(mut self, cpus: u32) -> VmBuilder {
        self.cpus = cpus;
        self
    }

    pub fn firmware(mut self, firmware: Firmware) -> VmBuilder {
        self.firmware = firmware;
        self
    }

    /// Adds a virtio disk (`format`: `raw` or `qcow2`). Drives appear in order
    /// (`/dev/vda`, `/dev/vdb`, ...).
    pub fn disk(mut self, path: impl Into<PathBuf>, format: &str) -> VmBuilder {
        self.drives.push(Drive {
            path: path.into(),
            format: format.to_owned(),
            read_only: false,
        });
        self
    }

    /// Adds a read-only virtio disk (a seed drive, say).
    pub fn disk_read_only(mut self, path: impl Into<PathBuf>, format: &str) -> VmBuilder {
        self.drives.push(Drive {
            path: path.into(),
            format: format.to_owned(),
            read_only: true,
        });
        self
    }

    /// Boots `kernel` directly (`-kernel/-initrd/-append`) instead of from disk.
    pub fn direct_kernel(
        mut self,
        kernel: impl Into<PathBuf>,
        initrd: Option<PathBuf>,
        append: &str,
    ) -> VmBuilder {
        self.kernel = Some(DirectKernel {
            kernel: kernel.into(),
            initrd,
            append: append.to_owned(),
        });
        self
    }

    /// Adds a virtio NIC on a QEMU netdev, e.g.
    /// `socket,id=n0,listen=127.0.0.1:40001` (only loopback networks in tests).
    /// The builder assigns the device; `netdev` must carry `id=`.
    pub fn netdev(mut self, netdev: &str) -> VmBuilder {
        self.netdevs.push(netdev.to_owned());
        self
    }

    /// Adds the virtio-serial port of the QEMU guest agent, so that
    /// [`Vm::exec`] can run commands in the guest (the image must carry
    /// `qemu-guest-agent`).
    pub fn guest_agent(mut self) -> VmBuilder {
        self.guest_agent = true;
        self
    }

    /// Extra QEMU arguments (e.g. `-fw_cfg name=...,file=...`).
    pub fn arg(mut self, arg: &str) -> VmBuilder {
        self.extra.push(arg.to_owned());
        self
    }

    /// Where the console log, QEMU's own log and the firmware variables go
    /// (default: a new temporary directory, removed with the VM).
    pub fn work_dir(mut self, dir: impl Into<PathBuf>) -> VmBuilder {
        self.work_dir = Some(dir.into());
        self
    }

    /// The QEMU command line for a VM whose files live in `dir` and whose
    /// control sockets live in `sockets`.
    fn args(&self, dir: &Path, sockets: &Path) -> anyhow::Result<Vec<String>> {
        let serial = dir.join(format!("{}.serial.log", self.name));
        let mut args: Vec<String> = vec![
            "-name".into(),
            self.name.clone(),
            "-accel".into(),
            "tcg".into(),
            "-machine".into(),
            "q35".into(),
            "-cpu".into(),
            "max".into(),
            "-m".into(),
            self.memory_mib.to_string(),
            "-smp".into(),
            self.cpus.to_string(),
            "-display".into(),
            "none".into(),
            "-monitor".into(),
            "none".into(),
            "-serial".into(),
            format!("file:{}", serial.display()),
            "-qmp".into(),
            format!(
                "unix:{},server=on,wait=off",
                sockets.join("qmp.sock").display()
            ),
            "-no-user-config".into(),
            "-nodefaults".into(),
        ];
        if let Firmware::Ovmf {
            code,
            vars_template,
        } = &self.firmware
        {
            let vars = dir.join("OVMF_VARS.fd");
            std::fs::copy(vars_template, &vars).with_context(|| {
                format!(
                    "copying {} (install the Debian package `ovmf`)",
                    vars_template.display()
                )
            })?;
            args.push("-drive".into());
            args.push(format!(
                "if=pflash,format=raw,unit=0,readonly=on,file={}",
                code.display()
            ));
            args.push("-drive".into());
            args.push(format!(
                "if=pflash,format=raw,unit=1,file={}",
                vars.display()
            ));
        }
        for (i, d) in self.drives.iter().enumerate() {
            args.push("-drive".into());
            args.push(format!(
                "file={},format={},if=virtio,index={i},cache=unsafe{}",
                d.path.display(),
                d.format,
                if d.read_only { ",readonly=on" } else { "" }
            ));
        }
        if let Some(k) = &self.kernel {
            args.push("-kernel".into());
            args.push(k.kernel.display().to_string());
            if let Some(initrd) = &k.initrd {
                args.push("-initrd".into());
                args.push(initrd.display().to_string());
            }
            args.push("-append".into());
            args.push(k.append.clone());
        }
        if self.netdevs.is_empty() {
            args.push("-nic".into());
            args.push("none".into());
        }
        for (i, netdev) in self.netdevs.iter().enumerate() {
            let id = netdev
                .split(',')
                .find_map(|kv| kv.strip_prefix("id="))
                .with_context(|| format!("netdev `{netdev}` has no id="))?;
            args.push("-netdev".into());
            args.push(netdev.clone());
            args.push("-device".into());
            args.push(format!("virtio-net-pci,netdev={id},mac={}", self.mac(i)));
        }
        if self.guest_agent {
            args.extend([
                "-chardev".into(),
                format!(
                    "socket,path={},server=on,wait=off,id=ga0",
                    sockets.join("guest-agent.sock").display()
                ),
                "-device".into(),
                "virtio-serial-pci".into(),
                "-device".into(),
                "virtserialport,chardev=ga0,name=org.qemu.guest_agent.0".into(),
            ]);
        }
        args.extend(self.extra.iter().cloned());
        Ok(args)
    }

    /// The MAC address of NIC `index`: QEMU's prefix, then bytes derived from
    /// the VM's name, so VMs on one network never share an address.
    fn mac(&self, index: usize) -> String {
        // FNV-1a: stable across runs and Rust versions.
        let hash = self.name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        let b = hash.to_be_bytes();
        format!(
            "52:54:00:{:02x}:{:02x}:{:02x}",
            b[0],
            b[1],
            b[2] ^ index as u8
        )
    }

    /// Starts QEMU. The returned [`Vm`] owns the process and kills it on drop.
    pub fn start(self) -> anyhow::Result<Vm> {
        let (temp, dir) = match &self.work_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
                (None, dir.clone())
            }
            None => {
                let temp = tempfile::Builder::new()
                    .prefix(&format!("qemu-{}-", self.name))
                    .tempdir()
                    .context("creating the VM directory")?;
                let dir = temp.path().to_owned();
                (Some(temp), dir)
            }
        };
        let serial = dir.join(format!("{}.serial.log", self.name));
        // QEMU truncates the log: keep an earlier boot's console (a VM
        // restarted in the same directory) as NAME.serial.N.log.
        if serial.exists() {
            let kept = (1..)
                .map(|n| dir.join(format!("{}.serial.{n}.log", self.name)))
                .find(|p| !p.exists())
                .expect("some free name");
            std::fs::rename(&serial, &kept)
                .with_context(|| format!("keeping {}", serial.display()))?;
        }
        let qemu_log = dir.join(format!("{}.qemu.log", self.name));
        // Unix socket paths are limited to 108 bytes: the sockets go to a
        // short directory of their own, not under a deep checkout.
        let sockets = tempfile::Builder::new()
            .prefix("globular-vm-")
            .tempdir()
            .context("creating the VM's socket directory")?;
        let args = self.args(&dir, sockets.path())?;
        let child = Task::new(format!("running VM {}", self.name), "qemu-system-x86_64")
            .package("qemu-system-x86")
            .args(&args)
            .spawn_logged(&qemu_log)?;
        tracing::info!(
            "started VM {} (pid {}), console {}",
            self.name,
            child.id(),
            serial.display()
        );
        Ok(Vm {
            name: self.name,
            child: Some(child),
            console: Console::new(serial, Instant::now()),
            qemu_log,
            qmp: sockets.path().join("qmp.sock"),
            guest_agent: self
                .guest_agent
                .then(|| sockets.path().join("guest-agent.sock")),
            _sockets: sockets,
            _temp: temp,
        })
    }
}

/// A running VM. Dropping it kills QEMU.
#[derive(Debug)]
pub struct Vm {
    name: String,
    child: Option<Child>,
    console: Console,
    qemu_log: PathBuf,
    qmp: PathBuf,
    guest_agent: Option<PathBuf>,
    _sockets: tempfile::TempDir,
    _temp: Option<tempfile::TempDir>,
}

impl Vm {
    /// The serial console log file.
    pub fn serial_path(&self) -> &Path {
        self.console.path()
    }

    /// Everything the console printed so far in this boot (lossy UTF-8).
    pub fn console(&self) -> String {
        String::from_utf8_lossy(&self.console.bytes()).into_owned()
    }

    /// The last few KiB of the console and of QEMU's own output.
    pub fn tail(&self) -> String {
        let console = self.console();
        let mut start = console.len().saturating_sub(TAIL);
        while !console.is_char_boundary(start) {
            start += 1;
        }
        let qemu = std::fs::read_to_string(&self.qemu_log).unwrap_or_default();
        let mut out = format!(
            "--- console of VM {} ({}), last {} bytes ---\n{}",
            self.name,
            self.serial_path().display(),
            console.len() - start,
            &console[start..]
        );
        if !qemu.trim().is_empty() {
            out.push_str(&format!("\n--- qemu output ---\n{}", qemu.trim()));
        }
        out
    }

    /// Sets the nice value of every thread of the VM's QEMU process
    /// (`renice`; a thread's value is its own, and the threads QEMU starts
    /// later take their creator's).
    pub fn set_nice(&self, nice: i32) -> anyhow::Result<()> {
        let Some(child) = &self.child else {
            return Ok(());
        };
        let dir = format!("/proc/{}/task", child.id());
        let threads: Vec<String> = std::fs::read_dir(&dir)
            .with_context(|| format!("reading {dir}"))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        Task::new(format!("renicing VM {}", self.name), "renice")
            .package("util-linux")
            .args(["-n", &nice.to_string(), "-p"])
            .args(&threads)
            .run()?;
        Ok(())
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Waits until this boot's console shows `marker` (anywhere: it may
    /// have gone by during an earlier wait) and returns when it was first
    /// seen, as time since QEMU started. Fails on timeout or if QEMU exits.
    pub fn wait_for(&mut self, marker: &str, timeout: Duration) -> anyhow::Result<Duration> {
        let times = self.wait_for_all(&[marker], timeout)?;
        Ok(times[0])
    }

    /// Waits until this boot's console shows every one of `markers`, in any
    /// order, and returns when each was first seen (as precise as the poll
    /// interval, a quarter of a second).
    pub fn wait_for_all(
        &mut self,
        markers: &[&str],
        timeout: Duration,
    ) -> anyhow::Result<Vec<Duration>> {
        let sightings = self.wait(markers, Need::All, timeout)?;
        let times: Vec<Duration> = sightings.times().into_iter().flatten().collect();
        for (marker, t) in markers.iter().zip(&times) {
            tracing::info!("VM {}: `{marker}` after {t:.1?}", self.name);
        }
        Ok(times)
    }

    /// Waits until this boot's console shows at least one of `markers`;
    /// returns the index of the one that appears first in the console.
    pub fn wait_for_any(&mut self, markers: &[&str], timeout: Duration) -> anyhow::Result<usize> {
        let sightings = self.wait(markers, Need::Any, timeout)?;
        Ok(sightings
            .earliest()
            .expect("a wait for any marker ends with one seen"))
    }

    /// Whether this boot's console shows `marker` now.
    pub fn printed(&self, marker: &str) -> bool {
        console::find(&self.console.bytes(), marker.as_bytes()).is_some()
    }

    fn wait(
        &mut self,
        markers: &[&str],
        need: Need,
        timeout: Duration,
    ) -> anyhow::Result<console::Sightings> {
        let child = &mut self.child;
        let result = self.console.wait(markers, need, timeout, || {
            child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
                .map(|status| status.to_string())
        });
        result.map_err(|err| anyhow::anyhow!("VM {}: {err:#}\n{}", self.name, self.tail()))
    }

    /// Sends a QMP command (e.g. `system_powerdown`) and returns the reply line.
    pub fn qmp(&self, command: &str) -> anyhow::Result<String> {
        self.qmp_with(command, None)
    }

    /// [`Vm::qmp`] with the command's arguments (a JSON object); a reply
    /// that is an error is an error.
    pub fn qmp_args(&self, command: &str, arguments: &str) -> anyhow::Result<String> {
        let reply = self.qmp_with(command, Some(arguments))?;
        if reply.contains("\"error\"") {
            bail!("QMP {command} {arguments}: {reply}");
        }
        Ok(reply)
    }

    fn qmp_with(&self, command: &str, arguments: Option<&str>) -> anyhow::Result<String> {
        let stream = UnixStream::connect(&self.qmp)
            .with_context(|| format!("connecting to {}", self.qmp.display()))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut reader = BufReader::new(stream.try_clone()?);
        let mut writer = stream;
        let mut line = String::new();
        reader
            .read_line(&mut line)
            .context("reading the QMP greeting")?;
        writeln!(writer, r#"{{"execute":"qmp_capabilities"}}"#)?;
        line.clear();
        reader.read_line(&mut line)?;
        match arguments {
            None => writeln!(writer, r#"{{"execute":"{command}"}}"#)?,
            Some(args) => writeln!(writer, r#"{{"execute":"{command}","arguments":{args}}}"#)?,
        }
        // Skip asynchronous events until the command's reply.
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 {
                bail!("QMP closed before replying to {command}");
            }
            if line.contains("\"return\"") || line.contains("\"error\"") {
                return Ok(line.trim().to_owned());
            }
        }
    }

    /// Asks the guest to shut down (ACPI power button) and waits for QEMU to
    /// exit; kills it if it does not within `timeout`.
    ///
    /// The button is pressed again every 10 s: a guest that has only just
    /// reached multi-user.target may not be listening to it yet (logind).
    pub fn powerdown(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let mut next_press = Instant::now();
        while Instant::now() < deadline {
            if self.exited().is_some() {
                self.child = None;
                return Ok(());
            }
            if Instant::now() >= next_press {
                // QMP goes away while QEMU exits; the exit check above decides.
                if let Err(err) = self.qmp("system_powerdown") {
                    tracing::debug!("VM {}: system_powerdown: {err:#}", self.name);
                }
                next_press = Instant::now() + Duration::from_secs(10);
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        let tail = self.tail();
        self.kill();
        bail!(
            "VM {} did not power off within {timeout:?}\n{tail}",
            self.name
        )
    }

    /// Runs `program args...` in the guest through the guest agent and
    /// returns its exit code and output. Waits about `timeout` in all, for
    /// the agent to answer (it starts with the guest) and for the command
    /// (at least 5 s for the command, so it may overrun by that much). A
    /// command that times out is left running in the guest.
    pub fn exec(
        &mut self,
        program: &str,
        args: &[&str],
        timeout: Duration,
    ) -> anyhow::Result<Output> {
        let socket = self
            .guest_agent
            .clone()
            .with_context(|| format!("VM {} has no guest agent port", self.name))?;
        let deadline = Instant::now() + timeout;
        let mut agent = loop {
            if let Some(status) = self.exited() {
                bail!("VM {} exited ({status})\n{}", self.name, self.tail());
            }
            match guest::Agent::connect(&socket, Duration::from_secs(5)) {
                Ok(agent) => break agent,
                Err(err) if Instant::now() < deadline => {
                    tracing::debug!("VM {}: guest agent: {err:#}", self.name);
                    std::thread::sleep(Duration::from_secs(1));
                }
                Err(err) => bail!(
                    "VM {}: the guest agent did not answer within {timeout:?}: {err:#}\n{}",
                    self.name,
                    self.tail()
                ),
            }
        };
        let left = deadline.saturating_duration_since(Instant::now());
        agent
            .exec(program, args, left.max(Duration::from_secs(5)))
            .with_context(|| format!("VM {}: running {program} {args:?}", self.name))
    }

    /// Kills QEMU (SIGKILL to its own PID) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            tracing::info!("killed VM {}", self.name);
        }
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Creates a qcow2 overlay on `base` (raw or qcow2) of `size` bytes, so a
/// test can write (boot counting, the state partition) without touching the
/// image and give repart room to add the state partition.
pub fn overlay(base: &Path, base_format: &str, out: &Path, size: u64) -> anyhow::Result<()> {
    let base = base
        .canonicalize()
        .with_context(|| format!("resolving {}", base.display()))?;
    Task::new("creating a qcow2 overlay", "qemu-img")
        .package("qemu-utils")
        .args(["create", "-q", "-f", "qcow2", "-F", base_format, "-b"])
        .arg(&base)
        .arg(out)
        .arg(size.to_string())
        .run()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_has_tcg_serial_and_private_vars() {
        let dir = tempfile::tempdir().unwrap();
        let vars = dir.path().join("template.fd");
        std::fs::write(&vars, b"vars").unwrap();
        let args = VmBuilder::new("t")
            .firmware(Firmware::Ovmf {
                code: "/code.fd".into(),
                vars_template: vars,
            })
            .disk("/d.qcow2", "qcow2")
            .netdev("socket,id=n0,listen=127.0.0.1:4000")
            .args(dir.path(), dir.path())
            .unwrap();
        let line = args.join(" ");
        assert!(line.contains("-accel tcg"), "{line}");
        assert!(line.contains("-display none -monitor none"), "{line}");
        assert!(line.contains(&format!(
            "-serial file:{}",
            dir.path().join("t.serial.log").display()
        )));
        assert!(line.contains(&format!(
            "file={}",
            dir.path().join("OVMF_VARS.fd").display()
        )));
        assert!(line.contains("virtio-net-pci,netdev=n0"), "{line}");
        assert!(!line.contains("-nic none"), "{line}");
        assert!(dir.path().join("OVMF_VARS.fd").is_file());
    }
}
